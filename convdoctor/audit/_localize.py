"""Name the module where two runs of the same sample first part ways.

Both runs are recorded with forward hooks: for each module call, the sample's row of its
inputs (copied before the module runs, so in-place ops cannot hide anything) and of its
outputs. The culprit is the first call, in completion order, whose inputs agree between
the runs but whose outputs do not: the difference was born inside that module and not
upstream. Completion order puts the innermost such module first; when the difference is
born in a parent's own code (a functional op between children), the parent is named.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._tensors import diff, leaves

_Rows = list[torch.Tensor]
_Event = tuple[tuple[str, int], _Rows, _Rows]


def _row(obj: Any, batch: int, row: int | None) -> _Rows:
    """The sample's row of every batch-shaped tensor (``row=None``: the whole tensors)."""
    found = [t for t in leaves(obj) if t.dim() >= 1 and t.shape[0] == batch]
    return [(t if row is None else t[row]).detach().clone() for t in found]


def _record(model: nn.Module, run: Callable[[], Any], batch: int, row: int | None) -> list[_Event]:
    """Run ``run()`` with hooks on every module; return ``((path, call), inputs, outputs)``."""
    events: list[_Event] = []
    pending: dict[str, list[_Rows]] = {}
    calls: Counter[str] = Counter()
    handles = []

    def pre(path: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: Any) -> None:
            pending.setdefault(path, []).append(_row(args, batch, row))

        return hook

    def post(path: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            inputs = pending[path].pop() if pending.get(path) else []
            key = (path, calls[path])
            calls[path] += 1
            events.append((key, inputs, _row(output, batch, row)))

        return hook

    try:
        for path, m in model.named_modules():
            handles.append(m.register_forward_pre_hook(pre(path)))
            handles.append(m.register_forward_hook(post(path)))
        run()
    finally:
        for h in handles:
            h.remove()
    return events


def first_divergence(
    model: nn.Module,
    run_a: Callable[[], Any],
    run_b: Callable[[], Any],
    *,
    batches: tuple[int, int],
    rows: tuple[int, int] | None,
    rtol: float,
) -> str | None:
    """The path of the module where the same sample's result first differs between two runs.

    Args:
        model: the module that ``run_a`` and ``run_b`` call.
        run_a: the reference run (e.g. the sample alone).
        run_b: the other run (e.g. the sample inside a batch).
        batches: the batch size of each run.
        rows: the sample's row in each run's batch; None compares whole batches (the same batch
            run twice), so a module that couples samples (BatchNorm) cannot pass on a difference
            in another row as its own.
        rtol: relative tolerance of :meth:`Diff.exceeds`.

    Returns:
        The module path (``""`` is the root), or None when hooks cannot be attached
        (TorchScript) or no module isolates the difference.
    """
    try:
        row_a, row_b = rows if rows is not None else (None, None)
        events_a = _record(model, run_a, batches[0], row_a)
        events_b = {k: (i, o) for k, i, o in _record(model, run_b, batches[1], row_b)}
    except (RuntimeError, AttributeError, TypeError):
        return None
    for key, ins_a, outs_a in events_a:
        if key not in events_b or not outs_a:
            continue
        ins_b, outs_b = events_b[key]
        if ins_a and diff(ins_b, ins_a).exceeds(rtol):
            continue
        if diff(outs_b, outs_a).exceeds(rtol):
            return key[0]
    return None
