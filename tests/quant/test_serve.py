"""The served int8 model: Inductor-compiled per input shape, the lowered graph as its fallback,
and ``load_int8``'s guards. One real compilation (the digits ResNet at batch 8); the
fallbacks are driven by making the compiler fail, which costs nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from convdoctor.demo.digits import Split
from convdoctor.errors import UsageError
from convdoctor.quant import CompiledInt8, QuantResult, compare_int8, load_int8, serialized_bytes, serve
from convdoctor.quant import result as result_module
from tests.quant import _independent as ind

#: The batch the compiled test model sees: one compilation for all of it.
BATCH = 8


@pytest.fixture(scope="module")
def compiled(int8: QuantResult) -> CompiledInt8:
    return CompiledInt8(int8.reference, int8.lowered_graph)


def _boom(**_: object) -> None:
    raise RuntimeError("no C++ compiler here")


def test_compiled_model_is_the_int8_model(
    compiled: CompiledInt8, resnet: nn.Module, int8: QuantResult, digits: Split, tmp_path: Path
) -> None:
    m = compare_int8(resnet, compiled, digits.x_test, digits.y_test, batch_sizes=(BATCH,), latency=False)
    # agreement is computed in padded forwards of BATCH samples: one shape, one compilation
    assert compiled.compiled_shapes == 1 and compiled.note == ""
    assert m["accuracy_fp32"] == pytest.approx(ind.accuracy(resnet, digits.x_test, digits.y_test))
    assert m["accuracy_drop_points"] <= 1.0
    x = digits.x_test[:BATCH]
    with torch.no_grad():
        out, low, ref = compiled(x), int8.lowered_graph(x), int8.reference(x)
    # the compiled program fuses the same oneDNN int8 kernels as the lowered graph: a few
    # int8 steps from the reference's dequantize -> fp32 -> quantize, same predictions
    torch.testing.assert_close(out, ref, atol=0.01 * float(ref.abs().max()), rtol=0)
    assert torch.equal(out.argmax(1), low.argmax(1))
    # what it ships is the reference's int8 state: no fp32 weights, nothing counted twice
    loaded = ind.saved_file(compiled, tmp_path / "served.pt")
    ind.saved_file(resnet, tmp_path / "fp32.pt")
    assert ind.file_bytes(tmp_path / "served.pt") / ind.file_bytes(tmp_path / "fp32.pt") <= 0.3
    assert serialized_bytes(compiled) == pytest.approx(ind.file_bytes(tmp_path / "served.pt"), abs=1024)
    assert sum(t.numel() for t in loaded.values() if t.dtype == torch.int8) == ind.weight_elements(resnet)


def test_compile_failure_serves_the_lowered_graph(
    int8: QuantResult, digits: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "inductor_config_patch", _boom)
    model = CompiledInt8(int8.reference, int8.lowered_graph)
    x = digits.x_test[:3]
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, int8.lowered_graph(x))
    assert "Inductor compilation failed (RuntimeError: no C++ compiler here)" in model.note
    assert model.compiled_shapes == 0
    # the input's own fault still raises, from the lowered graph's shape guard
    with pytest.raises(AssertionError, match="Guard failed"):
        model(torch.rand(2, 3, 32, 32))


def test_shapes_past_the_limit_run_the_lowered_graph(
    int8: QuantResult, digits: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "MAX_COMPILED_SHAPES", 0)
    monkeypatch.setattr(serve, "inductor_config_patch", _boom)  # would fail loudly if reached
    model = CompiledInt8(int8.reference, int8.lowered_graph)
    x = digits.x_test[:5]
    with torch.no_grad():
        assert torch.equal(model(x), int8.lowered_graph(x))
    assert model.note == "" and model.compiled_shapes == 0


def test_load_int8_survives_a_lowering_that_moved(
    int8: QuantResult, digits: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = int8.save(tmp_path / "int8.pt2")

    def moved(*_: object, **__: object) -> None:
        raise AttributeError("module 'torch._inductor' has no attribute 'freezing_passes'")

    monkeypatch.setattr(result_module, "lower_x86", moved)
    x = digits.x_test[:4]
    with caplog.at_level(logging.WARNING, logger="convdoctor.quant.result"):
        served = load_int8(path, x)
    assert "serving the reference model" in caplog.text and "AttributeError" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(served(x), int8.reference(x))


def test_load_int8_rejects_a_foreign_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "int8.pt2"
    bad.write_bytes(b"not a program")
    with pytest.raises(UsageError, match="cannot load .* as an int8 program") as info:
        load_int8(bad, torch.rand(2, 1, 32, 32))
    assert "\n" not in str(info.value)
