"""MODEL specs, checkpoints and input specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convdoctor.capture.inputs import parse_input_spec
from convdoctor.capture.load import load_model, load_weights
from convdoctor.errors import ModelLoadError, UsageError
from convdoctor.inspect import inspect
from tests.fixtures.user_models import tiny


class _Arbitrary:
    """Any class: weights_only=True must refuse to construct it."""


def test_torchvision_spec_with_kwargs_on_meta() -> None:
    lm = load_model("torchvision:resnet18?num_classes=7", meta=True)
    assert lm.on_meta and lm.fresh
    assert all(p.device.type == "meta" for p in lm.module.parameters())
    assert lm.module.fc.out_features == 7


@pytest.mark.parametrize("query", ["min_size=224,max_size=320", "min_size=224&max_size=320"])
def test_spec_keywords_split_on_comma_or_ampersand(query: str) -> None:
    """Both separators give numbers, not the string ``"224&max_size=320"`` the builder chokes on."""
    lm = load_model(f"torchvision:fasterrcnn_mobilenet_v3_large_320_fpn?{query}", meta=True)
    assert (lm.module.transform.min_size, lm.module.transform.max_size) == ((224,), 320)


def test_torchvision_default_input_is_eval_crop() -> None:
    assert load_model("torchvision:inception_v3", meta=True).default_input_size == (1, 3, 299, 299)


def test_regnet_factory_computing_with_tensors_still_builds_on_meta() -> None:
    lm = load_model("torchvision:regnet_x_400mf", meta=True)
    assert lm.on_meta


def test_unknown_torchvision_name_suggests() -> None:
    with pytest.raises(ModelLoadError, match="did you mean resnet50"):
        load_model("torchvision:resnet05")


def test_pkg_module_factory_and_kwargs() -> None:
    lm = load_model("tests.fixtures.user_models:tiny?channels=6")
    assert lm.module[0].out_channels == 6


def test_file_factory(tmp_path: Path) -> None:
    f = tmp_path / "net.py"
    f.write_text("import torch.nn as nn\ndef build():\n    return nn.Linear(3, 2)\n")
    lm = load_model(f"{f}:build")
    assert isinstance(lm.module, torch.nn.Linear)


def test_torchscript_and_exported_program(tmp_path: Path) -> None:
    model = tiny().eval()
    ts = tmp_path / "m.pt"
    torch.jit.script(model).save(str(ts))
    r = inspect(load_model(str(ts), trusted=True), (1, 3, 8, 8))  # TorchScript runs its code: see archive.py
    assert r.totals["params"] == sum(p.numel() for p in model.parameters())
    ep = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 8, 8),)), str(ep))
    lm = load_model(str(ep))
    assert lm.default_input_size == (1, 3, 8, 8)
    r2 = inspect(lm)
    assert r2.totals["macs"] == r.totals["macs"] == 8 * 8 * 4 * 3 * 9 + 4 * 2


def test_weights_load_with_weights_only(tmp_path: Path) -> None:
    model = tiny()
    ckpt = tmp_path / "w.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    lm = load_weights(load_model("tests.fixtures.user_models:tiny", meta=True), ckpt)
    assert torch.equal(lm.module[0].weight, model[0].weight)


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "evil.pt"
    torch.save({"obj": _Arbitrary()}, ckpt)  # loading it would need to unpickle an arbitrary class
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        load_weights(load_model("tests.fixtures.user_models:tiny"), ckpt)


def test_mismatched_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "w.pt"
    torch.save(tiny(channels=5).state_dict(), ckpt)
    with pytest.raises(ModelLoadError, match="does not match the model"):
        load_weights(load_model("tests.fixtures.user_models:tiny"), ckpt)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("1x3x224x224", (1, 3, 224, 224)),
        ("3x32x32", (1, 3, 32, 32)),
        (" 2x3x8x8 ", (2, 3, 8, 8)),
        ((2, 5, 16), (2, 5, 16)),
    ],
)
def test_input_specs(spec: object, expected: tuple[int, ...]) -> None:
    assert parse_input_spec(spec) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["1x3x", "abc", "1x0x8x8", "8", "1x-3x8x8"])
def test_bad_input_specs(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_input_spec(spec)


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_320_fpn", "lraspp_mobilenet_v3_large"])
@pytest.mark.parametrize("meta", [True, False])
def test_torchvision_specs_never_download(
    name: str, meta: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A detector's or segmenter's backbone defaults to ImageNet weights; a spec asks for none."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: any weights would be fetched
    fetched: list[str] = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, *a, **k: fetched.append(url))
    loaded = load_model(f"torchvision:{name}", meta=meta)
    assert fetched == [] and isinstance(loaded.module, torch.nn.Module)


def test_torchvision_backbone_weights_are_refused() -> None:
    with pytest.raises(UsageError, match="weights_backbone cannot be downloaded"):
        load_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn?weights_backbone=DEFAULT")
