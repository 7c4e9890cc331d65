"""The batch check: a sample's output must not change with its batch."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from convdoctor.audit import audit
from convdoctor.audit.batch import BATCH_RTOL, PROBES
from convdoctor.results.audit import CheckStatus
from tests.audit import zoo


def _batch(model: nn.Module, x: torch.Tensor, **kw):
    return audit(model, x, checks=["batch", "modes"], batch_sizes=(1, 4, 8), **kw)


def test_layer_subtracting_the_batch_mean_in_eval_is_caught_and_located() -> None:
    model = zoo.batch_mean_net().eval()
    x = zoo.images(16)
    report = _batch(model, x)
    (f,) = [f for f in report.findings if f.code == "BATCH_DEPENDENT_OUTPUT"]
    assert f.where == "1" and not report.has("BN_TRAIN_MODE")
    # independent: alone, x - mean(x) is 0; in a batch of 8 it is x_i - mean of the batch
    with torch.no_grad():
        z = model[0](x)
        in_batch8 = (z[:PROBES] - z[:8].mean(0, keepdim=True)).flatten(1)
        head = model[3]
        expected = (head(in_batch8) - head(torch.zeros_like(in_batch8))).abs().max()
    run8 = next(r for r in f.evidence["runs"] if r["run"] == "batch 8")
    assert run8["max_abs_diff"] == pytest.approx(float(expected), rel=1e-3)


def test_bn_in_training_mode_makes_outputs_batch_dependent() -> None:
    model = zoo.trained_like(zoo.bn_net()).train()
    report = _batch(model, zoo.images(16))
    (f,) = [f for f in report.findings if f.code == "BATCH_DEPENDENT_OUTPUT"]
    assert f.where == "1"  # the BatchNorm
    assert "model.eval()" in f.fix


@pytest.mark.parametrize("kind", ["group", "layer"])
def test_group_and_layer_norm_in_training_mode_are_not_batch_dependent(kind: str) -> None:
    report = _batch(zoo.norm_net(kind).train(), zoo.images(16))
    assert not report.has("BATCH_DEPENDENT_OUTPUT")
    record = report.check("batch")
    assert record.status is CheckStatus.PASS
    assert all(r["max_rel_diff"] <= BATCH_RTOL for r in record.evidence["runs"])
    assert {r["run"] for r in record.evidence["runs"]} == {"batch 4", "batch 8", "mixed 8"}


def test_active_dropout_alone_is_not_batch_dependence() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 8), nn.Dropout(0.5), nn.Linear(8, 2)).train()
    report = _batch(model, zoo.images(16))
    assert not report.has("BATCH_DEPENDENT_OUTPUT")
    assert report.has("DROPOUT_TRAIN_MODE")


def test_model_that_fails_on_one_sample_is_batch_dependent() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 6), nn.BatchNorm1d(6)).train()
    report = _batch(model, zoo.images(16))
    (f,) = [f for f in report.findings if f.code == "BATCH_DEPENDENT_OUTPUT"]
    assert "single sample" in f.message and "Expected more than 1 value" in f.evidence["error"]


def test_nondeterministic_model_is_skipped_not_misreported() -> None:
    report = audit(zoo.HardDropout().eval(), zoo.images(16), checks=["batch"])
    assert report.check("batch").status is CheckStatus.SKIPPED
    assert not report.has("BATCH_DEPENDENT_OUTPUT")


def test_dict_output_works() -> None:
    model = zoo.trained_like(zoo.DictBN()).eval()
    report = _batch(model, zoo.images(16))
    assert report.check("batch").status is CheckStatus.PASS
    (bad,) = [
        f for f in _batch(copy.deepcopy(model).train(), zoo.images(16)).findings if f.code == "BATCH_DEPENDENT_OUTPUT"
    ]
    assert bad.where == "bn"


def test_targets_add_the_accuracy_table_checked_against_a_manual_count() -> None:
    model = zoo.trained_like(zoo.bn_net()).train()
    x = zoo.images(24)
    y = torch.arange(24) % 4
    report = audit(model, x, targets=y, checks=["batch"], batch_sizes=(1, 8))
    table = report.incident
    assert table is not None and [r["batch_size"] for r in table["rows"]] == [1, 8]
    with torch.no_grad():
        eval_acc = (copy.deepcopy(model).eval()(x).argmax(1) == y).float().mean().item()
        train = copy.deepcopy(model).train()
        acc8 = sum(int((train(x[i : i + 8]).argmax(1) == y[i : i + 8]).sum()) for i in range(0, 24, 8)) / 24
    assert table["eval_accuracy"] == pytest.approx(eval_acc)
    assert table["rows"][1]["accuracy"] == pytest.approx(acc8)
    assert report.to_dict()["incident"] == table
