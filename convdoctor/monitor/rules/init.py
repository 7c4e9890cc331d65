"""``POOR_INIT``: weights initialised so that the net cannot learn, judged from the first step.

Two arguments, each a reason rather than a score:

* **Identical filters that stay identical.** A conv/linear layer whose filters are all equal
  (all zero, one constant, a copied filter), whose filters' gradients are equal too, and whose
  filters are still equal after the optimizer steps up to the first sync. SGD, momentum, weight
  decay, Adam and gradient clipping all update each element from its own weight and gradient,
  so rows that get equal gradients get equal updates; when the network is symmetric in those
  units (every layer constant, or all zero: a stationary point) they get equal gradients
  forever and the layer computes one feature however wide it is. Where something breaks the
  symmetry (a random next layer, dropout, a residual path, a classifier's per-class targets)
  the gradients differ at once, or the filters have parted by the later measurement (a zero
  layer behind a zero-initialised classifier), and nothing is reported: a zero-init classifier
  or residual branch (Fixup, timm's ``zero_init_last``) is fine.
* **A scale that compounds with depth.** With the Kaiming/Xavier scale for the nonlinearity
  that follows (``std = gain / sqrt(fan_in)``) the activations keep their size from layer to
  layer; a weight ``s`` times that scale multiplies it by about ``s`` at every layer with no
  normalisation after it, so ``L`` such layers multiply it by ``s**L``. The rule fires when
  the activations reaching the last conv/linear layer at step 0 are ``INIT_DEPTH_RATIO``
  smaller or larger than those reaching the second one (measured), *and* the weights of the
  un-normalised layers in between predict at least the square root of that (so the weights,
  not the data or a dead bias, are the cause). Layers followed by BatchNorm (or Group, Layer,
  Instance, RMS norm) do not count: the normalisation divides their scale out.

The finding keeps firing while its cause lasts: identical filters for the whole run (they
cannot diverge), a bad scale while the weights still hold at least half of its orders of
magnitude. Its consequences (dead units, a loss at chance, vanishing gradients, ...) are
attached to it (:mod:`._causes`).
"""

from __future__ import annotations

import math

import numpy as np

from ...findings import Finding, make_finding
from ..window import InitLayer, InitRecord, Window
from ._registry import fmt, rule

#: Filters (and their gradients) count as identical when their spread around the mean filter
#: is at most this fraction of their norm: rounding in kernels that tile output channels
#: differently leaves ~1e-7, a random init ~1.
SYMMETRY_TOL = 1e-4
#: Activation RMS ratio between the inputs of the last and of the second conv/linear layer at
#: step 0 beyond which the scale is reported. Measured on healthy inits: a 20-layer plain ReLU
#: stack with Kaiming init 2.5-19x on 8x8 digits, torchvision's AlexNet (PyTorch's default
#: init, 8 layers) 57-63x; Xavier gain 1 on 20 ReLU layers 840-59,000x; Kaiming/10 on 12 layers 1e11x.
INIT_DEPTH_RATIO = 300.0
#: The weights "still hold" a bad scale while the predicted depth factor keeps this share of
#: its orders of magnitude (0.5: half of the decades).
SCALE_KEPT = 0.5
#: A layer is listed as off-scale when its weight std is this factor from the target.
SCALE_OFF = 1.25
#: Layers listed in the depth profile of the evidence.
MAX_PROFILE = 64

#: ``nn.init.calculate_gain`` per nonlinearity; ReLU-like ones (GELU, SiLU, ...) take ReLU's.
GAINS = {
    None: 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "selu": 0.75,
    "leaky_relu": math.sqrt(2.0 / (1.0 + 0.01**2)),
    "relu": math.sqrt(2.0),
}
_XAVIER = {"tanh", "sigmoid"}


def target_std(layer: InitLayer) -> float:
    """The Kaiming/Xavier weight std for the layer's nonlinearity: ``gain / sqrt(fan_in)``."""
    return GAINS.get(layer.activation, math.sqrt(2.0)) / math.sqrt(max(layer.fan_in, 1))


def scale_of(layer: InitLayer) -> float:
    """Weight std over :func:`target_std` (1 for Kaiming fan-in; PyTorch's default gives 0.41 before ReLU)."""
    return layer.weight_std / target_std(layer)


def _identical(spread: float, norm: float) -> bool:
    return math.isfinite(spread) and math.isfinite(norm) and spread <= SYMMETRY_TOL * norm


def symmetric_layers(record: InitRecord) -> list[InitLayer]:
    """Layers with two or more filters, all identical, whose gradients are identical too, and
    whose filters are still identical at the later measurement (which must come after a step)."""
    if record.later_step <= record.step:
        return []
    return [
        x
        for x in record.layers
        if x.units >= 2
        and _identical(x.weight_spread, x.weight_norm)
        and _identical(x.grad_spread, x.grad_norm)
        and _identical(x.later_weight_spread, x.later_weight_norm)
    ]


def scale_evidence(record: InitRecord) -> tuple[float, float, list[InitLayer]] | None:
    """``(measured ratio, predicted ratio, un-normalised layers between)`` when the scale fires."""
    layers = record.layers
    if len(layers) < 3:
        return None
    ref, end = layers[1].in_rms, layers[-1].in_rms
    if not (math.isfinite(ref) and math.isfinite(end) and ref > 0 and end > 0):
        return None  # a zero signal is the symmetric argument's (zero weights) or a dead unit's
    between = layers[1:-1]
    if any(x.normalized is None for x in between):
        return None  # the pass was not probed: whether BatchNorm follows is unknown
    ratio = end / ref
    chain = [x for x in between if x.normalized is False and x.weight_std > 0]
    predicted = float(np.prod([scale_of(x) for x in chain])) if chain else 1.0
    shrinks = ratio <= 1 / INIT_DEPTH_RATIO and predicted <= INIT_DEPTH_RATIO**-0.5
    grows = ratio >= INIT_DEPTH_RATIO and predicted >= INIT_DEPTH_RATIO**0.5
    return (ratio, predicted, chain) if shrinks or grows else None


def _still_off(window: Window, chain: list[InitLayer], predicted: float) -> bool:
    """Whether the current weights keep ``SCALE_KEPT`` of the predicted factor's decades."""
    if window.weight_norms.shape[0] == 0 or predicted <= 0:
        return True
    col = {n: i for i, n in enumerate(window.param_names)}
    now = window.weight_norms[-1]
    factor = 1.0
    for x in chain:
        i = col.get(x.param)
        if i is not None and x.weight_norm > 0 and math.isfinite(now[i]):
            factor *= float(now[i]) / x.weight_norm
    current = predicted * factor
    return current > 0 and math.log(current) / math.log(predicted) >= SCALE_KEPT


def _scheme(layers: list[InitLayer]) -> str:
    acts = [x.activation for x in layers]
    top = max(set(acts), key=acts.count) if acts else "relu"
    if top in _XAVIER:
        return f"convdoctor.fix.reinit(model, 'xavier', nonlinearity='{top}')"
    if top == "leaky_relu":
        return "convdoctor.fix.reinit(model, 'kaiming', nonlinearity='leaky_relu')"
    return "convdoctor.fix.reinit(model, 'kaiming')"


def _row(x: InitLayer) -> dict[str, object]:
    return {
        "name": x.name,
        "kind": x.kind,
        "activation": x.activation,
        "normalized": x.normalized,
        "weight_std": x.weight_std,
        "target_std": target_std(x),
        "scale": scale_of(x),
        "identical_filters": _identical(x.weight_spread, x.weight_norm),
        "in_rms": x.in_rms,
        "grad_norm": x.grad_norm,
        "relative_grad": x.grad_norm / x.weight_norm if x.weight_norm > 0 else math.nan,
    }


def _profile(record: InitRecord) -> list[dict[str, object]]:
    rows = [{"name": x.name, "in_rms": x.in_rms, "out_rms": x.out_rms, "grad_norm": x.grad_norm} for x in record.layers]
    if len(rows) <= MAX_PROFILE:
        return rows
    return rows[: MAX_PROFILE // 2] + rows[-MAX_PROFILE // 2 :]


@rule("POOR_INIT")
def poor_init(window: Window) -> Finding | None:
    """Identical filters with identical gradients, or an activation scale that compounds over depth."""
    record = window.init
    if record is None or not record.layers:
        return None
    same = symmetric_layers(record)
    if same:
        zero = [x for x in same if x.weight_norm == 0]
        names = ", ".join(x.name for x in same[:6]) + (f" and {len(same) - 6} more" if len(same) > 6 else "")
        what = "all zero" if len(zero) == len(same) else f"{len(zero)} all zero, the rest one repeated filter"
        return make_finding(
            "POOR_INIT",
            f"At step {record.step} {len(same)} of {len(record.layers)} conv/linear layers ({names}) have identical "
            f"filters ({what}) that receive identical gradients, and they are still identical at step "
            f"{record.later_step}: the filters cannot become different, so each of those layers computes a single "
            "feature.",
            evidence={
                "cause": "identical_filters",
                "recorded_step": record.step,
                "checked_step": record.later_step,
                "layers": [_row(x) for x in same],
                "zero_layers": [x.name for x in zero],
                "depth_profile": _profile(record),
            },
            fix=f"initialise with random weights: model = {_scheme(same)} (a re-initialised copy: build the "
            "optimizer on it), or drop the constant/zero init; a zero init is safe only for the last layer or a "
            "residual branch",
            where=same[0].name,
        )
    scale = scale_evidence(record)
    if scale is None:
        return None
    ratio, predicted, chain = scale
    if not _still_off(window, chain, predicted):
        return None
    off = [x for x in chain if max(scale_of(x), 1 / scale_of(x)) >= SCALE_OFF]
    first, last = record.layers[1], record.layers[-1]
    way = "smaller" if ratio < 1 else "larger"
    med = float(np.median([scale_of(x) for x in off])) if off else 1.0
    return make_finding(
        "POOR_INIT",
        f"At step {record.step} the activations reaching {last.name} are {fmt(max(ratio, 1 / ratio))}x {way} (RMS "
        f"{fmt(last.in_rms)}) than those reaching {first.name} ({fmt(first.in_rms)}): {len(off)} layers without "
        f"normalisation have weights {fmt(med)}x the Kaiming/Xavier scale for their nonlinearity (median), "
        f"which predicts {fmt(predicted)}x over the depth.",
        evidence={
            "cause": "scale",
            "recorded_step": record.step,
            "activation_ratio": ratio,
            "predicted_ratio": predicted,
            "first_layer": first.name,
            "last_layer": last.name,
            "layers": [_row(x) for x in off],
            "depth_profile": _profile(record),
        },
        fix=f"re-initialise for the nonlinearity: model = {_scheme(off or chain)} (a copy: build the optimizer on "
        "it), or add BatchNorm after the convolutions",
        where=(off or chain or [first])[0].name,
        severity="warning",
    )
