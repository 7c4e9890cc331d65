"""``convdoctor rf``: the table, the JSON contract, the plot, and one-line errors with exit 2."""

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


def _resnet18_fields() -> dict[str, tuple[int, int, int]]:
    """(size, jump, start) after each top-level stage, by the textbook recurrence
    size += (k - 1) * jump, start -= pad * jump, jump *= stride (layer4: 435 px, Araujo et al. 2019)."""
    size, jump, start, out = 1, 1, 0, {}

    def layer(k: int, s: int, p: int) -> None:
        nonlocal size, jump, start
        size, start, jump = size + (k - 1) * jump, start - p * jump, jump * s

    layer(7, 2, 3)
    out["conv1"] = (size, jump, start)
    layer(3, 2, 1)
    out["maxpool"] = (size, jump, start)
    for stage, first_stride in (("layer1", 1), ("layer2", 2), ("layer3", 2), ("layer4", 2)):
        for s in (first_stride, 1, 1, 1):  # two BasicBlocks of two 3x3 convs (the 1x1 shortcut is inside)
            layer(3, s, 1)
        out[stage] = (size, jump, start)
    return out


def test_table_names_the_layers_and_their_fields() -> None:
    code, out, _ = run("rf", "torchvision:resnet18", "--width", "140")
    assert code == 0
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if line.startswith("│") and len(cells) == 8:
            rows[cells[0]] = cells
    expected = _resnet18_fields()
    assert expected["layer4"] == (435, 32, -217)
    for name, (size, jump, start) in expected.items():
        assert rows[name][3:6] == [str(size), str(jump), str(start)], name
    assert rows["avgpool"][3] == "global" and rows["<model>"][3] == "global"
    focus = dict(re.findall(r"│ (layer|field size|jump \(effective stride\)) +│ (\S+)", out))
    assert focus == {"layer": "layer4", "field size": "435", "jump (effective stride)": "32"}


def test_json_document_and_object_size_finding() -> None:
    code, out, _ = run("rf", "torchvision:alexnet", "--layer", "features", "--object-size", "500", "--json")
    assert code == 0  # a warning does not fail the default --fail-on error
    doc = json.loads(out)
    assert doc["kind"] == "rf" and doc["layer"] == "features" and doc["object_size"] == [500, 500]
    row = next(r for r in doc["layers"] if r["name"] == "features")
    assert row["size"] == [195, 195] and row["jump"] == [32, 32]  # AlexNet pool5, Distill table
    assert [f["code"] for f in doc["findings"]] == ["RF_TOO_SMALL"]


def test_fail_on_warning_turns_the_finding_into_exit_1() -> None:
    code, _, _ = run("rf", "torchvision:alexnet", "--object-size", "500", "--fail-on", "warning", "--json")
    assert code == 1


def test_gradient_method_from_the_command_line() -> None:
    code, out, _ = run(
        "rf", "torchvision:resnet18", "--input", "1x3x128x128", "--method", "gradient", "--layer", "layer1", "--json"
    )
    assert code == 0
    (row,) = json.loads(out)["layers"]
    assert row["size"] == [43, 43] and row["jump"] == [4, 4] and row["clipped"] == [False, False]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "rf.png"
    code, _, _ = run("rf", "torchvision:resnet18", "--object-size", "64", "--plot", str(png), "--json")
    assert code == 0
    from matplotlib.image import imread

    image = imread(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 100 and image.shape[1] > 100


def test_file_factory_without_spatial_ops(tmp_path: Path) -> None:
    f = tmp_path / "mlp.py"
    f.write_text("import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(12, 2))\n")
    code, out, err = run("rf", f"{f}:build", "--input", "1x3x2x2")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no spatial op" in err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--layer", "layer9"], "unknown layer 'layer9'; did you mean layer4, layer3, layer2?"),
        (["--object-size", "0"], "must be positive"),
        (["--object-size", "-4"], "must be positive"),
        (["--object-size", "wide"], "not an integer"),
        (["--method", "magic"], "choose analytic or gradient"),
        (["--input", "1x3"], "no spatial dims"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    code, out, err = run("rf", "torchvision:resnet18", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and needle in err, err
