"""``convdoctor inspect``: output, JSON contract and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from convdoctor.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_document_has_design_keys() -> None:
    code, out, _ = run("inspect", "torchvision:resnet18", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["kind"] == "inspect" and doc["model"] == "torchvision:resnet18"
    for key in ("params", "trainable_params", "macs", "flops", "other_flops", "param_bytes",
                "activation_bytes", "peak_activation_bytes"):
        assert isinstance(doc["totals"][key], int)
    assert doc["totals"]["params"] == 11_689_512  # torchvision ResNet18_Weights.meta["num_params"]
    assert doc["totals"]["flops"] == 2 * doc["totals"]["macs"]
    names = [row["name"] for row in doc["layers"]]
    assert names[0] == "" and "layer4.1.conv2" in names
    assert {"name", "type", "output_shape", "params", "macs"} <= set(doc["layers"][0])


def test_terminal_table_sums_match_totals() -> None:
    code, out, _ = run("inspect", "torchvision:resnet18", "--depth", "1", "--width", "140")
    assert code == 0
    assert "11,689,512" in out and "layer4" in out


def test_file_factory_and_input(tmp_path: Path) -> None:
    f = tmp_path / "net.py"
    f.write_text("import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())\n")
    code, out, _ = run("inspect", f"{f}:build", "--input", "1x1x5x5", "--json")
    assert code == 0
    assert json.loads(out)["totals"]["macs"] == 3 * 3 * 2 * 1 * 9  # Hout*Wout*Cout*Cin*k*k


@pytest.mark.parametrize("args, needle", [
    (["inspect", "torchvision:resnet05"], "unknown torchvision model"),
    (["inspect", "nosuchpkg.module:factory"], "cannot import module"),
    (["inspect", "missing/file.py:build"], "not found"),
    (["inspect", "missing.pt"], "not found"),
    (["inspect", "tests.fixtures.user_models:raises", "--input", "1x3x8x8"], "factory exploded on purpose"),
    (["inspect", "tests.fixtures.user_models:not_a_module", "--input", "1x3x8x8"], "not a torch.nn.Module"),
    (["inspect", "tests.fixtures.user_models:NOT_CALLABLE"], "not a factory"),
    (["inspect", "torchvision:resnet50", "--input", "1x1x224x224"], "expected input"),
    (["inspect", "torchvision:resnet18", "--input", "1x3xabc"], "malformed input size"),
    (["inspect", "justtext"], "cannot read MODEL"),
    (["inspect", "tests.fixtures.user_models:tiny"], "input size is unknown"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    code, out, err = run(*args)
    assert code == 2, (out, err)
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


def test_bad_checkpoint_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run("inspect", "tests.fixtures.user_models:tiny", "--input", "1x3x8x8", "--weights", str(bad))
    assert code == 2 and "weights_only" in err and len(err.strip().splitlines()) == 1


def test_layers_command_json() -> None:
    code, out, _ = run("layers", "64", "128", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["depthwise-separable"]["params"] == 64 * 9 + 64 * 128


def test_train_memory_in_json_and_bad_budget() -> None:
    code, out, _ = run("inspect", "torchvision:resnet18", "--input", "4x3x64x64", "--budget", "1GiB",
                       "--target-batch", "512", "--json")
    assert code == 0
    tm = json.loads(out)["training_memory"]
    assert tm["batch_size"] == 4 and tm["max_batch"] > 4
    assert tm["accumulation_steps"] * tm["max_batch"] >= 512
    code, _, err = run("inspect", "torchvision:resnet18", "--budget", "lots")
    assert code == 2 and "cannot read memory size" in err
