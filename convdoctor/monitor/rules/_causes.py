"""Root cause first: findings that are side effects of another are attached to it, not reported.

Two mechanisms, each an argument rather than a heuristic:

* **Non-finite numbers.** From the first step with a NaN/Inf loss or NaN/Inf weights, every
  statistic derives from those numbers (the argmax of NaN logits is class 0; a NaN gradient
  says nothing about a unit being alive). The rules run again on the window cut before that
  step (:meth:`Window.before`); a finding that fires on the whole window but not on the cut
  one exists only because of the NaN, and is attached to ``NAN_LOSS`` as a consequence. One
  that fires on the cut window stands on finite evidence and keeps its own report.
* **Known chains.** :data:`CAUSES` lists, for each code, the findings of which it is a known
  side effect. A finding that starts while one of its causes is being reported is attached to
  that cause (to the cause's own root when the cause is itself attached). A finding already
  reported in its own episode stays reported; an attached one is reported on its own once its
  cause has gone quiet and it still fires.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace

from ...findings import Finding
from ..window import Window

#: code -> the findings it is a known side effect of, most specific first.
CAUSES: dict[str, tuple[str, ...]] = {
    # a model whose output ignores its input sits at chance: an init it cannot learn from, dead
    # units, no gradient flow, steps too small or too large, or labels that carry no information
    "LOSS_AT_CHANCE": (
        "POOR_INIT",
        "DEAD_RELU",
        "VANISHING_GRADIENT",
        "NO_GRADIENT",
        "CONSTANT_PREDICTION",
        "LR_MISMATCH",
    ),
    # ... and the argmax of an input-independent output is one class for every input
    "CONSTANT_PREDICTION": (
        "POOR_INIT",
        "DEAD_RELU",
        "VANISHING_GRADIENT",
        "NO_GRADIENT",
        "LOSS_AT_CHANCE",
        "LR_MISMATCH",
    ),
    # a bad initialisation leaves units without gradient (zero or identical filters), shrinks
    # or blows up the gradients with depth, and makes the update ratio tiny or huge
    "DEAD_RELU": ("POOR_INIT",),
    "VANISHING_GRADIENT": ("POOR_INIT",),
    "EXPLODING_GRADIENT": ("POOR_INIT",),
    # exploding gradients make the loss climb and the updates huge
    "LOSS_DIVERGING": ("EXPLODING_GRADIENT",),
    "LR_MISMATCH": ("EXPLODING_GRADIENT", "POOR_INIT"),
    # a climbing loss swings on its way up
    "LOSS_OSCILLATING": ("LOSS_DIVERGING", "EXPLODING_GRADIENT"),
    # frozen BatchNorm left in training mode normalises the (small) batches it should not see
    "BN_SMALL_BATCH": ("FROZEN_BN_UPDATING",),
}

#: The order in which findings that start together are decided: causes before their effects.
ORDER: tuple[str, ...] = (
    "POOR_INIT",
    "NAN_LOSS",
    "NO_GRADIENT",
    "FROZEN_BN_UPDATING",
    "EXPLODING_GRADIENT",
    "VANISHING_GRADIENT",
    "DEAD_RELU",
    "LOSS_DIVERGING",
    "LR_MISMATCH",
    "CONSTANT_PREDICTION",
    "LOSS_AT_CHANCE",
    "LOSS_OSCILLATING",
    "BN_SMALL_BATCH",
)


#: The sentence that names a root's consequences at the end of its message.
CONSEQUENCES_NOTE = "Consequences of it, not separate faults:"


def attach(root: Finding, consequences: list[Finding] | list[dict[str, str]]) -> Finding:
    """``root`` with ``consequences`` listed in its evidence as ``{code, title, message}``."""
    known = list(root.evidence.get("consequences", []))
    have = {c["code"] for c in known}
    new = [c for c in _items(consequences) if c["code"] not in have]
    if not new:
        return root
    every = known + new
    base = root.message.split(CONSEQUENCES_NOTE)[0].rstrip()
    message = f"{base} {CONSEQUENCES_NOTE} {', '.join(c['code'] for c in every)}."
    return replace(root, message=message, evidence={**root.evidence, "consequences": every})


Consequences = dict[str, list[dict[str, str]]]


def resolve(
    window: Window, run: Callable[[Window], dict[str, Finding]], active: Collection[str] = ()
) -> tuple[dict[str, Finding], Consequences]:
    """Run the rules and keep the root findings, each carrying its consequences.

    Args:
        window: the recorded history.
        run: runs every rule on a window, returning the findings that fire by code.
        active: codes reported in an episode that is still going on (the monitor's memory).

    Returns:
        ``(roots, late)``: the root findings that fire, by code, and the consequences that
        belong to an active root which did not fire this time (the monitor adds them to it).
    """
    fired = run(window)
    bad = window.first_nonfinite()
    if bad is not None:
        clean = {c: f for c, f in run(window.before(bad)).items() if c != "NAN_LOSS"}
        tainted = [f for c, f in fired.items() if c != "NAN_LOSS" and c not in clean]
        nan = fired.get("NAN_LOSS")
        fired = {**clean, **({"NAN_LOSS": attach(nan, tainted)} if nan is not None else {})}
    return _chains(fired, set(active))


def _chains(fired: dict[str, Finding], active: set[str]) -> tuple[dict[str, Finding], Consequences]:
    rank = {c: i for i, c in enumerate(ORDER)}
    order = sorted(fired, key=lambda c: (c not in active, rank.get(c, len(ORDER)), c))
    roots: dict[str, Finding] = {}
    owner: dict[str, str] = {}
    attached: dict[str, list[Finding]] = {}
    for code in order:
        own = fired[code].evidence.get("cause") == "degenerate_targets"  # the labels, whatever else is wrong
        cause = (
            None
            if code in active or own
            else next((c for c in CAUSES.get(code, ()) if c in roots or c in owner or c in active), None)
        )
        if cause is None:
            roots[code] = fired[code]
            continue
        root = owner.get(cause, cause)
        owner[code] = root
        attached.setdefault(root, []).append(fired[code])
    late = {c: _items(fs) for c, fs in attached.items() if c not in roots}
    return {c: attach(f, attached.get(c, [])) for c, f in roots.items()}, late


def _items(consequences: list[Finding] | list[dict[str, str]]) -> list[dict[str, str]]:
    return [
        c if isinstance(c, dict) else {"code": c.code, "title": c.title, "message": c.message} for c in consequences
    ]
