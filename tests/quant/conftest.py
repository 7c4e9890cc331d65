"""One trained digits ResNet and its INT8 version, shared by the quantization tests."""

from __future__ import annotations

import pytest
from torch import nn

from convdoctor.demo.digits import Split
from convdoctor.quant import QuantResult, quantize_int8
from tests.quant.digits_resnet import digits32, trained_resnet

#: Calibration samples taken from the training split (never the test split).
N_CALIBRATION = 256


@pytest.fixture(scope="session")
def digits() -> Split:
    """Digits at 32x32."""
    return digits32()


@pytest.fixture(scope="session")
def resnet(digits: Split) -> nn.Module:
    """DigitsResNet trained for a few seconds (about 96% test accuracy)."""
    return trained_resnet(digits, epochs=6)


@pytest.fixture(scope="session")
def int8(resnet: nn.Module, digits: Split) -> QuantResult:
    """``quantize_int8`` of the trained ResNet, calibrated on training images.

    Served from the lowered graph (``compile=False``): the tests that use it call the model
    at many batch sizes, and each would be an Inductor compilation; ``test_serve.py``
    covers the compiled model.
    """
    return quantize_int8(resnet, digits.x_train[:N_CALIBRATION], compile=False)
