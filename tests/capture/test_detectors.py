"""torchvision's detection family through inspect and bench (issue 11, item 1 and "Detectors").

Oracles: params = ``sum(p.numel())``; MACs = ``FlopCounterMode`` on a real forward of the
same image list. The heads' cost depends on the proposals and detections this run produced;
``DATA_DEPENDENT_COST`` says how many, checked against the model's own limits.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch
import torchvision.models.detection as D
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

import convdoctor


def _build(name: str, **kw: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(D, name)(weights=None, weights_backbone=None, **kw).eval()


def _image(size: int) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(2))


def _oracle_macs(model: torch.nn.Module, images: list[torch.Tensor]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        copy.deepcopy(model)(images)
    return int(counter.get_total_flops()) // 2


def _assert_exact(model: torch.nn.Module, size: int) -> Any:
    img = _image(size)
    report = convdoctor.inspect(model, example_input=([img],))
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == _oracle_macs(model, [img])
    return report


@pytest.fixture(scope="module")
def mobilenet_frcnn() -> torch.nn.Module:
    return _build("fasterrcnn_mobilenet_v3_large_320_fpn")


def test_faster_rcnn_inspects_exactly_from_an_image_list(mobilenet_frcnn: torch.nn.Module) -> None:
    report = _assert_exact(mobilenet_frcnn, 320)
    dd = next(f for f in report.findings if f.code == "DATA_DEPENDENT_COST")
    # proposals after the RPN's NMS: at most its post-NMS limit, and what the RoI heads ran on
    limit = mobilenet_frcnn.rpn._post_nms_top_n["testing"]
    assert 0 < dd.evidence["assumed"]["roi_heads"] <= limit
    assert 0 < dd.evidence["macs"] < report.totals["macs"]


def test_one_image_size_means_one_image_and_bench_runs(mobilenet_frcnn: torch.nn.Module) -> None:
    by_size = convdoctor.inspect(mobilenet_frcnn, "3x320x320")
    assert by_size.totals["params"] == sum(p.numel() for p in mobilenet_frcnn.parameters())
    quick = {
        "warmup": 1,
        "min_samples": 3,
        "min_run_time": 0.0,
        "max_run_time": 5.0,
        "profile": False,
        "probe": False,
        "cold_start": False,
    }
    result = convdoctor.bench(mobilenet_frcnn, example_input=([_image(320)],), **quick).to_dict()["results"][0]
    assert result["p50_ms"] > 0


def test_cli_builds_a_detector_spec_offline() -> None:
    from convdoctor.cli import main

    out = CliRunner().invoke(
        main, ["inspect", "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", "--input", "3x320x320", "--json"]
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert "DATA_DEPENDENT_COST" in {f["code"] for f in doc["findings"]}
    assert doc["totals"]["params"] == sum(
        p.numel() for p in _build("fasterrcnn_mobilenet_v3_large_320_fpn").parameters()
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, kw, size",
    [
        ("retinanet_resnet50_fpn", {"min_size": 224, "max_size": 224}, 224),
        ("fcos_resnet50_fpn", {"min_size": 224, "max_size": 224}, 224),
        ("ssdlite320_mobilenet_v3_large", {}, 320),
        ("ssd300_vgg16", {}, 300),
        # every box kept (random weights score low), few of them: the second head runs, cheaply
        (
            "maskrcnn_resnet50_fpn",
            {"min_size": 224, "max_size": 224, "box_score_thresh": 0.0, "box_detections_per_img": 10},
            224,
        ),
        (
            "keypointrcnn_resnet50_fpn",
            {"min_size": 224, "max_size": 224, "box_score_thresh": 0.0, "box_detections_per_img": 5},
            224,
        ),
    ],
)
def test_detection_family_inspects_exactly(name: str, kw: dict[str, Any], size: int) -> None:
    model = _build(name, **kw)
    report = _assert_exact(model, size)
    if "rcnn" in name:  # a second head runs on the detections: its count is stated too
        dd = next(f for f in report.findings if f.code == "DATA_DEPENDENT_COST")
        assumed = dd.evidence["assumed"]
        assert any(n <= model.roi_heads.detections_per_img for p, n in assumed.items() if p != "roi_heads")
