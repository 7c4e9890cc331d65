"""timm's norm-act layers quantize like plain BatchNorms: folded into the conv before them.

A network built from timm's own blocks (``ConvNormAct``, ``BatchNormAct2d`` with ReLU and
SiLU) keeps the test to a second or two; the same record was measured on
``timm.create_model("tinynet_e")`` (docs/quantization.md).
"""

from __future__ import annotations

import pytest
import timm.layers as timm_layers  # a declared test dependency: a broken release fails
import torch
from torch import nn

from tests.quant import _independent as ind


class _TimmNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = timm_layers.ConvNormAct(3, 8, 3, stride=2)  # conv + BatchNormAct2d(ReLU)
        self.conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn = timm_layers.BatchNormAct2d(16, act_layer=nn.SiLU)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(self.stem(x))).mean((2, 3)))


def test_batchnorm_act_folds_and_convs_are_int8() -> None:
    from convdoctor.quant import quantize_int8

    torch.manual_seed(0)
    model = _TimmNet()
    with torch.no_grad():  # running stats that are not the identity
        model.train()(torch.randn(32, 3, 16, 16))
    model.eval()
    result = quantize_int8(model, torch.randn(32, 3, 16, 16), compile=False)
    rows = {r.name: r for r in result.layers}
    norms = [p for p, m in model.named_modules() if isinstance(m, timm_layers.BatchNormAct2d)]
    assert norms == ["stem.bn", "bn"]
    assert all(rows[p].status == "folded" for p in norms), [rows[p] for p in norms]
    assert set(result.quantized) == {"stem.conv", "conv", "head"} and result.left_float == ()
    assert all(rows[p].kernel.startswith("onednn.") for p in result.quantized)
    # the activations stay: SiLU runs in fp32 between int8 ops (the x86 quantizer does not annotate it)
    assert result.float_ops.get("aten.silu.default") == 1
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        ref, low = result.reference(x), result.model(x)
        # the int8 grids (the reference: fp32 arithmetic, the same on every CPU) stay close to fp32,
        # and this CPU's int8 kernels stay within a few int8 steps of the reference
        torch.testing.assert_close(ref, model(x), atol=0.1 * float(ref.abs().max()), rtol=0)
    ind.assert_within_kernel_steps(low, ref, ind.kernel_tolerance(result.reference, model.head))


@pytest.mark.slow
def test_timm_model_is_served_by_an_int8_package() -> None:
    """The default served model (an AOTInductor package) runs the timm model's convs in int8 too."""
    import re
    import zipfile

    from convdoctor.quant import quantize_int8

    torch.manual_seed(0)
    model = _TimmNet().eval()
    result = quantize_int8(model, torch.randn(32, 3, 16, 16))
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        served, lowered = result.model(x), result.lowered_graph(x)
    [record] = result.model.records
    assert result.model.note == "" and record.shape == ((8, 3, 16, 16),)
    archive = zipfile.ZipFile(record.package)
    source = next(archive.read(n).decode() for n in archive.namelist() if n.endswith("wrapper.cpp"))
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(re.findall(r"aoti_torch_cpu__qconv[a-z0-9_]*[(]", source)) == convs
    assert "aoti_torch_cpu_convolution(" not in source
    ind.assert_within_kernel_steps(served, lowered, ind.kernel_tolerance(result.reference, model.head))
