"""Turn a monitor's record into a :class:`~convdoctor.results.monitor.MonitorReport`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UsageError
from ..findings import Finding
from ..results.monitor import MonitorReport
from .rules.gradients import DEAD_STEPS
from .stats import Collector
from .window import Window


def build_report(
    name: str,
    findings: tuple[Finding, ...],
    col: Collector,
    window: Window | None,
    *,
    epochs: tuple[dict[str, Any], ...],
    events: tuple[dict[str, Any], ...],
    summary: str,
    history: dict[str, Any] | None = None,
) -> MonitorReport:
    """Assemble the report from the collector's record and the last window the rules saw."""
    w = window if window is not None else Window()
    recent = w.loss[-10:][np.isfinite(w.loss[-10:])] if w.loss.size else np.zeros(0)
    total = w.total_grad_norms()
    return MonitorReport(
        model=name,
        findings=findings,
        steps=col.step,
        every=col.every,
        num_classes=col.num_classes,
        loss={
            "initial": col.loss_initial,
            "best": col.loss_best,
            "best_step": col.loss_best_step,
            "last": float(np.median(recent)) if recent.size else math.nan,
        },
        grad_norm={"initial": col.grad_norm_initial, "last": float(total[-1]) if total.size else math.nan},
        epochs=epochs,
        events=events,
        layers=_layers(w),
        groups=_groups(w),
        summary=summary,
        history=history,
    )


def _layers(w: Window) -> tuple[dict[str, Any], ...]:
    if w.grad_norms.shape[0] == 0:
        return ()
    dead = {u.name: (int((u.idle >= DEAD_STEPS).sum()), int(u.idle.size)) for u in w.units}
    acts = {u.name: u.activation for u in w.units}
    out = []
    for i, pname in enumerate(w.param_names):
        if not (w.param_is_weight.size and w.param_is_weight[i]):
            continue
        layer = pname.rpartition(".")[0] or pname
        g = float(w.grad_norms[-1, i]) if w.grad_present[-1, i] else math.nan
        wn = float(w.weight_norms[-1, i])
        n_dead, units = dead.get(layer, (0, 0))
        out.append(
            {
                "name": layer,
                "grad_norm": g,
                "weight_norm": wn,
                "relative_grad": g / wn if wn > 0 else math.nan,
                "units": units,
                "dead_units": n_dead,
                "activation": acts.get(layer),
            }
        )
    return tuple(out)


def _groups(w: Window) -> tuple[dict[str, Any], ...]:
    if w.update_ratio.shape[0] == 0:
        return ()
    return tuple(
        {"name": n, "lr": float(w.group_lr[-1, j]), "update_ratio": float(w.update_ratio[-1, j])}
        for j, n in enumerate(w.group_names)
    )


def report_from_json(doc: dict[str, Any]) -> MonitorReport:
    """Rebuild a :class:`MonitorReport` (with its PNG curves when ``history`` is there) from
    the document :meth:`Monitor.to_json` wrote.

    Raises:
        UsageError: not a Monitor JSON document.
    """
    if not isinstance(doc, dict) or doc.get("kind") != "monitor":
        raise UsageError("not a Monitor JSON document (write one with mon.to_json())")
    try:
        findings = tuple(
            Finding(**{k: f[k] for k in ("code", "severity", "title", "message", "evidence", "fix", "where")})
            for f in doc.get("findings", [])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"malformed finding in the Monitor JSON: {exc}") from None
    history = doc.get("history")
    return MonitorReport(
        model=str(doc.get("model", "")),
        findings=findings,
        steps=int(doc.get("steps", 0)),
        every=int(doc.get("every", 1)),
        num_classes=doc.get("num_classes"),
        loss=dict(doc.get("loss", {})),
        grad_norm=dict(doc.get("grad_norm", {})),
        epochs=tuple(doc.get("epochs", ())),
        events=tuple(doc.get("events", ())),
        layers=tuple(doc.get("layers", ())),
        groups=tuple(doc.get("groups", ())),
        summary=str(doc.get("summary", "")),
        history=history if isinstance(history, dict) and history.get("loss") else None,
    )
