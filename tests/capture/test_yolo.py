"""ultralytics YOLO detectors (issue 16), built offline from their YAMLs with random weights.

YOLO's ``Detect`` head caches ``anchors``/``strides``/``shape`` in plain attributes on its
first forward: the model a user hands over must still run, bit-identical to a fresh twin,
after every verb. Oracles: params = ``sum(p.numel())``; MACs = ``FlopCounterMode`` on a
real forward of the same input. Skipped when ``ultralytics`` (a test extra) is missing.
"""

from __future__ import annotations

import copy
import os
import tempfile

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

# before ultralytics is imported: no network probe, no pip auto-install, no banner, and its
# settings file in a scratch folder rather than the user's home
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="convdoctor-yolo-"))
import ultralytics.nn.tasks as tasks  # noqa: E402  (declared test dependency: fails, never skips)

import convdoctor  # noqa: E402

SMALL = (1, 3, 128, 128)


def _build(cfg: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return tasks.DetectionModel(cfg, verbose=False).eval()


def _x(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(3))


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        ya, yb = a(x), b(x)
    return torch.equal(ya[0], yb[0])


def _oracle_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        copy.deepcopy(model)(x)
    return int(counter.get_total_flops()) // 2


@pytest.mark.slow
def test_yolov8n_at_640_counts_exactly_and_still_runs() -> None:
    model, twin = _build("yolov8n.yaml"), _build("yolov8n.yaml")
    x = _x((1, 3, 640, 640))
    report = convdoctor.inspect(model, example_input=x)
    assert report.totals["macs"] == _oracle_macs(twin, x) == 4_371_993_600  # 4.372 GMACs
    assert report.totals["params"] == sum(p.numel() for p in twin.parameters())
    assert _same_outputs(model, twin, x)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolov8s.yaml", "yolo11n.yaml", "yolo11s.yaml"])
def test_yolo_through_inspect_audit_bench(cfg: str) -> None:
    model, twin = _build(cfg), _build(cfg)
    x = _x(SMALL)
    model(_x((1, 3, 96, 96)))  # a cache from an earlier call, at another size
    twin(_x((1, 3, 96, 96)))
    report = convdoctor.inspect(model, example_input=x)
    assert report.totals["params"] == sum(p.numel() for p in twin.parameters())
    assert report.totals["macs"] == _oracle_macs(twin, x)
    audit = convdoctor.audit(model, x, batch_sizes=(1, 2), checks=["modes", "batch", "determinism"])
    assert not [f for f in audit.findings if f.severity == "error"]
    convdoctor.bench(model, "1x3x128x128")
    assert _same_outputs(model, twin, x)
    assert _same_outputs(model, twin, _x((1, 3, 160, 160)))


def test_yolo_capture_is_the_same_whether_or_not_it_ran() -> None:
    x = _x(SMALL)
    fresh = _build("yolov8n.yaml")
    ran = _build("yolov8n.yaml")
    ran(x)  # Detect now holds real CPU anchors for this shape
    a = convdoctor.inspect(fresh, example_input=x).to_dict()
    b = convdoctor.inspect(ran, example_input=x).to_dict()
    assert a == b
    assert _same_outputs(fresh, ran, x)
