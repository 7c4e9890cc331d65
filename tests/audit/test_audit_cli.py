"""``convdoctor audit`` on the command line: results, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from convdoctor.cli import main
from tests.audit import zoo

MODELS = """
import torch
from torch import nn

def net(train=False):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    return m.train(train)
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "models.py").write_text(MODELS)
    x = zoo.images(12, side=6, channels=1).numpy()
    np.savez(tmp_path / "good.npz", x=x, y=np.arange(12) % 3)
    np.savez(tmp_path / "wrong_shape.npz", x=np.zeros((4, 3, 6, 6), np.float32))
    np.savez(tmp_path / "bad_labels.npz", x=x, y=np.arange(12))
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    torch.save({"0.weight": torch.zeros(4, 1, 3, 3)}, tmp_path / "partial.pt")
    return {p.stem: str(p) for p in tmp_path.iterdir()} | {"model": f"{tmp_path / 'models.py'}:net"}


def _run(*args: str):
    return CliRunner().invoke(main, ["audit", *args])


def test_json_document_with_checks_and_incident(files: dict[str, str]) -> None:
    result = _run(
        files["model"], "--data", files["good"], "--checks", "modes,batch,bn_stats", "--json", "--batch-sizes", "1,4"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == "audit" and doc["model"] == files["model"]
    assert [c["name"] for c in doc["checks"]] == ["modes", "batch", "bn_stats"]
    assert all({"name", "status", "evidence"} <= set(c) for c in doc["checks"])
    assert [r["batch_size"] for r in doc["incident"]["rows"]] == [1, 4]
    assert doc["input"]["samples"] == 12 and doc["input"]["targets"] is True


def test_train_mode_model_exits_1_with_the_incident_table(files: dict[str, str]) -> None:
    result = _run(
        f"{files['model']}?train=True",
        "--mode",
        "as-is",
        "--data",
        files["good"],
        "--checks",
        "modes,batch",
        "--batch-sizes",
        "1,4",
        "--width",
        "140",
    )
    assert result.exit_code == 1, result.output
    assert "BN_TRAIN_MODE" in result.stdout and "Accuracy by batch size" in result.stdout


@pytest.mark.parametrize("mode", ["eval", "auto"])
def test_factory_models_are_audited_after_eval_by_default(files: dict[str, str], mode: str) -> None:
    result = _run(f"{files['model']}?train=True", "--mode", mode, "--input", "1x1x6x6", "--checks", "modes", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (modes,) = doc["checks"]
    # the factory built it in train mode; the audited model has its one BatchNorm in eval
    assert modes["name"] == "modes" and modes["status"] == "pass"
    assert modes["evidence"]["batchnorm_total"] == 1 and modes["evidence"]["batchnorm_training"] == 0
    assert modes["evidence"]["training_modules"] == 0
    assert not {"BN_TRAIN_MODE", "DROPOUT_TRAIN_MODE"} & {f["code"] for f in doc["findings"]}


def test_as_is_keeps_the_factory_train_mode(files: dict[str, str]) -> None:
    """The control for the test above: without eval, the same model's BatchNorm is found training."""
    result = _run(
        f"{files['model']}?train=True", "--mode", "as-is", "--input", "1x1x6x6", "--checks", "modes", "--json"
    )
    assert result.exit_code == 1, result.output
    (modes,) = json.loads(result.stdout)["checks"]
    assert modes["status"] == "fail" and modes["evidence"]["batchnorm_training"] == 1


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_torchscript_file_keeps_its_saved_training_mode(files: dict[str, str], tmp_path: Path) -> None:
    scripted = torch.jit.script(zoo.bn_net(channels=1).train())
    scripted.save(str(tmp_path / "train_mode.pt"))
    result = _run(str(tmp_path / "train_mode.pt"), "--trust-file", "--input", "1x1x6x6", "--checks", "batch", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    (batch,) = doc["checks"]
    assert batch["status"] == "fail" and "BATCH_DEPENDENT_OUTPUT" in [f["code"] for f in doc["findings"]]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "wrong_shape"], "cannot run on inputs of shape 3x6x6"),
        (["--data", "wrong_shape", "--input", "1x1x6x6"], "samples have shape 3x6x6 but the input is 1x6x6"),
        (["--data", "bad_labels"], "labels out of range"),
        (["--checks", "modes,batchh"], "unknown audit check 'batchh' (did you mean batch?)"),
        (["--weights", "broken"], "cannot read checkpoint"),
        (["--weights", "partial"], "does not match the model"),
        (["--batch-sizes", "1,x"], "batch sizes must be integers"),
        (["--data", "missing.npz"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(files: dict[str, str], args: list[str], message: str) -> None:
    args = [files.get(a, a) for a in args]
    result = _run(files["model"], *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output
