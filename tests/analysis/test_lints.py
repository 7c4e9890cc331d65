"""Lints: positive and negative cases, evidence checked against hand arithmetic."""

from __future__ import annotations

import torch
from torch import nn

from convdoctor.capture.load import load_model
from convdoctor.inspect import inspect
from tests.fixtures import models as Z


def _codes(report) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {f.code: f for f in report.findings}


def test_large_kernel_evidence() -> None:
    f = _codes(inspect(Z.BiasBeforeBN().eval(), (1, 3, 8, 8)))["LARGE_KERNEL"]
    ev = f.evidence  # type: ignore[attr-defined]
    assert ev["params_kxk"] == 32 * 32 * 5 * 5
    assert ev["stack_3x3_layers"] == 2  # two 3x3 convs see 5 pixels
    assert ev["params_stack_3x3"] == 2 * 9 * 32 * 32
    assert ev["macs_kxk"] == 32 * 32 * 25 * 8 * 8
    assert f.severity.value == "warning"  # type: ignore[attr-defined]


def test_article_seven_by_seven_is_45_percent_not_55() -> None:
    model = nn.Conv2d(64, 64, 7, padding=3, bias=False)
    f = _codes(inspect(model, (1, 64, 16, 16)))["LARGE_KERNEL"]
    ev = f.evidence  # type: ignore[attr-defined]
    assert (ev["params_kxk"], ev["params_stack_3x3"]) == (49 * 64 * 64, 27 * 64 * 64)
    assert "45% fewer" in f.message  # type: ignore[attr-defined]


def test_stem_on_pixels_is_info() -> None:
    f = _codes(inspect(nn.Conv2d(3, 4, 7, bias=False), (1, 3, 16, 16)))["LARGE_KERNEL"]
    assert f.severity.value == "info"  # type: ignore[attr-defined]
    assert f.evidence["params_kxk"] == 4 * 3 * 49 and f.evidence["params_stack_3x3"] == 9 * 4 * 3 + 2 * 9 * 4 * 4  # type: ignore[attr-defined]


def test_no_large_kernel_when_the_stack_is_bigger() -> None:
    # resnet's 7x7 3->64 stem: 9,408 weights; three 3x3 (3->64, 64->64, 64->64) would need 75,456
    assert "LARGE_KERNEL" not in _codes(inspect("torchvision:resnet18"))


def test_redundant_bias_only_when_bn_is_the_sole_reader() -> None:
    r = inspect(Z.BiasBeforeBN().eval(), (1, 3, 8, 8))
    f = _codes(r)["REDUNDANT_BIAS"]
    assert f.evidence == {"count": 1, "modules": ["conv"], "wasted_params": 32}  # type: ignore[attr-defined]

    class BiasTwoReaders(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y  # the bias matters on the skip path

    assert "REDUNDANT_BIAS" not in _codes(inspect(BiasTwoReaders().eval(), (1, 3, 4, 4)))


def test_train_mode_lints_on_a_users_model() -> None:
    model = Z.WithDropout().train()
    codes = _codes(inspect(model, (2, 3, 6, 6)))
    assert codes["BN_TRAIN_MODE"].evidence["modules"] == ["bn"]  # type: ignore[attr-defined]
    assert codes["DROPOUT_TRAIN_MODE"].evidence["modules"] == ["drop"]  # type: ignore[attr-defined]
    assert not {"BN_TRAIN_MODE", "DROPOUT_TRAIN_MODE"} & set(_codes(inspect(model.eval(), (2, 3, 6, 6))))
    assert not {"BN_TRAIN_MODE"} & set(_codes(inspect(model.train(), (2, 3, 6, 6), mode="train")))


def test_a_freshly_built_spec_is_not_blamed_for_train_mode() -> None:
    assert "BN_TRAIN_MODE" not in _codes(inspect(load_model("torchvision:resnet18", meta=True)))
