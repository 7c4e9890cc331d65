"""Table-driven tests of the pure monitor rules on synthetic windows: every code, both ways.

Expected numbers come from the synthetic inputs themselves (the sequences are built so the
answer is known by construction), never from the code under test.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from convdoctor.findings import FINDING_CODES, Finding, make_finding
from convdoctor.monitor import rules as R
from convdoctor.monitor.rules import batchnorm, gradients, init, loss, targets
from convdoctor.monitor.rules._causes import resolve
from convdoctor.monitor.window import Epoch, FrozenBN, Units, Window

LN10 = math.log(10)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "findings.md"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def losses(seq: np.ndarray, **kw: object) -> Window:
    """A window holding only a loss sequence (and the references the collector would compute)."""
    kw.setdefault("num_classes", 10)
    kw.setdefault("loss_initial", float(np.median(seq[:10])))
    return Window(step=len(seq), loss=np.asarray(seq, dtype=np.float64), **kw)  # type: ignore[arg-type]


def grads(
    norms: list[list[float]],
    names: list[str],
    is_weight: list[bool],
    weights: float | list[list[float]] = 1.0,
    **kw: object,
) -> Window:
    """A window of per-parameter gradient norms, one row per sampled step."""
    g = np.asarray(norms, dtype=np.float64)
    w = np.full_like(g, weights) if isinstance(weights, float) else np.asarray(weights, dtype=np.float64)
    return Window(
        step=len(g),
        grad_steps=np.arange(len(g)),
        param_names=tuple(names),
        param_is_weight=np.asarray(is_weight),
        grad_norms=g,
        weight_norms=w,
        grad_present=np.ones(g.shape, dtype=bool),
        **kw,
    )  # type: ignore[arg-type]


def onehot_counts(classes: list[int], c: int = 10) -> np.ndarray:
    out = np.zeros((len(classes), c), dtype=np.int64)
    out[np.arange(len(classes)), classes] = 32
    return out


# ---------------------------------------------------------------------------- loss rules
noise = rng().normal(0, 1, 400)
CASES = [
    # (code, window, fires, message regex)
    ("NAN_LOSS", losses(np.r_[np.full(30, 1.0), np.nan, np.full(19, 1.0)]), True, r"nan at step 30"),
    ("NAN_LOSS", losses(np.r_[np.full(30, 1.0), np.inf, np.full(19, 1.0)]), True, r"inf at step 30"),
    ("NAN_LOSS", losses(np.full(50, 1.0)), False, None),
    (
        "LOSS_DIVERGING",
        losses(np.r_[np.full(100, 0.5), np.full(20, 1.5)], loss_initial=2.3, loss_best=0.5, loss_best_step=99),
        True,
        r"rose to 1\.5 .* from its best 0\.5 at step 99: 3x",
    ),
    ("LOSS_DIVERGING", losses(0.05 + 0.005 * noise[:120], loss_initial=2.3, loss_best=0.02), False, None),
    ("LOSS_DIVERGING", losses(np.linspace(2.3, 0.1, 120), loss_best=0.1), False, None),
    # a square wave 0.3 / 1.0 with period 20: rises at steps 10, 30, ..., 130 -> 7 swings in 150 steps
    (
        "LOSS_OSCILLATING",
        losses(np.tile(np.r_[np.full(10, 0.3), np.full(10, 1.0)], 8)[:150], loss_initial=2.3),
        True,
        r"swung up by more than 50% 7 times in the last 150 steps",
    ),
    (
        "LOSS_OSCILLATING",
        losses(np.tile(np.r_[np.full(10, 0.3), np.full(10, 1.0)], 8)[:149], loss_initial=2.3),
        False,
        None,
    ),
    ("LOSS_OSCILLATING", losses(np.linspace(2.3, 0.2, 150) * (1 + 0.1 * noise[:150])), False, None),
    ("LOSS_OSCILLATING", losses(0.5 * (1 + 0.1 * noise[:150]), loss_initial=2.3), False, None),
    ("LOSS_AT_CHANCE", losses(LN10 + 0.01 * noise[:100]), True, r"within 10% of chance \(2\.3, ln\(10\)\)"),
    ("LOSS_AT_CHANCE", losses(0.5 + 0.01 * noise[:100]), False, None),
    ("LOSS_AT_CHANCE", losses(np.linspace(2.45, 2.1, 100)), False, None),  # slow but learning
    ("LOSS_AT_CHANCE", losses(LN10 + 0.01 * noise[:99]), False, None),  # too few steps
    ("LOSS_AT_CHANCE", losses(LN10 * np.ones(100), num_classes=None), False, None),
]


@pytest.mark.parametrize(
    ("code", "window", "fires", "match"),
    CASES,
    ids=[f"{c[0]}-{'fires' if c[2] else 'quiet'}-{i}" for i, c in enumerate(CASES)],
)
def test_loss_rules(code: str, window: Window, fires: bool, match: str | None) -> None:
    found = R.get_rule(code)(window)
    if not fires:
        assert found is None
        return
    assert found is not None and found.code == code
    assert re.search(match, found.message), found.message
    assert found.fix and found.evidence


def test_chance_level_is_the_label_entropy() -> None:
    counts = np.array([600, 200, 100, 100] + [0] * 6)
    p = counts[counts > 0] / counts.sum()
    entropy = -sum(pi * math.log(pi) for pi in p)  # 1.0889 nats, by hand: 0.6, 0.2, 0.1, 0.1
    targets = np.tile(counts, (100, 1))
    found = loss.loss_at_chance(losses(entropy + 0.01 * noise[:100], targets=targets))
    assert found is not None and found.evidence["chance_loss"] == pytest.approx(entropy)
    assert loss.loss_at_chance(losses(LN10 + 0.01 * noise[:100], targets=targets)) is None


def test_nan_gradients_need_consecutive_samples() -> None:
    names, weight = ["conv.weight", "fc.weight"], [True, True]
    bad = grads([[1, 1]] * 5 + [[math.inf, 1]] * 3, names, weight)
    found = loss.nan_loss(bad)
    assert found is not None and found.evidence == {**found.evidence, "first_step": 5, "parameter": "conv.weight"}
    amp_overflow = grads([[1, 1]] * 5 + [[math.inf, 1]] + [[1, 1]] * 2, names, weight)  # GradScaler skips one
    assert loss.nan_loss(amp_overflow) is None


@pytest.mark.parametrize(
    ("preds", "targets", "fires"),
    [
        ([3] * 50, list(range(10)) * 5, True),
        (list(range(10)) * 5, list(range(10)) * 5, False),
        ([3] * 40, list(range(10)) * 4, False),  # too few steps
    ],
)
def test_constant_prediction(preds: list[int], targets: list[int], fires: bool) -> None:
    w = Window(step=len(preds), num_classes=10, preds=onehot_counts(preds), targets=onehot_counts(targets))
    found = loss.constant_prediction(w)
    assert (found is not None) == fires
    if fires:
        assert found.evidence["class"] == 3 and found.evidence["share"] == 1.0
        assert found.evidence["cause"] == "model"  # good labels: the model collapsed on its own
        assert re.search(r"class 3 for 100% of 1600 inputs", found.message)


@pytest.mark.parametrize(
    ("targets", "cause"),
    [
        ([3] * 50, "degenerate_targets"),  # every target is class 3: a label bug
        ([3] * 49 + [4], "degenerate_targets"),  # 98% class 3 (1568 of 1600)
        ([3] * 47 + [4, 5, 6], None),  # 94%: imbalanced data, predicted as labelled
    ],
)
def test_constant_prediction_names_degenerate_targets(targets: list[int], cause: str | None) -> None:
    w = Window(step=50, num_classes=10, preds=onehot_counts([3] * 50), targets=onehot_counts(targets))
    found = loss.constant_prediction(w)
    assert (found.evidence["cause"] if found else None) == cause
    if cause:
        assert found is not None and found.evidence["target_class"] == 3 and "label" in found.fix


def bad_targets(rows: list[tuple[int, int, int]], steps: int = 50) -> Window:
    bad = np.zeros((steps, 3), dtype=np.int64)
    bad[-len(rows) :] = rows
    return Window(step=steps, num_classes=10, targets=onehot_counts(list(range(10)) * (steps // 10)), target_bad=bad)


@pytest.mark.parametrize(
    ("rows", "fires", "match"),
    [
        ([(0, 32, 0)], True, r"32 of 1632 targets lie outside \[0, 10\) \(0 negative, 32 at or above 10\)"),
        ([(2, 0, 0), (1, 0, 0)], True, r"3 of 1603 targets .* \(3 negative"),
        ([(0, 0, 5)], True, r"5 soft-target rows do not sum to 1"),
        ([(0, 0, 0)], False, None),
    ],
)
def test_degenerate_targets(rows: list[tuple[int, int, int]], fires: bool, match: str | None) -> None:
    found = targets.degenerate_targets(bad_targets(rows))
    assert (found is not None) == fires
    if found is not None:
        assert match is not None and re.search(match, found.message), found.message
        assert found.evidence["first_step"] == 50 - len(rows)


def epochs(val: list[float | None], train: list[float], acc: list[float | None] | None = None) -> Window:
    acc = acc or [None] * len(val)
    return Window(
        epochs=tuple(
            Epoch(i, 50 * i, train_loss=t, val_loss=v, val_acc=a) for i, (v, t, a) in enumerate(zip(val, train, acc))
        )
    )


@pytest.mark.parametrize(
    ("window", "best", "fires"),
    [
        (epochs([1.0, 0.6, 0.5, 0.55, 0.65, 0.7, 0.8], [1.2, 0.8, 0.5, 0.3, 0.2, 0.1, 0.05]), 2, True),
        (epochs([1.0, 0.6, 0.5, 0.45, 0.4, 0.38], [1.2, 0.8, 0.5, 0.3, 0.2, 0.1]), None, False),
        (epochs([1.0, 0.6, 0.5, 0.55, 0.65, 0.7, 0.8], [1.2, 0.8, 0.5, 0.6, 0.7, 0.8, 0.9]), None, False),
        (epochs([0.06, 0.058, 0.078, 0.060, 0.064, 0.064], [0.05, 0.02, 0.014, 0.009, 0.004, 0.002]), None, False),
        (epochs([None] * 6, [1.0, 0.5, 0.3, 0.2, 0.1, 0.05], [0.8, 0.9, 0.92, 0.88, 0.87, 0.86]), 2, True),
    ],
)
def test_overfitting(window: Window, best: int | None, fires: bool) -> None:
    found = loss.overfitting(window)
    assert (found is not None) == fires
    if fires:
        assert found.evidence["best_epoch"] == best
        assert f"epoch {best}" in found.fix


# ---------------------------------------------------------------------------- BatchNorm rules
@pytest.mark.parametrize(("batch", "layers", "fires"), [(8, 2, True), (32, 2, False), (8, 0, False), (16, 3, False)])
def test_bn_small_batch(batch: int, layers: int, fires: bool) -> None:
    w = Window(step=20, bn_batch=np.full(20, batch), bn_layers=np.full(20, layers))
    found = batchnorm.bn_small_batch(w)
    assert (found is not None) == fires
    if fires:
        assert found.evidence["batch_size"] == batch and f"batches of {batch}" in found.message


@pytest.mark.parametrize(
    ("stats", "fires"),
    [
        ((FrozenBN("backbone.bn1", 25, 25, 0.5, 0.2),), True),
        ((FrozenBN("backbone.bn1", 25, 25, 0.001, 0.002),), False),
        ((FrozenBN("backbone.bn1", 25, 0, 0.0, 0.0),), False),
        ((), False),
    ],
)
def test_frozen_bn_updating(stats: tuple[FrozenBN, ...], fires: bool) -> None:
    found = batchnorm.frozen_bn_updating(Window(frozen_bn=stats))
    assert (found is not None) == fires
    if fires:
        assert found.where == "backbone.bn1" and "25 times in the last 25 steps" in found.message


# ---------------------------------------------------------------------------- gradient rules
def test_no_gradient() -> None:
    w = Window(param_names=("a.weight", "b.weight", "b.bias", "c.weight"), no_grad=np.array([0, 12, 12, 0]))
    found = gradients.no_gradient(w)
    assert found is not None and found.evidence["parameters"] == ["b.weight", "b.bias"] and found.where == "b"
    assert gradients.no_gradient(Window(param_names=("a",), no_grad=np.array([3]))) is None


@pytest.mark.parametrize(
    ("idle", "fires"),
    [
        (np.r_[np.full(40, 150), np.zeros(24)], True),
        (np.r_[np.full(10, 150), np.zeros(54)], False),
        (np.r_[np.full(40, 50), np.zeros(24)], False),
    ],
)
def test_dead_relu(idle: np.ndarray, fires: bool) -> None:
    found = gradients.dead_relu(Window(units=(Units("layer3.conv2", idle, "Conv2d", "relu"),)))
    assert (found is not None) == fires
    if fires:
        assert found.message.startswith(
            "40 of 64 units in layer3.conv2 (Conv2d, then relu) had zero gradient for the last 150"
        )
        assert found.where == "layer3.conv2"


@pytest.mark.parametrize("act", ["leaky_relu", "prelu", "elu", "gelu", "silu", "mish"])
def test_units_that_cannot_die_are_never_dead(act: str) -> None:
    """Behind a leaky nonlinearity a zero gradient is not a dead unit, and the fix must not be
    to swap to what the model already uses."""
    idle = np.r_[np.full(40, 150), np.zeros(24)]
    assert gradients.dead_relu(Window(units=(Units("c", idle, "Conv2d", act, can_die=False),))) is None
    mixed = (Units("c", idle, "Conv2d", act, can_die=False), Units("d", idle, "Conv2d", "hardtanh", can_die=True))
    found = gradients.dead_relu(Window(units=mixed))
    assert found is not None and found.where == "d" and [x["name"] for x in found.evidence["layers"]] == ["d"]
    assert "swap hardtanh for LeakyReLU" in found.fix


NAMES = ["conv1.weight", "conv1.bias", "fc.weight"]
WEIGHT = [True, False, True]


@pytest.mark.parametrize(
    ("code", "window", "fires", "match"),
    [
        (
            "VANISHING_GRADIENT",
            grads([[1e-6, 1e-6, 1.0]] * 20, NAMES, WEIGHT),
            True,
            r"conv1\) gets .* 1\.00e-06 times",
        ),
        ("VANISHING_GRADIENT", grads([[0.3, 0.1, 1.0]] * 20, NAMES, WEIGHT), False, None),
        (
            "VANISHING_GRADIENT",
            grads(
                [[1.0, 0, 1.0]] * 10 + [[1e-5, 0, 1e-5]] * 20,
                NAMES,
                WEIGHT,
                grad_norm_initial=1.0,
                loss=np.full(30, 2.3),
                loss_initial=2.3,
            ),
            True,
            r"fell to 1\.41e-05",
        ),
        (
            "VANISHING_GRADIENT",
            grads(
                [[1.0, 0, 1.0]] * 10 + [[1e-5, 0, 1e-5]] * 20,
                NAMES,
                WEIGHT,
                grad_norm_initial=1.0,
                loss=np.full(30, 0.01),
                loss_initial=2.3,
            ),
            False,
            None,
        ),  # converged
        (
            "EXPLODING_GRADIENT",
            grads([[1.0, 0, 0]] * 20 + [[500.0, 0, 0]], NAMES, WEIGHT, grad_norm_initial=1.0),
            True,
            r"reached 500, 500x its initial 1",
        ),
        ("EXPLODING_GRADIENT", grads([[1.0, 0, 1.0]] * 20, NAMES, WEIGHT, grad_norm_initial=1.414), False, None),
        ("EXPLODING_GRADIENT", grads([[1e4, 1, 1.0]] * 20, NAMES, WEIGHT), True, r"conv1\) gets .* 1e\+04 times"),
    ],
)
def test_gradient_rules(code: str, window: Window, fires: bool, match: str | None) -> None:
    found = R.get_rule(code)(window)
    assert (found is not None) == fires
    if fires:
        assert re.search(match, found.message), found.message


def test_exploding_suggests_clipping_at_the_healthy_median() -> None:
    healthy = [0.5, 1.0, 1.5, 2.0, 2.5]  # median 1.5
    rows = [[h, 0, 0] for h in healthy * 4] + [[900.0, 0, 0]] * 5
    found = gradients.exploding_gradient(grads(rows, NAMES, WEIGHT, grad_norm_initial=1.5))
    assert found is not None and found.evidence["suggested_clip_norm"] == 1.5
    assert "max_norm=1.5" in found.fix


def updates(
    ratios: list[list[float]], lrs: list[float], names: tuple[str, ...], peak: list[float] | None = None
) -> Window:
    r = np.asarray(ratios, dtype=np.float64)
    return Window(
        group_names=names,
        update_steps=np.arange(len(r)) * 10,
        update_ratio=r,
        group_lr=np.tile(lrs, (len(r), 1)),
        group_lr_max=np.asarray(peak or lrs, dtype=np.float64),
    )


@pytest.mark.parametrize(
    ("window", "group", "suggested"),
    [
        (updates([[1e-3, 1e-7]] * 3, [0.1, 0.1], ("backbone", "head")), "head", 0.1 * 1e-3 / 1e-7),
        (updates([[0.5]] * 3, [1.0], ("all",)), "all", 1.0 * 1e-3 / 0.5),
        (updates([[1e-3, 1e-2]] * 3, [0.1, 1.0], ("backbone", "head")), None, None),
        (updates([[1e-7]] * 3, [1e-5], ("all",), peak=[0.1]), None, None),  # annealed to the end of a schedule
        (updates([[0.0, 1e-3]] * 3, [0.0, 0.1], ("frozen", "head")), None, None),  # lr=0: frozen on purpose
    ],
)
def test_lr_mismatch(window: Window, group: str | None, suggested: float | None) -> None:
    found = gradients.lr_mismatch(window)
    assert (found is not None) == (group is not None)
    if group:
        assert found.where == group and found.evidence["suggested_lr"] == pytest.approx(suggested, rel=0.05)


# ---------------------------------------------------------------------------- registry and docs
def test_every_monitor_code_has_a_rule() -> None:
    monitor_codes = sorted(c for c, info in FINDING_CODES.items() if "monitor" in info.raised_by)
    assert R.list_rules() == monitor_codes


@pytest.mark.parametrize("code", R.list_rules())
def test_rules_are_quiet_on_an_empty_window(code: str) -> None:
    assert R.get_rule(code)(Window()) is None


def test_registry_rejects_duplicates_and_unknown_codes() -> None:
    with pytest.raises(ValueError, match="already registered"):
        R.rule("DEAD_RELU")(lambda w: None)
    with pytest.raises(ValueError, match="unknown finding code"):
        R.rule("NOT_A_CODE")
    with pytest.raises(KeyError, match="registered: BN_SMALL_BATCH"):
        R.get_rule("NOPE")


@pytest.mark.parametrize(
    "module", [loss, gradients, batchnorm, targets, init], ids=lambda m: m.__name__.rsplit(".", 1)[1]
)
def test_thresholds_are_documented(module: object) -> None:
    text = DOCS.read_text(encoding="utf-8")
    names = [
        n for n in vars(module) if re.fullmatch(r"[A-Z][A-Z0-9_]+", n) and isinstance(getattr(module, n), (int, float))
    ]
    assert names
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"thresholds not documented in {DOCS.name}: {missing}"
    for code in R.list_rules():
        assert f"## {code}" in text


# ---------------------------------------------------------------------------- root cause first
def _f(code: str, **evidence: object) -> Finding:
    return make_finding(code, f"{code} fired.", evidence=dict(evidence), fix="x")


def _resolve(
    fired: list[str], active: frozenset[str] = frozenset(), **evidence: object
) -> tuple[
    dict[str, list[str]],
    dict[str, list[str]],
]:
    found = {c: _f(c, **evidence) for c in fired}
    roots, late = resolve(Window(), lambda w: dict(found), active)
    return (
        {c: [x["code"] for x in f.evidence.get("consequences", [])] for c, f in roots.items()},
        {c: [x["code"] for x in v] for c, v in late.items()},
    )


@pytest.mark.parametrize(
    ("fired", "active", "roots", "late"),
    [
        (["DEAD_RELU", "LOSS_AT_CHANCE"], set(), {"DEAD_RELU": ["LOSS_AT_CHANCE"]}, {}),
        # reported before its cause started: it stays reported
        (["DEAD_RELU", "LOSS_AT_CHANCE"], {"LOSS_AT_CHANCE"}, {"DEAD_RELU": [], "LOSS_AT_CHANCE": []}, {}),
        # the cause's episode goes on although it did not fire this time
        (["BN_SMALL_BATCH"], {"FROZEN_BN_UPDATING"}, {}, {"FROZEN_BN_UPDATING": ["BN_SMALL_BATCH"]}),
        # a consequence of a consequence goes to the root
        (
            ["LOSS_AT_CHANCE", "LR_MISMATCH", "EXPLODING_GRADIENT"],
            set(),
            {"EXPLODING_GRADIENT": ["LR_MISMATCH", "LOSS_AT_CHANCE"]},
            {},
        ),
        # mutual symptoms: the one decided first is the root
        (["CONSTANT_PREDICTION", "LOSS_AT_CHANCE"], set(), {"CONSTANT_PREDICTION": ["LOSS_AT_CHANCE"]}, {}),
        (
            ["CONSTANT_PREDICTION", "LOSS_AT_CHANCE"],
            {"LOSS_AT_CHANCE"},
            {"LOSS_AT_CHANCE": ["CONSTANT_PREDICTION"]},
            {},
        ),
        (["OVERFITTING", "BN_SMALL_BATCH"], set(), {"OVERFITTING": [], "BN_SMALL_BATCH": []}, {}),
    ],
)
def test_consequences_attach_to_their_cause(
    fired: list[str], active: set[str], roots: dict[str, list[str]], late: dict[str, list[str]]
) -> None:
    assert _resolve(fired, active) == (roots, late)


def test_degenerate_targets_are_a_root_whatever_else_fires() -> None:
    roots, _ = _resolve(["DEAD_RELU", "CONSTANT_PREDICTION"], cause="degenerate_targets")
    assert set(roots) == {"DEAD_RELU", "CONSTANT_PREDICTION"}


def test_findings_computed_from_nan_are_consequences_of_nan_loss() -> None:
    """NaN from step 10 on: the argmax of NaN logits is class 0 from then, a constant prediction
    that exists only because of the NaN. Before the NaN the predictions were varied."""
    loss = np.r_[np.full(10, 2.3), np.full(50, np.nan)]
    preds = onehot_counts(list(range(10)) + [0] * 50)
    w = Window(
        step=60, num_classes=10, loss=loss, loss_initial=2.3, preds=preds, targets=onehot_counts(list(range(10)) * 6)
    )
    assert w.first_nonfinite() == 10 and w.before(10).loss.size == 10
    assert set(R.run_rules(w)) == {"NAN_LOSS", "CONSTANT_PREDICTION"}
    roots, late = R.evaluate(w)
    assert list(roots) == ["NAN_LOSS"] and not late
    assert [c["code"] for c in roots["NAN_LOSS"].evidence["consequences"]] == ["CONSTANT_PREDICTION"]
    assert roots["NAN_LOSS"].message.endswith("Consequences of it, not separate faults: CONSTANT_PREDICTION.")
    # constant before the NaN too: finite evidence, reported on its own
    early = Window(
        step=60,
        num_classes=10,
        loss=np.r_[np.full(55, 2.3), np.full(5, np.nan)],
        loss_initial=2.3,
        preds=onehot_counts([0] * 60),
        targets=onehot_counts(list(range(10)) * 6),
    )
    assert set(R.evaluate(early)[0]) == {"NAN_LOSS", "CONSTANT_PREDICTION"}
