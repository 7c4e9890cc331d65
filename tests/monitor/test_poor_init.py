"""POOR_INIT: bad initialisations named first, with their consequences attached, and healthy
ones (PyTorch's default, Kaiming, timm's and torchvision's inits) left alone.

Evidence numbers are checked against a direct computation on a copy of the model (forward
hooks of the test's own, ``torch.std``, ``nn.init.calculate_gain``), never against the monitor.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from monitor_zoo import Run, data, deep_stack, plain_cnn, train
from torch import nn
from torch.nn import functional as F

from convdoctor.monitor import SYNC_EVERY, Monitor
from convdoctor.monitor.rules import get_rule
from convdoctor.monitor.rules.init import INIT_DEPTH_RATIO, SCALE_KEPT
from convdoctor.monitor.window import InitLayer, InitRecord, Window

UNIT = (nn.Conv2d, nn.Linear)
#: Accuracy of a guess among the 10 digits.
CHANCE = 0.1


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def each(fn: Callable[[nn.Module], None]) -> Callable[[nn.Module], None]:
    def apply(model: nn.Module) -> None:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, UNIT):
                    fn(m)

    return apply


def zero(m: nn.Module) -> None:
    m.weight.zero_()
    m.bias.zero_()


def constant(m: nn.Module) -> None:
    m.weight.fill_(0.01)
    m.bias.zero_()


def kaiming_tenth(m: nn.Module) -> None:
    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    m.weight.mul_(0.1)
    m.bias.zero_()


def kaiming(m: nn.Module) -> None:
    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    m.bias.zero_()


def xavier_gain_1(m: nn.Module) -> None:
    nn.init.xavier_normal_(m.weight, gain=1.0)
    m.bias.zero_()


def sgd(lr: float) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda m: torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)


BAD: dict[str, Run] = {
    "all_zero": Run(plain_cnn, sgd(0.05), steps=150, before=each(zero)),
    "constant": Run(plain_cnn, sgd(0.05), steps=150, before=each(constant)),
    "kaiming_tenth_12_layers": Run(lambda: deep_stack(12, nn.ReLU), sgd(0.05), steps=150, before=each(kaiming_tenth)),
    "xavier_gain_1_20_layers": Run(lambda: deep_stack(20, nn.ReLU), sgd(0.05), steps=150, before=each(xavier_gain_1)),
}
HEALTHY: dict[str, Run] = {
    "pytorch_default": Run(plain_cnn, sgd(0.05), steps=150),
    "kaiming": Run(plain_cnn, sgd(0.05), steps=150, before=each(kaiming)),
    "kaiming_20_layers": Run(lambda: deep_stack(20, nn.ReLU), sgd(0.01), steps=150, before=each(kaiming)),
}
#: What each bad init must be named as, and which consequences the run shows at least.
CAUSE = {
    "all_zero": "identical_filters",
    "constant": "identical_filters",
    "kaiming_tenth_12_layers": "scale",
    "xavier_gain_1_20_layers": "scale",
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_init_is_named_first_with_its_consequences_attached(name: str) -> None:
    mon, _ = train(BAD[name])
    found = mon.findings
    assert found and found[0].code == "POOR_INIT", [f.code for f in found]
    first = found[0]
    assert first.evidence["step"] <= SYNC_EVERY and first.evidence["recorded_step"] == 0
    assert first.evidence["cause"] == CAUSE[name]
    assert "DEAD_RELU" not in [f.code for f in found]  # not its own disease...
    attached = {c["code"] for c in first.evidence.get("consequences", [])}
    assert "LOSS_AT_CHANCE" in attached  # ...and the loss plateau at ln 10 is explained by the init
    assert [f.code for f in found] == ["POOR_INIT"], "every other symptom is a consequence"
    assert "convdoctor.fix.reinit(model, 'kaiming')" in first.fix


@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_inits_raise_no_poor_init(name: str) -> None:
    mon, _ = train(HEALTHY[name])
    assert "POOR_INIT" not in [f.code for f in mon.findings]
    # the run learned, so the init really was fine: five times chance (1 in 10), where every poor
    # init above stays at chance (0.087). Not a tighter bar: the 20-layer plain stack's 150 steps
    # are chaotic in float rounding and end at 0.79 on AVX-512 kernels, 0.73 on AVX2 ones.
    assert mon.report().epochs[-1]["val_acc"] > 5 * CHANCE


def test_the_fix_it_names_cures_it() -> None:
    """``convdoctor.fix.reinit(model, 'kaiming')`` on the all-zero CNN: it trains, and the init is fine
    (a few first-layer units may still die on these all-positive pixels: that is DEAD_RELU's own case)."""
    from convdoctor.fix import reinit

    def fixed() -> nn.Module:
        model = plain_cnn()
        each(zero)(model)
        return reinit(model, "kaiming", seed=0)

    mon, _ = train(Run(fixed, sgd(0.05), steps=150))
    assert "POOR_INIT" not in [f.code for f in mon.findings] and mon.report().epochs[-1]["val_acc"] > 0.9


# ---------------------------------------------------------------------------- evidence
def _first_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, every: int = 1) -> Monitor:
    """The first sync window (``SYNC_EVERY`` SGD steps on one batch); the record is made at step 0."""
    mon = Monitor(model, num_classes=10, every=every)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(SYNC_EVERY):
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
        opt.step()
    return mon


def _input_rms(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Each conv/linear layer's input RMS in call order, measured with the test's own hooks."""
    seen: list[float] = []
    hooks = [
        m.register_forward_hook(lambda mod, a, o: seen.append(float(a[0].pow(2).mean().sqrt())))
        for m in model.modules()
        if isinstance(m, UNIT)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_scale_evidence_matches_a_direct_computation() -> None:
    torch.manual_seed(0)
    model = deep_stack(12, nn.ReLU)
    each(kaiming_tenth)(model)
    x, y = data(0)[0][:32], data(0)[1][:32]
    initial = copy.deepcopy(model)
    rms = _input_rms(copy.deepcopy(model), x)
    f = {f.code: f for f in _first_step(model, x, y).findings}["POOR_INIT"]
    ev = f.evidence
    model = initial
    assert ev["activation_ratio"] == pytest.approx(rms[-1] / rms[1], rel=1e-4)
    assert [p["in_rms"] for p in ev["depth_profile"]] == pytest.approx(rms, rel=1e-4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    target = nn.init.calculate_gain("relu") / math.sqrt(8 * 9)  # 8 channels x 3x3 in every inner conv
    scales = [float(c.weight.detach().std(unbiased=False)) / target for c in convs[1:]]  # the layers between
    assert ev["predicted_ratio"] == pytest.approx(float(np.prod(scales)), rel=1e-3)
    assert [r["scale"] for r in ev["layers"]] == pytest.approx(scales, rel=1e-3)
    assert all(0.07 < s < 0.13 for s in scales)  # a tenth of Kaiming's std, by construction


def test_identical_filter_evidence_names_the_layers_set_up() -> None:
    torch.manual_seed(0)
    model = plain_cnn()
    each(zero)(model)
    x, y = data(0)[0][:32], data(0)[1][:32]
    f = {f.code: f for f in _first_step(model, x, y).findings}["POOR_INIT"]
    # every hidden activation is 0, so even the head's gradient is 0: all three layers are stuck
    assert f.evidence["zero_layers"] == ["0", "3", "8"]
    assert all(r["identical_filters"] and r["grad_norm"] == 0 for r in f.evidence["layers"])


def test_identical_filters_are_proven_at_the_first_sync_whatever_every_is() -> None:
    """With ``every`` beyond the sync interval no second step is sampled before the first sync: the
    weights are measured again at the sync itself, after the optimizer steps in between."""
    torch.manual_seed(0)
    model = plain_cnn()
    each(zero)(model)
    x, y = data(0)[0][:32], data(0)[1][:32]
    mon = _first_step(model, x, y, every=2 * SYNC_EVERY)
    (f,) = mon.findings
    assert f.code == "POOR_INIT" and f.evidence["step"] == SYNC_EVERY
    assert (f.evidence["recorded_step"], f.evidence["checked_step"]) == (0, SYNC_EVERY - 1)
    assert all(torch.count_nonzero(m.weight) == 0 for m in model.modules() if isinstance(m, UNIT))  # still zero


def test_a_sync_at_the_recorded_step_waits_for_the_later_measurement() -> None:
    """``end_epoch`` right after step 0: no optimizer step could have run, so no verdict yet."""
    torch.manual_seed(0)
    model = plain_cnn()
    each(zero)(model)
    x, y = data(0)[0][:32], data(0)[1][:32]
    mon = Monitor(model, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for i in range(3):
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)
        opt.step()
        if i == 0:
            mon.end_epoch()
            assert mon._init.record is None and "POOR_INIT" not in [f.code for f in mon.findings]
    mon.flush()
    assert mon._init.record is not None and mon._init.record.later_step == 2
    assert "POOR_INIT" in [f.code for f in mon.findings]


class ZeroBranch(nn.Module):
    """A residual block whose branch's last conv and the classifier are zero-initialised (Fixup)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8 * 64, 10)
        with torch.no_grad():
            self.branch[2].weight.zero_()
            self.head.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        return self.head(F.relu(h + self.branch(h)).flatten(1))


def test_zero_init_branch_and_head_are_not_poor_init() -> None:
    """Zero filters whose gradients differ (a residual path, per-class targets) learn at once."""
    torch.manual_seed(0)
    x, y = data(0)[0][:32], data(0)[1][:32]
    mon = _first_step(ZeroBranch(), x, y)
    assert mon._window is not None and mon._window.init is not None and len(mon._window.init.layers) == 4
    assert "POOR_INIT" not in [f.code for f in mon.findings]


def test_batchnorm_makes_the_weight_scale_irrelevant() -> None:
    """The same 10x-too-small init with BatchNorm after every conv: scale-invariant, not reported."""
    torch.manual_seed(0)
    model = deep_stack(12, nn.ReLU, bn=True)
    each(kaiming_tenth)(model)
    x, y = data(0)[0][:32], data(0)[1][:32]
    mon = _first_step(model, x, y)
    assert mon._window is not None and mon._window.init is not None
    layers = mon._window.init.layers  # deep_stack puts BatchNorm after every conv but the last
    assert [x.normalized for x in layers] == [True] * 11 + [False, False]
    assert "POOR_INIT" not in [f.code for f in mon.findings]


# ---------------------------------------------------------------------------- the rule on its own
def _layer(name: str, scale: float, rms: float, **kw: object) -> InitLayer:
    fan_in = 72
    std = scale * math.sqrt(2) / math.sqrt(fan_in)
    numel = 8 * fan_in
    base: dict[str, object] = {
        "name": name,
        "param": f"{name}.weight",
        "activation": "relu",
        "normalized": False,
        "fan_in": fan_in,
        "units": 8,
        "weight_norm": std * math.sqrt(numel),
        "weight_spread": std * math.sqrt(numel),
        "grad_norm": 1.0,
        "grad_spread": 1.0,
        "in_rms": rms,
        "numel": numel,
        "later_weight_norm": std * math.sqrt(numel),
        "later_weight_spread": std * math.sqrt(numel),
    }
    base.update(kw)
    return InitLayer(**base)  # type: ignore[arg-type]


def _record(n: int, scale: float, shrink: float) -> InitRecord:
    """``n`` layers of weight scale ``scale``; the input RMS falls by ``shrink`` per layer."""
    return InitRecord(0, tuple(_layer(str(i), scale, 0.5 * shrink**i) for i in range(n)))


def _window(record: InitRecord, growth: float = 1.0) -> Window:
    """A window whose last sample shows every weight ``growth`` times its initial norm."""
    names = tuple(x.param for x in record.layers)
    return Window(
        init=record,
        param_names=names,
        grad_steps=np.array([0]),
        weight_norms=np.array([[x.weight_norm * growth for x in record.layers]]),
    )


@pytest.mark.parametrize(
    ("record", "growth", "fires"),
    [
        (_record(12, 0.1, 0.1), 1.0, True),  # the measured collapse and the weights agree
        (_record(12, 0.1, 0.1), 2.0, True),  # weights 2x larger: 0.2^10 = 1e-7, 7 of the 10 decades kept
        (_record(12, 0.1, 0.1), 9.0, False),  # 0.9^10 = 0.35: the run trained its way out, the episode ends
        (_record(12, 1.0, 0.1), 1.0, False),  # collapse without a weight scale to blame (data, dead bias)
        (_record(12, 0.1, 0.9), 1.0, False),  # small weights, activations held up (biases): measured ratio 3x
        (_record(2, 0.01, 0.01), 1.0, False),  # two layers: no depth to compound over
    ],
)
def test_scale_rule_needs_measurement_and_weights(record: InitRecord, growth: float, fires: bool) -> None:
    found = get_rule("POOR_INIT")(_window(record, growth))
    assert (found is not None) == fires
    if found is not None:
        assert found.evidence["activation_ratio"] == pytest.approx(0.1**10)
        assert found.evidence["predicted_ratio"] == pytest.approx(0.1**10)


def test_scale_thresholds_are_the_documented_ones() -> None:
    """Just inside and just outside INIT_DEPTH_RATIO (measured) and SCALE_KEPT (weights now)."""
    inside = InitRecord(0, (_layer("0", 1, 1.0), _layer("1", 0.01, 1.0), _layer("2", 1, 1.001 / INIT_DEPTH_RATIO)))
    outside = InitRecord(0, (_layer("0", 1, 1.0), _layer("1", 0.01, 1.0), _layer("2", 1, 0.999 / INIT_DEPTH_RATIO)))
    rule = get_rule("POOR_INIT")
    assert rule(_window(inside)) is None and rule(_window(outside)) is not None
    kept = 0.01 ** (SCALE_KEPT - 1)  # growth (10x) that leaves exactly SCALE_KEPT of the 2 decades
    assert rule(_window(outside, kept * 0.99)) is not None and rule(_window(outside, kept * 1.01)) is None


def test_symmetric_rule_needs_identical_gradients_and_filters_that_stay_identical() -> None:
    rule = get_rule("POOR_INIT")

    def fires(later_step: int = 24, **kw: object) -> bool:
        layer = _layer("a", 1, 1.0, **{"weight_spread": 0.0, "grad_spread": 0.0, "later_weight_spread": 0.0, **kw})
        return rule(Window(init=InitRecord(0, (layer,), later_step))) is not None

    assert fires()
    assert not fires(grad_spread=0.5)  # the next layer breaks the symmetry at once
    assert not fires(later_weight_spread=0.5)  # it broke later (a zero-initialised classifier learned)
    assert not fires(later_step=0)  # not measured after a step: no proof
    assert not fires(units=1)  # a single filter is not "identical filters"


def test_the_record_survives_a_checkpoint() -> None:
    torch.manual_seed(0)
    model = plain_cnn()
    each(zero)(model)
    x, y = data(0)[0][:32], data(0)[1][:32]
    mon = _first_step(model, x, y)
    state = mon.state_dict()
    again = Monitor(model, num_classes=10)
    again.load_state_dict(state)
    assert again._init.record == mon._init.record
