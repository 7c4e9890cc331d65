"""``convdoctor inspect``: output, JSON contract and one-line errors with exit 2."""

from __future__ import annotations

import json
import re
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
    for key in (
        "params",
        "trainable_params",
        "macs",
        "flops",
        "other_flops",
        "param_bytes",
        "activation_bytes",
        "peak_activation_bytes",
    ):
        assert isinstance(doc["totals"][key], int)
    assert doc["totals"]["params"] == 11_689_512  # torchvision ResNet18_Weights.meta["num_params"]
    assert doc["totals"]["flops"] == 2 * doc["totals"]["macs"]
    names = [row["name"] for row in doc["layers"]]
    assert names[0] == "" and "layer4.1.conv2" in names
    assert {"name", "type", "output_shape", "params", "macs"} <= set(doc["layers"][0])


SI = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}


def _table_rows(out: str) -> dict[str, list[str]]:
    """The layer table's body rows (and the total row), cells stripped, keyed by layer name."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("│") and line.count("│") == 8:  # 7 columns: the layer table, not Totals
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


def test_terminal_table_sums_match_totals() -> None:
    import torchvision.models as tvm

    code, out, _ = run("inspect", "torchvision:resnet18", "--depth", "1", "--width", "140")
    assert code == 0
    rows = _table_rows(out)
    total = rows.pop("total")
    assert list(rows) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    params = [int(r[3].replace(",", "")) for r in rows.values()]
    published = tvm.ResNet18_Weights.DEFAULT.meta
    assert sum(params) == int(total[3].replace(",", "")) == published["num_params"] == 11_689_512
    # the MACs column is rounded to 3 significant digits: its sum agrees with the total to that
    # rounding, and the total with torchvision's published GMACs (1.814)
    macs = [float(r[4][:-1]) * SI[r[4][-1]] if r[4][-1] in SI else float(r[4]) for r in rows.values()]
    assert sum(macs) == pytest.approx(1.81e9, rel=5e-3) and total[4] == "1.81G"
    exact = int(re.search(r"MACs\s+│\s+([\d,]+)", out).group(1).replace(",", ""))
    assert round(exact / 1e9, 3) == published["_ops"]
    # layer4 by hand: block 1 = 3x3 256->512 + 3x3 512->512 + 1x1 256->512 + 3 BNs; block 2 = 2 3x3 512->512 + 2 BNs
    block1 = 9 * 256 * 512 + 9 * 512 * 512 + 256 * 512 + 3 * 2 * 512
    block2 = 2 * 9 * 512 * 512 + 2 * 2 * 512
    assert int(rows["layer4"][3].replace(",", "")) == block1 + block2


def test_file_factory_and_input(tmp_path: Path) -> None:
    f = tmp_path / "net.py"
    f.write_text("import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())\n")
    code, out, _ = run("inspect", f"{f}:build", "--input", "1x1x5x5", "--json")
    assert code == 0
    assert json.loads(out)["totals"]["macs"] == 3 * 3 * 2 * 1 * 9  # Hout*Wout*Cout*Cin*k*k


@pytest.mark.parametrize(
    "args, needle",
    [
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
    ],
)
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
    code, out, _ = run(
        "inspect", "torchvision:resnet18", "--input", "4x3x64x64", "--budget", "1GiB", "--target-batch", "512", "--json"
    )
    assert code == 0
    tm = json.loads(out)["training_memory"]
    assert tm["batch_size"] == 4 and tm["max_batch"] > 4
    assert tm["accumulation_steps"] * tm["max_batch"] >= 512
    code, _, err = run("inspect", "torchvision:resnet18", "--budget", "lots")
    assert code == 2 and "cannot read memory size" in err
