"""User code that calls ``sys.exit`` or is interrupted never exits 0 silently, and real-tensor
verbs refuse an input that cannot fit in memory before allocating it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from convdoctor.capture import footprint
from convdoctor.capture.load import load_model
from convdoctor.cli import main
from convdoctor.errors import ModelLoadError

SPECS = "tests.cli.exit_models"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _one_line(result: Result, code: int, needle: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convdoctor: error: ") and needle in lines[0], result.stderr


@pytest.mark.parametrize("verb", ["inspect", "check", "audit", "bench", "rf"])
def test_a_factory_calling_sys_exit_0_is_exit_2(verb: str) -> None:
    _one_line(run(verb, f"{SPECS}:exits", "--input", "1x3x8x8"), 2, "sys.exit(0)")


def test_builtins_exit_as_a_factory_is_exit_2() -> None:
    _one_line(run("inspect", "builtins:exit"), 2, "sys.exit(None)")


def test_the_python_api_raises_instead_of_exiting() -> None:
    with pytest.raises(ModelLoadError, match="called sys.exit"):
        load_model(f"{SPECS}:exits")


def test_a_factory_calling_sys_exit_at_import_is_exit_2(tmp_path: Path) -> None:
    net = tmp_path / "net.py"
    net.write_text("import sys\nsys.exit(0)\n")
    _one_line(run("inspect", f"{net}:build"), 2, "sys.exit(0)")


def test_sys_exit_in_the_forward_is_exit_2() -> None:
    _one_line(run("audit", f"{SPECS}:exits_in_forward", "--input", "1x3x8x8"), 2, "sys.exit(0)")


def test_ctrl_c_is_exit_130_in_one_line() -> None:
    _one_line(run("inspect", f"{SPECS}:interrupted"), 130, "interrupted")


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "--checks", "modes"],
        ["bench", "--no-cold-start"],
        ["check", "--no-bench"],
    ],
)
def test_an_input_that_cannot_fit_is_refused_before_allocating(args: list[str]) -> None:
    result = run(args[0], "torchvision:resnet18", "--input", "1x3x100000x100000", *args[1:])
    _one_line(result, 2, "GB free: use a smaller --input")
    assert "needs about" in result.stderr and "first activation" in result.stderr


def test_the_estimate_counts_the_first_activation(monkeypatch: pytest.MonkeyPatch) -> None:
    """An input that fits, whose first activation (21x the input) does not: refused, both numbers given."""
    model = load_model(f"{SPECS}:stem").module
    x = torch.empty(4, 3, 512, 512, device="meta")
    input_bytes = x.numel() * 4
    assert footprint.first_activation_bytes(model, (x,), {}) == 4 * 64 * 512 * 512 * 4
    monkeypatch.setattr(footprint, "available_bytes", lambda device="cpu": 4 * input_bytes)
    with pytest.raises(Exception, match=r"input 0\.0 GB \+ first activation 0\.3 GB"):
        footprint.ensure_fits(model, (x,), {}, device="cpu")
    monkeypatch.setattr(footprint, "available_bytes", lambda device="cpu": 100 * input_bytes)
    footprint.ensure_fits(model, (x,), {}, device="cpu")  # fits: nothing raised


def test_free_memory_without_psutil_reads_proc_meminfo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users need not have psutil (a test extra): /proc/meminfo, else os.sysconf, gives the figure."""
    import psutil  # a declared test dependency

    with_psutil = footprint.available_bytes()
    real_import = importlib.import_module

    def no_psutil(name: str, *a: object) -> object:
        if name == "psutil":
            raise ImportError("no psutil here")
        return real_import(name, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib, "import_module", no_psutil)
    from_meminfo = footprint.available_bytes()
    assert with_psutil is not None and from_meminfo is not None
    assert abs(from_meminfo - psutil.virtual_memory().available) < 0.1 * with_psutil + 2**28
    if sys.platform.startswith("linux"):
        monkeypatch.setattr(footprint, "_MEMINFO", Path("/nonexistent/meminfo"))
        from_sysconf = footprint.available_bytes()
        assert from_sysconf is not None and 0 < from_sysconf <= from_meminfo + 2**28
