"""The accuracy table finds the class scores in dict/tuple outputs and never cancels the audit."""

from __future__ import annotations

import copy
from collections import namedtuple
from typing import Any

import pytest
import torch
from torch import nn

from convdoctor import audit
from convdoctor.audit._tensors import find_scores
from convdoctor.results.audit import CheckStatus
from tests.audit import zoo

Pair = namedtuple("Pair", ["aux", "logits"])


class Wrapped(nn.Module):
    """A bn_net whose (N, 4) scores are wrapped by ``wrap`` together with other outputs."""

    def __init__(self, wrap: Any) -> None:
        super().__init__()
        self.net = zoo.trained_like(zoo.bn_net()).train()  # BatchNorm in training mode: accuracy moves
        self.wrap = wrap

    def forward(self, x: torch.Tensor) -> Any:
        return self.wrap(self.net(x), x)


WRAPS = {
    "dict-logits": (lambda s, x: {"feat": x.mean((2, 3)), "logits": s}, "output['logits']"),
    "dict-out": (lambda s, x: {"out": s, "aux": x.mean((2, 3))}, "output['out']"),
    "tuple-one-2d": (lambda s, x: (x, s), "output[1]"),
    "namedtuple": (lambda s, x: Pair(s * 2, s), "output['logits']"),
}


@pytest.mark.parametrize("name", list(WRAPS))
def test_targets_with_structured_outputs_give_the_accuracy_table(name: str) -> None:
    wrap, expected = WRAPS[name]
    x = zoo.images(16)
    y = torch.arange(16) % 4
    model = Wrapped(wrap)
    report = audit(model, x, targets=y, batch_sizes=(1, 8), checks=["batch", "modes"])
    assert report.input["scores"] == expected
    batch = report.check("batch")
    assert batch.status is not CheckStatus.ERROR
    incident = batch.evidence["incident"]
    assert incident["scores"] == expected
    # the accuracy is the plain one computed here on the same scores, in eval mode
    with torch.no_grad():
        scores = copy.deepcopy(model).eval().net(x)
    assert incident["eval_accuracy"] == pytest.approx(float((scores.argmax(1) == y).float().mean()))


def test_ambiguous_or_missing_scores_skip_only_the_table() -> None:
    x, y = zoo.images(8), torch.arange(8) % 4
    two = Wrapped(lambda s, x: (s, s + 1))
    report = audit(two, x, targets=y, batch_sizes=(1, 8), checks=["batch", "modes"])
    assert report.input["scores"] is None
    assert "several (N, C) tensors" in report.input["accuracy_skipped"]
    assert report.check("batch").status is not CheckStatus.ERROR
    assert "incident" not in report.check("batch").evidence
    assert {c.name for c in report.checks} == {"batch", "modes"}
    chosen = audit(two, x, targets=y, batch_sizes=(1, 8), checks=["batch"], scores=1)
    assert chosen.input["scores"] == "output[1]" and "incident" in chosen.check("batch").evidence


def test_find_scores_order() -> None:
    s = torch.zeros(2, 5)
    assert find_scores(s)[0].describe() == "output"
    assert find_scores({"a": s, "b": s})[0] is None
    assert find_scores({"a": s, "logits": s})[0].describe() == "output['logits']"
    assert find_scores({"a": torch.zeros(2, 5, 4, 4)})[0] is None
    assert find_scores((s, s), key=1)[0].describe() == "output[1]"
    assert "is not (N, classes)" in find_scores((s, s), key="nope")[1]
