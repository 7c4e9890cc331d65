"""Feature pyramids: one field per level, against autograd, and which level sees an object."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from convdoctor import receptive_field


class TinyFPN(nn.Module):
    """Three stride-2 stages (C2..C4) and torchvision's FPN with a max-pool P5: four levels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.c4 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fpn = FeaturePyramidNetwork([4, 8, 8], 4, extra_blocks=LastLevelMaxPool())

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        c2 = self.c2(self.stem(x))
        c3 = self.c3(c2)
        c4 = self.c4(c3)
        return self.fpn(OrderedDict([("p2", c2), ("p3", c3), ("p4", c4)]))


def _autograd_field(model: nn.Module, shape: tuple[int, ...], level: int) -> tuple[int, int]:
    """Support along H of the central unit of one level, on a positive copy (no path cancels).

    The model is linear (no activation), so with positive weights every Jacobian entry of
    the summed channels is positive where the unit depends on the input.
    """
    torch.manual_seed(0)
    probe = TinyFPN().double()
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(p.abs() + 0.01)
    x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    out = list(probe(x).values())[level]
    out[0, :, (out.shape[2] - 1) // 2, (out.shape[3] - 1) // 2].sum().backward()  # the central unit
    rows = (x.grad[0].sum((0, 2)) != 0).nonzero().flatten()
    return int(rows.min()), int(rows.max())


SHAPE = (1, 3, 128, 128)


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    return receptive_field(TinyFPN(), SHAPE)


def test_each_level_has_its_own_field(report) -> None:
    levels = report.levels
    assert [lv.name for lv in levels] == ["fpn[0]", "fpn[1]", "fpn[2]", "fpn[3]"]
    assert [lv.jump for lv in levels] == [(4, 4), (8, 8), (16, 16), (32, 32)]
    doc = report.to_dict()["levels"]
    assert [d["jump"] for d in doc] == [[4, 4], [8, 8], [16, 16], [32, 32]]


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_level_fields_bound_autograd(report, level: int) -> None:
    lv = report.levels[level]
    n = lv.output_shape[2]
    lo, hi = _autograd_field(TinyFPN(), SHAPE, level)
    size = hi - lo + 1
    # top-down nearest upsampling makes the finer levels an outer bound (exact=False): it must
    # contain the measured field and exceed it by at most one stride of the coarser level per merge
    assert lv.size[0] >= size
    merges = 3 - min(level, 2)
    assert lv.size[0] - size <= 2 * 32 * merges, (lv.size, size, n)
    if lv.exact:
        assert lv.size[0] == size


def test_object_size_names_the_level_that_takes_it() -> None:
    torch.manual_seed(0)
    model = TinyFPN()
    small = receptive_field(model, SHAPE, object_size=40)  # 10 units of stride 4, 5 of stride 8
    (f,) = [f for f in small.findings if f.code == "RF_OBJECT_LEVEL"]
    assert f.evidence["level"] == "fpn[0]" and f.where == "fpn[0]" and f.evidence["units"] == [10.0, 10.0]
    # 64 px belongs to stride 8 (8 units); the shallow model's field there (63) misses it by a pixel
    big = receptive_field(model, SHAPE, object_size=64)
    (f,) = [f for f in big.findings if f.code.startswith("RF_") and f.code in ("RF_OBJECT_LEVEL", "RF_TOO_SMALL")]
    assert f.code == "RF_TOO_SMALL" and f.where == "fpn[1]" and f.evidence["field"] == [63, 63]


def test_level_assignment_reproduces_torchvision_anchor_sizes(report) -> None:
    """torchvision's Faster R-CNN anchors: one size per FPN level, strides 4..64 (published config)."""
    from torchvision.models.detection.faster_rcnn import _default_anchorgen

    from convdoctor.analysis.rf.pyramid import level_for

    anchors = [s[0] for s in _default_anchorgen().sizes][: len(report.levels)]
    assert [level_for(report.levels, (a, a)).name for a in anchors] == [lv.name for lv in report.levels]


@pytest.mark.slow
def test_torchvision_detector_reports_its_fpn_levels() -> None:
    """Faster R-CNN (MobileNetV3 FPN, 320 px): levels named after the FPN, strides from the map sizes."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None).eval()
    report = receptive_field(model, example_input=([torch.rand(3, 320, 320)],), object_size=64)
    levels = report.levels
    assert [lv.name.split("[")[0] for lv in levels] == ["backbone.fpn"] * 3
    for lv in levels:  # stride = input / map size: arithmetic on the shapes, not on the rules
        assert lv.jump == (320 // lv.output_shape[2], 320 // lv.output_shape[3])
        assert lv.size[0] >= 320 // lv.output_shape[2] and all(isinstance(v, int) for v in lv.size)
    (f,) = [f for f in report.findings if f.code == "RF_OBJECT_LEVEL"]
    assert f.evidence["level"] == levels[0].name  # 64 px is under 8 units even of stride 32: the finest


@pytest.mark.slow
def test_yolo_p3_p4_p5_levels_and_object_assignment() -> None:
    """Ultralytics YOLOv8n built from its packaged yaml (random weights, nothing downloads)."""
    import ultralytics.nn.tasks as tasks  # a declared test dependency: a broken release fails

    torch.manual_seed(0)
    model = tasks.DetectionModel("yolov8n.yaml", verbose=False).eval()
    report = receptive_field(model, (1, 3, 256, 256))
    levels = report.levels
    assert [lv.jump for lv in levels] == [(8, 8), (16, 16), (32, 32)]  # P3, P4, P5
    for lv in levels:
        assert lv.jump[0] == 256 // lv.output_shape[2]
    for size, level in ((64, 0), (128, 1), (256, 2)):  # 8 units of strides 8, 16, 32
        found = receptive_field(model, (1, 3, 256, 256), object_size=size).findings
        (f,) = [f for f in found if f.code in ("RF_OBJECT_LEVEL", "RF_TOO_SMALL")]
        assert f.evidence["level"] == levels[level].name
