"""timm models that broke rf: TResNet's space-to-depth stem, HRNet's fractional coordinates."""

from __future__ import annotations

from fractions import Fraction

import pytest
import timm
import torch

from convdoctor import receptive_field


@pytest.mark.slow
def test_tresnet_space_to_depth_stem_matches_autograd() -> None:
    torch.manual_seed(0)
    model = timm.create_model("tresnet_m", pretrained=False, num_classes=10).eval()
    report = receptive_field(model, (1, 3, 128, 128), layer="body.layer1")
    assert report.uncounted_ops == {}
    s2d = report.layer("body.s2d")
    assert s2d.size == (4, 4) and s2d.jump == (4, 4) and s2d.exact  # a 4x4 block per unit, exactly
    analytic = report.layer("body.layer1")
    measured = receptive_field(model, (1, 3, 128, 128), layer="body.layer1", method="gradient").layers[0]
    assert measured.clipped == (False, False)
    assert analytic.size == measured.size == (60, 60) and analytic.jump == measured.jump == (4, 4)


@pytest.mark.slow
def test_hrnet_public_values_are_plain_numbers() -> None:
    torch.manual_seed(0)
    model = timm.create_model("hrnet_w18_small", pretrained=False, num_classes=10).eval()
    report = receptive_field(model, (1, 3, 64, 64))
    assert any(not layer.exact for layer in report.layers)  # upsampling: the case that made Fractions
    for layer in report.layers:
        for value in (*layer.size, *layer.start):
            assert value is None or type(value) is int, (layer.name, layer.size, layer.start)
        for value in (*layer.jump, *layer.center):
            assert not isinstance(value, Fraction), (layer.name, layer.jump, layer.center)
