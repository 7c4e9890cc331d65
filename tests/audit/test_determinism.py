"""The determinism check: the same input twice gives the same output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convdoctor.audit import audit
from convdoctor.audit.determinism import DETERMINISM_RTOL
from convdoctor.results.audit import CheckStatus
from tests.audit import zoo


def test_hard_coded_functional_dropout_is_nondeterministic() -> None:
    report = audit(zoo.HardDropout().eval(), zoo.images(), checks=["determinism", "modes"])
    (f,) = [f for f in report.findings if f.code == "NONDETERMINISTIC_OUTPUT"]
    assert f.where == ""  # born in the root's own forward, not in a child module
    assert f.evidence["max_rel_diff"] > DETERMINISM_RTOL
    assert not report.has("DROPOUT_TRAIN_MODE")  # no dropout module to blame


def test_state_carried_between_calls_is_caught() -> None:
    report = audit(zoo.Counter().eval(), zoo.images(), checks=["determinism"])
    (f,) = [f for f in report.findings if f.code == "NONDETERMINISTIC_OUTPUT"]
    # the counter adds 1 per call and a different batch ran in between: the runs are 2 apart
    assert f.evidence["max_abs_diff"] == pytest.approx(2.0)


def test_dropout_module_in_training_mode_is_named() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 8), nn.Dropout(0.5), nn.Linear(8, 2)).eval()
    model[2].train()
    report = audit(model, zoo.images(), checks=["determinism"])
    (f,) = [f for f in report.findings if f.code == "NONDETERMINISTIC_OUTPUT"]
    assert f.where == "2" and "Dropout is active" in f.fix


def test_deterministic_model_passes_bitwise() -> None:
    report = audit(zoo.trained_like(zoo.bn_net()).eval(), zoo.images(), checks=["determinism"])
    record = report.check("determinism")
    assert record.status is CheckStatus.PASS and record.evidence["max_abs_diff"] == 0.0


def test_bn_in_training_mode_is_deterministic_on_the_same_batch() -> None:
    # batch statistics of the same batch are the same: the batch check, not this one, reports it
    report = audit(zoo.trained_like(zoo.bn_net()).train(), zoo.images(), checks=["determinism"])
    assert not report.has("NONDETERMINISTIC_OUTPUT")


def test_global_rng_is_left_as_found() -> None:
    model, x = zoo.HardDropout().eval(), zoo.images()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    audit(model, x, checks=["determinism", "batch"])
    assert torch.equal(torch.get_rng_state(), before)
