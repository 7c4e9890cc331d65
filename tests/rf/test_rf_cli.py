"""``convdoctor rf``: the table, the JSON contract, the plot, and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from convdoctor.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_table_names_the_layers_and_their_fields() -> None:
    code, out, _ = run("rf", "torchvision:resnet18", "--width", "140")
    assert code == 0
    assert "layer4" in out and "435" in out and "Focus layer" in out  # resnet18 layer4: 435 px


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
    code, out, _ = run("rf", "torchvision:resnet18", "--input", "1x3x128x128", "--method", "gradient",
                       "--layer", "layer1", "--json")
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


@pytest.mark.parametrize("args, needle", [
    (["--layer", "layer9"], "unknown layer 'layer9'; did you mean layer4, layer3, layer2?"),
    (["--object-size", "0"], "must be positive"),
    (["--object-size", "-4"], "must be positive"),
    (["--object-size", "wide"], "not an integer"),
    (["--method", "magic"], "choose analytic or gradient"),
    (["--input", "1x3"], "no spatial dims"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    code, out, err = run("rf", "torchvision:resnet18", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and needle in err, err
