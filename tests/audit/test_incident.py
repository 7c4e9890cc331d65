"""incident_table: the BatchNorm incident on the user's own model, for the demo and the report."""

from __future__ import annotations

import copy

import pytest
import torch

from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.audit import incident_table
from convdoctor.errors import UsageError
from tests.audit import zoo


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """bn_net()'s conv and linear weights come from the global RNG: seed it, so the labels the
    eval model assigns (and so every accuracy below) are the same on every run. Seeds 0, 2 and 3
    give an init whose eval model puts all 40 images in one class (the premise fails), so
    before this fixture the test passed or failed with whatever RNG state earlier tests left."""
    torch.manual_seed(1)


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    with torch.no_grad():
        hits = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


def test_table_matches_manual_accuracy_and_leaves_the_model_alone() -> None:
    model = zoo.trained_like(zoo.bn_net()).train()
    x = zoo.images(40) + torch.linspace(-3, 3, 40)[:, None, None, None]  # brightness carries the class
    with torch.no_grad():
        y = copy.deepcopy(model).eval()(x).argmax(1)  # labels the eval model gets right: 100% in eval
    assert len(set(y.tolist())) > 1
    digest, flags, rng = state_dict_digest(model), training_flags(model), torch.get_rng_state()
    table = incident_table(model, x, y, batch_sizes=(1, 8, 64))
    assert state_dict_digest(model) == digest and training_flags(model) == flags
    assert torch.equal(torch.get_rng_state(), rng)
    assert table["eval_accuracy"] == 1.0 and table["samples"] == 40 and table["batchnorm_training"] == 1
    for row in table["rows"]:
        expected = _accuracy(copy.deepcopy(model).train(), x, y, row["batch_size"])
        assert row["accuracy"] == pytest.approx(expected), row
    assert table["worst_drop"] == pytest.approx(1.0 - min(r["accuracy"] for r in table["rows"]))
    assert table["worst_drop"] > 0


def test_batch_that_cannot_run_is_reported_per_row() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 4), torch.nn.BatchNorm1d(4)).train()
    x, y = zoo.images(9), torch.zeros(9, dtype=torch.long)
    table = incident_table(model, x, y, batch_sizes=(1, 4))
    assert table["rows"][0]["accuracy"] is None and "Expected more than 1 value" in table["rows"][0]["error"]
    # batch 4 over 9 samples leaves a last batch of 1, which cannot run either
    assert table["rows"][1]["accuracy"] is None


@pytest.mark.parametrize(
    "x, y",
    [(torch.zeros(4, 3, 8, 8), torch.zeros(3, dtype=torch.long)), (torch.zeros(4), torch.zeros(4, dtype=torch.long))],
)
def test_bad_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    with pytest.raises(UsageError):
        incident_table(zoo.bn_net(), x, y)
