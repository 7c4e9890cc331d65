"""The article's debug guide (five symptoms) and its cheat sheet (three issues), one test per row of
``docs/findings.md`` "The debug guide, symptom by symptom": each reproduces the symptom on digits,
asserts the finding the row names and that it comes first (root cause first, the rest attached),
and checks its evidence against what the test set up or computed itself."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from monitor_zoo import Run, data, plain_cnn, train
from test_monitor_integration import FAULTS, dead_bn_bias, sgd
from torch import nn
from torch.nn import functional as F

import convdoctor
from convdoctor.findings import Finding, Severity
from convdoctor.fix import GradAccumulator
from convdoctor.monitor import histograms as H

DOCS = Path(__file__).resolve().parents[2] / "docs" / "findings.md"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def roots(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def attached(f: Finding) -> set[str]:
    return {c["code"] for c in f.evidence.get("consequences", [])}


def zero_init(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()


# ---------------------------------------------------------------------------- the five symptoms
def test_s01_loss_plateaus_at_ln10_is_poor_init() -> None:
    mon, model = train(Run(plain_cnn, sgd(0.05), steps=150, before=zero_init))
    assert roots(mon.findings) == ["POOR_INIT"]
    (f,) = mon.findings
    assert "LOSS_AT_CHANCE" in attached(f) and "DEAD_RELU" in attached(f)
    chance = next(c for c in f.evidence["consequences"] if c["code"] == "LOSS_AT_CHANCE")
    assert "of chance (2.3, the entropy of the labels)" in chance["message"]  # the guide's "2.3 for 10 classes"
    loss = np.array(mon.history()["loss"])
    assert abs(np.median(loss[-50:]) - np.log(10)) < 0.02  # the symptom: pinned at ln 10
    # "plot gradient histograms per layer": at step 0 every first-layer gradient sits in the zero bin,
    # as autograd on the zero-initialised model says
    fresh = plain_cnn()
    zero_init(fresh)
    x, y, _, _ = data(0)
    F.cross_entropy(fresh(x[:32]), y[:32]).backward()
    assert torch.count_nonzero(fresh[0].weight.grad) == 0
    first = mon.history()["histograms"]["steps"][0]
    row = first["grad"][first["layers"].index("0")]
    assert first["step"] == 0 and row[H.MAGNITUDES] == fresh[0].weight.numel() == sum(row[: H.BINS])
    assert "reinit(model, 'kaiming')" in f.fix


def test_s02_validation_oscillates_is_loss_oscillating() -> None:
    mon, _ = train(FAULTS["LOSS_OSCILLATING"].run)  # Adam at lr 2.0
    assert roots(mon.findings) == ["LOSS_OSCILLATING"]
    assert "lower the learning rate from 2 to" in mon.findings[0].fix


def test_s02_validation_diverges_is_exploding_gradient() -> None:
    mon, _ = train(FAULTS["EXPLODING_GRADIENT"].run)  # MSE on a linear model at lr 2.0
    first = mon.findings[0]
    assert first.code == "EXPLODING_GRADIENT" and "LOSS_DIVERGING" in attached(first)
    assert f"max_norm={first.evidence['suggested_clip_norm']:.3g}" in first.fix.replace(" ", "")


def test_s03_same_class_for_all_inputs_is_dead_relu() -> None:
    mon, model = train(Run(lambda: plain_cnn(bn=True), sgd(0.05), steps=150, before=dead_bn_bias))
    model.eval()
    with torch.no_grad():
        pred = model(data(0)[2]).argmax(1)
    assert pred.unique().numel() == 1  # the symptom: one class for every validation image
    assert roots(mon.findings) == ["DEAD_RELU"]
    f = mon.findings[0]
    assert "LOSS_AT_CHANCE" in attached(f) and "convdoctor.fix.leaky_relu(model)" in f.fix
    assert f.evidence["dead"] == f.evidence["units"]  # every unit of the worst layer


def test_s04_validation_loss_rises_is_overfitting() -> None:
    mon, _ = train(FAULTS["OVERFITTING"].run)
    assert roots(mon.findings) == ["OVERFITTING"]
    ev = mon.findings[0].evidence
    epochs = mon.report().epochs
    best = min(epochs, key=lambda e: e["val_loss"])
    assert ev["best_epoch"] == best["epoch"] and ev["val_loss_best"] == best["val_loss"]
    assert ev["train_loss_last"] < ev["train_loss_best_epoch"]


def test_s05_oom_with_large_images_memory_and_the_small_batch_that_follows() -> None:
    # the memory that runs out: activations grow with the batch and the image area. By hand, in
    # float32: conv (8 ch), BatchNorm (8 ch, plus its per-channel mean and inverse std), ReLU
    # (8 ch), conv (4 ch), per pixel of the batch
    fcn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    for n, side in ((1, 8), (16, 8), (1, 32), (4, 64)):
        pixels = n * side * side
        want = 4 * (8 + 8 + 8 + 4) * pixels + 4 * 2 * 8
        assert convdoctor.inspect(fcn.eval(), f"{n}x1x{side}x{side}").totals["activation_bytes"] == want
    # the advice "reduce the batch size" then leaves BatchNorm with batches of 4
    mon, _ = train(FAULTS["BN_SMALL_BATCH"].run)
    assert roots(mon.findings) == ["BN_SMALL_BATCH"]
    assert mon.findings[0].evidence["batch_size"] == 4 and "freeze_bn" in mon.findings[0].fix


# ---------------------------------------------------------------------------- the cheat sheet
@pytest.fixture(scope="module")
def trained_bn() -> nn.Module:
    torch.manual_seed(0)
    model = plain_cnn(bn=True)
    x, y, _, _ = data(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_c1_batchnorm_wrong_at_inference_is_bn_train_mode(trained_bn: nn.Module) -> None:
    model = copy.deepcopy(trained_bn).train()  # model.eval() forgotten
    _, _, xv, yv = data(0)
    report = convdoctor.audit(model, xv[:64], targets=yv[:64], checks="modes,batch", batch_sizes=(1, 8, 32))
    codes = roots(list(report.findings))
    assert codes[0] == "BN_TRAIN_MODE" and "BATCH_DEPENDENT_OUTPUT" in codes  # the cause, then what it does
    f = report.findings[0]
    assert f.severity is Severity.ERROR and f.evidence["count"] == 2 == f.evidence["total"]
    assert "prepare_for_inference" in f.fix
    with torch.no_grad():  # the symptom, measured directly: one sample alone vs in a batch of 32
        alone, batched = model(xv[:1]), model(xv[:32])[:1]
    assert (alone - batched).abs().max() > 1e-3


def test_c1_converted_checkpoint_is_bn_stats_uninitialized(trained_bn: nn.Module) -> None:
    state = {k: v for k, v in trained_bn.state_dict().items() if "running" not in k and "num_batches" not in k}
    model = plain_cnn(bn=True)
    model.load_state_dict(state, strict=False)
    _, _, xv, yv = data(0)
    report = convdoctor.audit(model.eval(), xv, targets=yv, checks="modes,bn_stats")
    f = report.findings[0]
    assert f.code == "BN_STATS_UNINITIALIZED" and f.severity is Severity.ERROR
    with torch.no_grad():
        before = float((model(xv).argmax(1) == yv).float().mean())
    assert f.evidence["recalibration"]["accuracy_before"] == pytest.approx(before)
    assert f.evidence["recalibration"]["accuracy_after"] > before


class Depthwise(nn.Module):
    """The "lighter backbone": depthwise-separable convs, fewer MACs than :func:`plain_cnn`."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16),
            nn.Conv2d(16, 32, 1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32),
            nn.Conv2d(32, 32, 1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(512, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


def test_c2_single_image_latency_fewer_macs_is_not_faster() -> None:
    torch.manual_seed(0)
    report = convdoctor.compare({"plain": plain_cnn().eval(), "depthwise": Depthwise().eval()}, "1x1x8x8")
    macs = {r.model: r.macs for r in report.rows}
    # by hand: Cout * Cin/groups * k * k * H * W per conv, in * out per linear
    assert macs["plain"] == 16 * 9 * 64 + 32 * 16 * 9 * 64 + 512 * 10
    assert macs["depthwise"] == 16 * 9 * 64 + 16 * 9 * 64 + 32 * 16 * 64 + 32 * 9 * 64 + 32 * 32 * 64 + 512 * 10
    (f,) = [f for f in report.findings if f.code == "MACS_NOT_LATENCY"]
    assert f.where == "depthwise@1" and f.evidence["macs_ratio"] == pytest.approx(macs["depthwise"] / macs["plain"])


def test_c3_training_oom_gradient_accumulation_and_batchnorm() -> None:
    torch.manual_seed(0)
    x, y, _, _ = data(0)
    model = plain_cnn()
    big = copy.deepcopy(model)
    F.cross_entropy(big(x[:16]), y[:16]).backward()  # the batch of 16 that did not fit, by autograd
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    acc = GradAccumulator(opt, steps=4)
    for chunk in range(4):
        acc.backward(F.cross_entropy(model(x[4 * chunk : 4 * chunk + 4]), y[4 * chunk : 4 * chunk + 4]))
    assert acc.ready
    for p, q in zip(model.parameters(), big.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    # ...but BatchNorm still normalises batches of 4: the monitor says so, and what to do about it
    mon, _ = train(Run(lambda: plain_cnn(bn=True), sgd(0.01), batch_size=4, steps=100))
    assert roots(mon.findings) == ["BN_SMALL_BATCH"] and mon.findings[0].evidence["batch_size"] == 4


def test_every_row_is_documented_with_a_test() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("# The debug guide, symptom by symptom", 1)[1].split("\n# ", 1)[0]
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", section))
    here = {n for n in globals() if n.startswith("test_") and n != "test_every_row_is_documented_with_a_test"}
    assert named == here
