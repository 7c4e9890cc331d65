"""``--input NAME=NxCxHxW`` (and the other forms) in every verb of the command line.

Numbers come back through ``--json`` and are checked against an independent count:
parameters = ``sum(p.numel())``, MACs = ``FlopCounterMode`` on a real keyword forward.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from convdoctor.cli import main
from tests.capture.kw_models import DETECTOR_SIDE, kw_net, toy_detector, two_inputs
from tests.capture.test_inputs import n_params, oracle_macs

KW = "tests.capture.kw_models:kw_net"
TWO = "tests.capture.kw_models:two_inputs"
DET = "tests.capture.kw_models:toy_detector"
FAST_BENCH = ["--min-run-time", "0", "--no-cold-start"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "verb, extra",
    [
        ("inspect", []),
        ("rf", []),
        ("audit", ["--checks", "modes,batch,export", "--batch-sizes", "1,2"]),
        ("bench", ["--batch-sizes", "2", *FAST_BENCH]),
        ("check", ["--batch-sizes", "1,2", "--no-bench"]),
    ],
)
def test_keyword_input_in_every_verb(verb: str, extra: list[str]) -> None:
    code, out, err = run(verb, KW, "--input", "pixel_values=2x3x8x8", "--json", *extra)
    assert code == 0, err
    doc = json.loads(out)
    model = kw_net()
    macs = oracle_macs(model, kwargs={"pixel_values": torch.randn(2, 3, 8, 8)})
    if verb == "inspect":
        assert doc["totals"]["params"] == n_params(model) and doc["totals"]["macs"] == macs
    elif verb == "rf":
        sizes = {layer["name"]: layer["size"] for layer in doc["layers"]}
        assert sizes["conv1"] == [3, 3] and sizes["conv2"] == [5, 5]  # two stacked 3x3 convolutions
    elif verb == "audit":
        status = {c["name"]: c["status"] for c in doc["checks"]}
        assert status["batch"] == "pass" and status["export"] == "skipped"
    elif verb == "bench":
        assert doc["results"][0]["batch_size"] == 2 and doc["results"][0]["macs"] == macs
    else:
        assert doc["inspect"]["totals"]["macs"] == macs and not doc["skipped"]


def test_several_named_inputs_and_a_detector_image() -> None:
    code, out, err = run("inspect", TWO, "--input", "image=1x3x10x10", "--input", "mask=1x1x10x10", "--json")
    assert code == 0, err
    oracle = oracle_macs(two_inputs(), kwargs={"image": torch.randn(1, 3, 10, 10), "mask": torch.randn(1, 1, 10, 10)})
    assert json.loads(out)["totals"]["macs"] == oracle
    side = DETECTOR_SIDE
    code, out, err = run("inspect", DET, "--input", f"3x{side}x{side}", "--json")
    assert code == 0, err
    assert json.loads(out)["totals"]["macs"] == oracle_macs(toy_detector(), ([torch.randn(3, side, side)],))
    code, out, err = run("bench", DET, "--input", f"3x{side}x{side}", "--json", *FAST_BENCH)
    assert code == 0, err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["inspect", KW, "--input", "1x3x8x8", "--input", "1x3x8x8"], "several input sizes must each be named"),
        (["inspect", KW, "--input", "9x=1x3x8x8"], "not a Python name"),
        (["audit", TWO, "--input", "image=1x3x8x8", "--input", "mask=1x1x8x8"], "varies the batch of one input tensor"),
        (["bench", TWO, "--input", "image=1x3x8x8", "--input", "mask=1x1x8x8"], "varies the batch of one input tensor"),
        (["rf", KW, "--input", "pixel_values=1x3x8x8", "--method", "gradient"], "method='analytic'"),
    ],
)
def test_bad_input_forms_are_one_line_exit_2(args: list[str], needle: str) -> None:
    code, out, err = run(*args)
    assert code == 2, (out, err)
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in out + err


def test_audit_weights_and_mode_reach_the_api(tmp_path: Path) -> None:
    state = kw_net().state_dict()
    state["bn.running_var"][0] = -1.0  # negative variance: only the loaded checkpoint has it
    ckpt = tmp_path / "neg.pt"
    torch.save(state, ckpt)
    code, out, _ = run(
        "audit", KW, "--weights", str(ckpt), "--input", "pixel_values=1x3x8x8", "--checks", "bn_stats", "--json"
    )
    assert "BN_STATS_INVALID" in {f["code"] for f in json.loads(out)["findings"]}
    code, out, _ = run(
        "audit", f"{KW}?train=True", "--mode", "as-is", "--input", "pixel_values=1x3x8x8", "--checks", "modes", "--json"
    )
    assert code == 1 and "BN_TRAIN_MODE" in {f["code"] for f in json.loads(out)["findings"]}
