"""``receptive_field()``: the report contract, findings with their thresholds, bad input, and
the user's model left exactly as it was."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch
from torch import nn

from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.analysis.rf.findings import RF_MAX_RATIO
from convdoctor.errors import UsageError
from convdoctor.report import Format, render
from convdoctor.rf import receptive_field
from tests.fixtures import models as Z


def stack(n: int, channels: int = 2) -> nn.Sequential:
    """``n`` 3x3 convs with padding 1: field ``1 + 2n``, jump 1, start ``-n`` (by the recurrence)."""
    return nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1) for _ in range(n)])


def test_report_document_has_the_design_keys() -> None:
    report = receptive_field(stack(3), (1, 2, 16, 16))
    doc = json.loads(render(report, Format.JSON))
    assert doc["kind"] == "rf" and doc["method"] == "analytic" and doc["layer"] == ""
    rows = {row["name"]: row for row in doc["layers"]}
    assert rows["2"]["size"] == [7, 7] and rows["2"]["jump"] == [1, 1] and rows["2"]["start"] == [-3, -3]
    assert rows["0"]["size"] == [3, 3] and rows["0"]["global"] is False
    assert {"name", "size", "jump", "start", "global", "center", "coverage", "exceeds_input"} <= set(rows[""])


def test_gradient_method_reports_the_measured_focus_layer() -> None:
    report = receptive_field(stack(4), (1, 2, 32, 32), method="gradient", layer="2")
    (row,) = report.layers
    assert report.method == "gradient" and row.name == "2"
    assert row.size == (7, 7) and row.jump == (1, 1) and row.start == (-3, -3) and row.clipped == (False, False)


def test_gradient_on_a_meta_model_from_a_spec() -> None:
    report = receptive_field("torchvision:resnet18", "1x3x160x64", method="gradient", layer="layer2")
    (row,) = report.layers
    assert row.size[0] == 99 and row.jump[0] == 8 and row.start[0] == -49  # the analytic resnet18 layer2 field
    assert report.layer("layer2") is row


def test_example_input_and_a_functional_model() -> None:
    report = receptive_field(Z.FunctionalOnly(), example_input=torch.randn(1, 3, 12, 12))
    conv_then_pool = report.layer("")
    assert conv_then_pool.global_ and conv_then_pool.size == (None, None)  # mean over H, W then linear


@pytest.mark.parametrize("method", ["analytic", "gradient"])
def test_the_users_model_is_unchanged(method: str) -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3),
    )
    model.train()
    model[1].eval()  # mixed flags: a BN frozen inside a training model
    before, flags = state_dict_digest(model), training_flags(model)
    receptive_field(model, (1, 3, 24, 24), method=method)
    assert state_dict_digest(model) == before and training_flags(model) == flags
    assert all(p.grad is None for p in model.parameters())
    assert model[1].running_mean.abs().sum() == 0 and model[1].num_batches_tracked == 0


def test_rf_too_small_at_its_threshold() -> None:
    model = stack(3)  # field 7
    assert not receptive_field(model, (1, 2, 32, 32), object_size=7).has("RF_TOO_SMALL")
    report = receptive_field(model, (1, 2, 32, 32), object_size="8x5")
    (f,) = [f for f in report.findings if f.code == "RF_TOO_SMALL"]
    assert f.evidence["field"] == [7, 7] and f.evidence["object_size"] == [8, 5] and f.where == ""


def test_rf_too_large_at_its_threshold() -> None:
    model = stack(10)  # field 21 on a 64 px input
    assert receptive_field(model, (1, 2, 64, 64), object_size=5).has("RF_TOO_LARGE")  # 21 > 4 * 5
    assert not receptive_field(model, (1, 2, 64, 64), object_size=6).has("RF_TOO_LARGE")  # 21 < 4 * 6
    f = receptive_field(model, (1, 2, 64, 64), object_size=5, layer="9").findings[0]
    assert f.code == "RF_TOO_LARGE" and f.evidence["max_ratio"] == RF_MAX_RATIO
    assert f.evidence["covering_layer"] == "1"  # the first conv whose field (5) covers the object


def test_rf_too_large_uses_the_field_inside_the_input() -> None:
    # field 41 on a 16 px input: a unit sees at most 16 px, which is 3.2x a 5 px object
    assert not receptive_field(stack(20), (1, 2, 16, 16), object_size=5).has("RF_TOO_LARGE")


def test_rf_exceeds_input_names_the_first_layer_that_outgrows_it() -> None:
    report = receptive_field(stack(10), (1, 2, 16, 16))
    (f,) = [f for f in report.findings if f.code == "RF_EXCEEDS_INPUT"]
    assert f.evidence["first_layer"] == "7" and f.evidence["first_field"] == [17, 17]  # 1 + 2*8 > 16
    assert f.severity.value == "info"


def test_rf_misaligned_where_branches_with_different_strides_merge() -> None:
    class TwoStrides(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(2, 2, 3, stride=2, padding=1)
            self.b = nn.Conv2d(2, 2, 7, dilation=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b(x)

    report = receptive_field(TwoStrides(), (1, 2, 25, 25))
    (f,) = [f for f in report.findings if f.code == "RF_MISALIGNED"]
    assert f.where == "" and report.layer("").aligned is False


def test_rf_uncounted_lists_the_op() -> None:
    class Cumsum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(2, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(x).cumsum(2)

    report = receptive_field(Cumsum(), (1, 2, 16, 16), layer="c")
    (f,) = [f for f in report.findings if f.code == "RF_UNCOUNTED"]
    assert f.evidence["ops"] == {"aten.cumsum": 1} and report.uncounted_ops == {"aten.cumsum": 1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layer": "conv9"}, "unknown layer 'conv9'"),
        ({"layer": "lyr"}, "did you mean"),
        ({"object_size": 0}, "must be positive"),
        ({"object_size": -3}, "must be positive"),
        ({"object_size": "big"}, "not an integer"),
        ({"object_size": "4x4x4"}, "has 3 values"),
        ({"method": "magic"}, "choose analytic or gradient"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(kwargs: dict[str, object], match: str) -> None:
    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lyr1 = nn.Conv2d(2, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lyr1(x)

    with pytest.raises(UsageError, match=match) as info:
        receptive_field(Named(), (1, 2, 8, 8), **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_a_model_without_spatial_ops_is_a_usage_error() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    with pytest.raises(UsageError, match="no spatial op"):
        receptive_field(mlp, (1, 3, 2, 2))
    with pytest.raises(UsageError, match="no spatial dims"):
        receptive_field(nn.Linear(4, 2), (1, 4))


#: factory -> (focus layer, size, start) by hand from tests/fixtures/models.py, one axis (square)
ZOO_FIELDS = {
    Z.SharedTwice: ("", 5, -2),  # the same 3x3 pad-1 conv twice: 1 + 2 + 2
    Z.DictOut: ("body", 3, -1),  # 3x3 pad 1, then a global mean (not local)
    Z.FrozenBackbone: ("backbone", 3, -1),
    Z.DataDependent: ("", None, None),  # one branch's field: 3x3 pad 1 (3, -1) or 5x5 pad 2 (5, -2)
    Z.BiasBeforeBN: ("", 13, -6),  # 7x7 pad 3, 3x3 pad 1, 5x5 pad 2: 1 + 6 + 2 + 4
    Z.WithDropout: ("bn", 3, 0),  # 3x3 without padding
    Z.LazyHead: ("conv", 3, 0),
    # inexact rules (transposed conv, bilinear upsampling): an upper bound, checked against autograd
    # (bounds are whole pixels: the fractional interval's ceil(lo)..floor(hi), still containing autograd's)
    Z.CatAddInterp: ("", 8, None),  # 3x3 then 3x3/2 = 5 + 2*2 = 9 real px wide, bilinear x2: 8 whole px
    Z.Convs: ("", 10, None),  # 3, 3, 3 dil. 2 = 9; 4x4/2 transposed: + (4 - 1) / 2 = 10.5 real px
}
ZOO_JUMPS = {Z.Convs: Fraction(1, 2)}  # the transposed stride 2 halves the step between output units


@pytest.mark.parametrize("factory", list(ZOO_FIELDS), ids=lambda f: f.__name__)
def test_the_edge_case_zoo_gets_its_field(factory: type[nn.Module]) -> None:
    channels = {"CatAddInterp": 4, "Convs": 8, "SharedTwice": 4}.get(factory.__name__, 3)
    name, size, start = ZOO_FIELDS[factory]
    model = factory()
    before = state_dict_digest(model) if factory is not Z.LazyHead else None
    focus = receptive_field(model, (1, channels, 16, 16)).focus_layer
    assert focus is not None and focus.local and focus.name == name
    if before is not None:
        assert state_dict_digest(model) == before
    jump = ZOO_JUMPS.get(factory, 1)
    if factory is Z.DataDependent:  # which branch runs is the capture's choice (x.sum() > 0 on its input)
        assert (focus.size, focus.start, focus.jump) in {((3, 3), (-1, -1), (1, 1)), ((5, 5), (-2, -2), (1, 1))}
        return
    assert focus.size == (size, size) and focus.jump == (jump, jump)
    if start is not None:
        assert focus.start == (start, start)
    measured = receptive_field(factory(), (1, channels, 16, 16), method="gradient", layer=name).layers[0]
    if start is None:
        assert max(measured.size) <= size  # a bound contains the measured field
    else:
        assert measured.size == focus.size and measured.start == focus.start  # autograd agrees exactly


def test_gradient_copy_never_reads_the_weights() -> None:
    model = stack(2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))  # a broken checkpoint: the measurement does not depend on it
    row = receptive_field(model, (1, 2, 16, 16), method="gradient").layers[0]
    assert row.size == (5, 5) and row.start == (-2, -2)


@pytest.mark.cuda
def test_gradient_method_on_a_cuda_model_runs_on_a_cpu_copy() -> None:
    model = stack(3).cuda()
    before = state_dict_digest(model)
    row = receptive_field(model, (1, 2, 32, 32), method="gradient").layers[0]
    assert row.size == (7, 7) and next(model.parameters()).is_cuda and state_dict_digest(model) == before
