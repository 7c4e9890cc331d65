"""The served int8 model: AOTInductor packages per input shape, cached on disk, the lowered
graph as its fallback, and ``load_int8``'s guards. One real compilation of the digits ResNet
in this process (batch 8); the cache and the fallbacks reuse its package or make the
compiler fail, which costs nothing. A slow test compiles in one process and loads in another."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from convdoctor.demo.digits import Split
from convdoctor.errors import UsageError
from convdoctor.quant import CompiledInt8, QuantResult, compare_int8, load_int8, serialized_bytes, serve
from convdoctor.quant import result as result_module
from convdoctor.quant.serve import program_digest
from tests.quant import _independent as ind

#: The batch the compiled test model sees: one compilation for all of it.
BATCH = 8


@pytest.fixture(scope="module")
def compiled(int8: QuantResult) -> CompiledInt8:
    return CompiledInt8(int8.reference, int8.lowered_graph)


def _boom(*_: object, **__: object) -> None:
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
    ind.assert_within_kernel_steps(out, ref, ind.kernel_tolerance(int8.reference, resnet.fc))
    assert torch.equal(out.argmax(1), low.argmax(1))
    # what it ships is the reference's int8 state: no fp32 weights, nothing counted twice
    loaded = ind.saved_file(compiled, tmp_path / "served.pt")
    ind.saved_file(resnet, tmp_path / "fp32.pt")
    assert ind.file_bytes(tmp_path / "served.pt") / ind.file_bytes(tmp_path / "fp32.pt") <= 0.3
    assert serialized_bytes(compiled) == pytest.approx(ind.file_bytes(tmp_path / "served.pt"), abs=1024)
    assert sum(t.numel() for t in loaded.values() if t.dtype == torch.int8) == ind.weight_elements(resnet)


def test_a_second_model_loads_the_package_from_the_cache(
    compiled: CompiledInt8, int8: QuantResult, digits: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = digits.x_test[:BATCH]
    with torch.no_grad():
        first = compiled(x)
    [record] = compiled.records
    assert not record.cached and Path(record.package).is_file()
    assert Path(record.package).parent == serve.cache_dir()
    monkeypatch.setattr(serve, "aoti_compile", _boom)  # a compilation now would fail the test
    again = CompiledInt8(int8.reference, int8.lowered_graph)
    with torch.no_grad():
        assert torch.equal(again(x), first)
    [hit] = again.records
    assert hit.cached and hit.package == record.package and again.note == ""
    assert hit.seconds < record.seconds / 10  # milliseconds to load against seconds to compile
    # the same shape in another memory layout reads the same package, with the same answer
    with torch.no_grad():
        assert torch.equal(again(x.to(memory_format=torch.channels_last)), first)
    assert again.compiled_shapes == 1


def _copy_of(package: str, calls: list[str]) -> Callable[..., str]:
    """A stand-in compiler that writes a copy of a real package where it is asked to."""

    def fake(_program: object, path: str, _options: object) -> str:
        calls.append(path)
        shutil.copyfile(package, path)
        return path

    return fake


def _stand_in_compiler(
    compiled: CompiledInt8, digits: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: str
) -> tuple[torch.Tensor, torch.Tensor, str, list[str]]:
    """The test batch, the compiled model's answer, a copy of its real package in ``good.pt2``,
    and the compiler replaced by :func:`_copy_of` it (its calls listed), with ``cache`` as the cache."""
    x = digits.x_test[:BATCH]
    with torch.no_grad():
        expected = compiled(x)
    good = str(tmp_path / "good.pt2")
    shutil.copyfile(compiled.records[0].package, good)
    monkeypatch.setenv(serve.CACHE_ENV, cache)
    calls: list[str] = []
    monkeypatch.setattr(serve, "aoti_compile", _copy_of(good, calls))
    return x, expected, good, calls


def test_a_package_that_does_not_load_is_compiled_again(
    compiled: CompiledInt8,
    int8: QuantResult,
    digits: Split,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    x, expected, good, calls = _stand_in_compiler(compiled, digits, tmp_path, monkeypatch, str(tmp_path / "cache"))
    first = CompiledInt8(int8.reference, int8.lowered_graph)
    with torch.no_grad():
        first(x)
    package = Path(first.records[0].package)
    assert len(calls) == 1 and package.parent == tmp_path / "cache" / "int8"
    package.write_bytes(package.read_bytes()[:1000])  # truncated, as by a full disk
    again = CompiledInt8(int8.reference, int8.lowered_graph)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="convdoctor"):
        assert torch.equal(again(x), expected)
    # refused on its digest before AOTInductor saw a byte of it (test_cache_trust.py: planted, linked)
    assert f"{package} does not match the digest recorded" in caplog.text
    assert len(calls) == 2 and not again.records[0].cached and again.note == ""
    assert package.read_bytes() == Path(good).read_bytes()  # replaced whole
    assert sorted(p.name for p in package.parent.iterdir()) == [package.name]  # no partial file left


def test_cache_off_writes_nothing(
    compiled: CompiledInt8, int8: QuantResult, digits: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    x, expected, good, calls = _stand_in_compiler(compiled, digits, tmp_path, monkeypatch, "off")
    model = CompiledInt8(int8.reference, int8.lowered_graph)
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    assert serve.cache_dir() is None and model.records[0].package == "" and not model.records[0].cached
    assert len(calls) == 1 and not Path(calls[0]).exists()  # the temporary folder is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.pt2"]


def test_the_cache_key_follows_every_byte_of_the_program(int8: QuantResult) -> None:
    import copy

    twin = copy.deepcopy(int8.reference)
    assert program_digest(twin) == program_digest(int8.reference)
    weight = next(t for t in twin.state_dict().values() if t.dtype == torch.int8)
    weight.view(-1)[0] += 1  # one int8 step in one weight
    assert program_digest(twin) != program_digest(int8.reference)
    # a weight scale (a buffer) and an activation scale (a literal in the code) count too
    twin2 = copy.deepcopy(int8.reference)
    scale = next(b for n, b in twin2.named_buffers() if "scale" in n)
    scale.mul_(1.001)
    assert program_digest(twin2) != program_digest(int8.reference)
    twin3 = copy.deepcopy(int8.reference)
    literal = next(
        n for n in twin3.graph.nodes if n.target == torch.ops.quantized_decomposed.quantize_per_tensor.default
    )
    literal.args = (literal.args[0], float(literal.args[1]) * 1.001, *literal.args[2:])
    twin3.recompile()
    assert program_digest(twin3) != program_digest(int8.reference)


def test_compile_failure_serves_the_lowered_graph(
    int8: QuantResult, digits: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(serve.CACHE_ENV, str(tmp_path))  # a cold cache: nothing to load
    monkeypatch.setattr(serve, "aoti_compile", _boom)
    model = CompiledInt8(int8.reference, int8.lowered_graph)
    x = digits.x_test[:3]
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, int8.lowered_graph(x))
    assert "Inductor compilation failed (RuntimeError: no C++ compiler here)" in model.note
    assert model.compiled_shapes == 0 and model.records == ()
    # the input's own fault still raises, from the lowered graph's shape guard
    with pytest.raises(AssertionError, match="Guard failed"):
        model(torch.rand(2, 3, 32, 32))


def test_a_disk_error_is_not_called_a_compiler_failure(
    int8: QuantResult, digits: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setenv(serve.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(serve, "aoti_compile", full_disk)
    model = CompiledInt8(int8.reference, int8.lowered_graph)
    x = digits.x_test[:3]
    with torch.no_grad():
        assert torch.equal(model(x), int8.lowered_graph(x))
    assert model.note.startswith("the int8 package could not be written or read (")
    assert "No space left on device" in model.note and "Inductor" not in model.note


def test_shapes_past_the_limit_run_the_lowered_graph(
    int8: QuantResult, digits: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "MAX_COMPILED_SHAPES", 0)
    monkeypatch.setattr(serve, "aoti_compile", _boom)  # would fail loudly if reached
    model = CompiledInt8(int8.reference, int8.lowered_graph)
    x = digits.x_test[:5]
    with torch.no_grad():
        assert torch.equal(model(x), int8.lowered_graph(x))
    assert model.note == "" and model.compiled_shapes == 0


#: A serving process: load a saved program, answer one batch, report what it ran.
_SERVER = textwrap.dedent(
    """
    import json, re, sys, zipfile, torch
    from convdoctor.quant import load_int8
    x = torch.load(sys.argv[2], weights_only=True)
    model = load_int8(sys.argv[1], x)
    with torch.no_grad():
        out = model(x)
    [r] = model.records
    wrapper = next(n for n in zipfile.ZipFile(r.package).namelist() if n.endswith("wrapper.cpp"))
    source = zipfile.ZipFile(r.package).read(wrapper).decode()
    print(json.dumps({"cached": r.cached, "seconds": r.seconds, "package": r.package, "note": model.note,
                      "out": out.flatten().tolist(),
                      "lowered_int8": sum("onednn.qconv" in str(n.target) for n in model.lowered.graph.nodes),
                      "package_int8": len(re.findall(r"aoti_torch_cpu__qconv[a-z0-9_]*[(]", source)),
                      "package_fp32": len(re.findall(r"aoti_torch_cpu_convolution[(]", source))}))
    """
)


@pytest.mark.slow
def test_a_fresh_server_process_runs_int8_and_the_next_one_loads_its_package(
    int8: QuantResult, resnet: nn.Module, digits: Split, tmp_path: Path
) -> None:
    """What a server does: load_int8 in a process that never quantized. The first one compiles
    int8 kernels (not fp32: that needs torchao's fusion passes, which only its quantizer module
    registers), the second loads the first one's package from the cache."""
    program, batch = int8.save(tmp_path / "int8.pt2"), tmp_path / "x.pt"
    torch.save(digits.x_test[:4].clone(), batch)
    env = {**os.environ, serve.CACHE_ENV: str(tmp_path / "cache")}
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", _SERVER, str(program), str(batch)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    convs = sum(isinstance(m, nn.Conv2d) for m in resnet.modules())
    assert cold["note"] == "" and not cold["cached"] and warm["cached"]
    assert cold["package_fp32"] == 0 and cold["package_int8"] == cold["lowered_int8"] == convs
    assert warm["package"] == cold["package"] and Path(cold["package"]).parent == tmp_path / "cache" / "int8"
    assert warm["out"] == cold["out"]  # the same program, bit for bit
    assert warm["seconds"] < cold["seconds"] / 10


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
