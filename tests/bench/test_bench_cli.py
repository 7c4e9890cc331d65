"""``convdoctor bench`` on the command line: one JSON document, a PNG, one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bench_helpers import BROKEN_SPEC, TINY_SPEC
from click.testing import CliRunner

from convdoctor.cli import main

FAST_ARGS = ["--input", "1x3x16x16", "--threads", "1", "--min-run-time", "0", "--no-cold-start"]


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["bench", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_document_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "lat.png"
    code, out, err = _run(
        TINY_SPEC,
        TINY_SPEC.replace("tiny_cnn", "tiny_cnn?channels=16"),
        *FAST_ARGS,
        "--batch-sizes",
        "1,2",
        "--json",
        "--plot",
        str(png),
        "--fail-on",
        "never",
    )
    assert code == 0, err
    doc = json.loads(out)  # stdout is exactly one JSON document
    assert doc["kind"] == "bench" and len(doc["results"]) == 4
    assert {r["batch_size"] for r in doc["results"]} == {1, 2}
    assert all(r["threads"] == 1 for r in doc["results"])
    assert len(doc["comparison"]) == 4
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "plot written" in err


def test_terminal_table() -> None:
    code, out, err = _run(TINY_SPEC, *FAST_ARGS, "--width", "200", "--fail-on", "never")
    assert code == 0, err
    assert "Latency in ms on cpu, 1 threads, float32" in out and "Where the time goes" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--batch-sizes", "0"], "batch size 0"),
        (["--batch-sizes", "1,a"], "not an integer"),
        (["--device", "tpu"], "unknown device"),
        (["--threads", "0"], "threads"),
        (["--dtype", "int4"], "unsupported dtype"),
        (["--input", "1x3xx16"], "malformed input size"),
    ],
)
def test_bad_input_one_line_exit_2(args: list[str], needle: str) -> None:
    code, out, err = _run(TINY_SPEC, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_one_line_exit_2() -> None:
    code, _, err = _run(TINY_SPEC, "--device", "cuda")
    assert code == 2 and err.count("\n") == 1 and "no CUDA GPU" in err


def test_unknown_model_and_failing_forward_exit_2() -> None:
    code, _, err = _run("torchvision:resnet1800")
    assert code == 2 and err.count("\n") == 1 and "did you mean" in err
    code, _, err = _run(BROKEN_SPEC, *FAST_ARGS)
    assert code == 2 and err.count("\n") == 1 and "boom inside forward" in err
