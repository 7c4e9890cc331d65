"""Rules on the targets themselves: label values a classifier cannot have.

The counts come from :func:`~convdoctor.monitor.batch.batch_counts` (device-side, read back at
the sync like every other step record). One class dominating the targets is reported where the
user sees it, as ``CONSTANT_PREDICTION`` with the targets named as its cause.
"""

from __future__ import annotations

import numpy as np

from ...findings import Finding, make_finding
from ..window import Window
from ._registry import rule

#: DEGENERATE_TARGETS looks at this many recent steps.
TARGET_STEPS = 50


@rule("DEGENERATE_TARGETS")
def degenerate_targets(window: Window) -> Finding | None:
    """Targets below 0 or at/above ``num_classes``, or soft-target rows not summing to 1, in the last ``TARGET_STEPS``."""
    bad = window.target_bad[-TARGET_STEPS:]
    if bad.size == 0 or not bad.any():
        return None
    below, above, soft = (int(x) for x in bad.sum(axis=0))
    steps = int(bad.shape[0])
    labels = int(window.targets[-TARGET_STEPS:].sum()) + below + above if window.targets.size else below + above
    first = int(window.step - steps + int(np.flatnonzero(bad.any(axis=1))[0]))
    c = window.num_classes
    parts = []
    if below or above:
        parts.append(
            f"{below + above} of {labels} targets lie outside [0, {c}) ({below} negative, {above} at or above {c})"
        )
    if soft:
        parts.append(f"{soft} soft-target rows do not sum to 1")
    return make_finding(
        "DEGENERATE_TARGETS",
        f"In the last {steps} steps {' and '.join(parts)}, first at step {first}.",
        evidence={
            "below_zero": below,
            "at_or_above_num_classes": above,
            "soft_rows_not_summing_to_1": soft,
            "targets": labels,
            "num_classes": c,
            "steps": steps,
            "first_step": first,
        },
        fix=f"class indices must lie in [0, {c}): check num_classes, a 1-based label column or a stray void "
        "label (pass it as Monitor(ignore_index=...) and to the loss if it is meant); soft targets must be "
        "probabilities over dim 1 (normalise them, or softmax the right dimension)",
    )
