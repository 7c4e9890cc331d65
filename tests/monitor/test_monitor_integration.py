"""Real training runs on 8x8 digits: one per injected fault, each reporting exactly its expected
root codes (every other code quiet) with the side effects attached as consequences, and healthy
runs (plain CNN, residual net with momentum SGD and a schedule, fine-tune with a properly frozen
BatchNorm backbone, LeakyReLU nets) that raise no warning or error at all. docs/monitor.md
tabulates the faults from this file.

Evidence numbers are checked against what the test set up (the batch size it chose, the
layers it froze, the step at which the poisoned sample first enters a batch).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import torch
from monitor_zoo import ResNetTiny, Run, data, deep_stack, plain_cnn, train
from torch import nn
from torch.nn import functional as F

from convdoctor.findings import Finding, Severity
from convdoctor.fix import freeze_bn, param_groups


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: the runs are tiny, and results do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sgd(lr: float, momentum: float = 0.9) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr, momentum=momentum)


def linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


@functools.cache
def _pretrained_state() -> dict[str, torch.Tensor]:
    """A BatchNorm CNN trained 100 steps on digits: the 'pretrained backbone' of the fine-tunes."""
    torch.manual_seed(0)
    model = plain_cnn(bn=True)
    x, y, _, _ = data(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def finetune_model() -> nn.Module:
    """The pretrained CNN with a new head; the backbone's parameters frozen (requires_grad=False)."""
    model = plain_cnn(bn=True)
    model.load_state_dict(_pretrained_state())
    model[-1] = nn.Linear(512, 10)
    for p in model[:-1].parameters():
        p.requires_grad_(False)
    return model


class Detached(nn.Module):
    """A bug: the features are detached before the head, so the body never learns."""

    def __init__(self) -> None:
        super().__init__()
        self.body = plain_cnn()[:-1]
        self.head = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).detach())


POISONED = 7  # index of the training image that gets a NaN pixel


def nan_pixel(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone()
    x[POISONED, 0, 3, 3] = float("nan")
    return x, y


def imbalanced_shuffled_labels(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 is ~56% of the data and the labels were shuffled apart from their images."""
    keep = (y == 0) | (torch.arange(len(y)) % 12 == 0)
    x, y = x[keep], y[keep]
    return x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]


def noisy_labels(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """30% of the labels replaced at random: a small noisy set that a CNN memorises."""
    y = y.clone()
    gen = torch.Generator().manual_seed(3)
    flip = torch.rand(len(y), generator=gen) < 0.3
    y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=gen)
    return x, y


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, F.one_hot(y, 10).float())


def leaky_cnn(bn: bool = False) -> nn.Module:
    """The plain CNN with LeakyReLU(0.1) in place of every ReLU: no unit of it can die."""
    model = plain_cnn(bn=bn)
    for i, child in enumerate(model):
        if isinstance(child, nn.ReLU):
            model[i] = nn.LeakyReLU(0.1)
    return model


def dead_bn_bias(model: nn.Module) -> None:
    """BatchNorm biases at -5: every pre-activation starts far below zero."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.fill_(-5.0)


def constant_labels(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A label bug: a target_transform that returns 0 for every sample."""
    return x, torch.zeros_like(y)


def soft_labels_wrong_dim(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A label bug: label-smoothed targets normalised over the batch (dim 0) instead of the classes."""
    smooth = F.one_hot(y, 10).float() * 0.9 + 0.01
    return x, smooth / smooth.sum(0, keepdim=True) * 32


@dataclass(frozen=True)
class Fault:
    """A fault-injection run with the codes it must report, the codes it must attach to them as
    consequences, and (implicitly) every other monitor code, which must stay quiet."""

    run: Run
    reported: frozenset[str]
    attached: frozenset[str] = frozenset()


def fault(run: Run, reported: set[str], attached: set[str] = set()) -> Fault:  # noqa: B006
    return Fault(run, frozenset(reported), frozenset(attached))


FAULTS: dict[str, Fault] = {
    "NAN_LOSS": fault(Run(plain_cnn, sgd(0.05), transform=nan_pixel, steps=75), {"NAN_LOSS"}, {"CONSTANT_PREDICTION"}),
    # a schedule that grows the learning rate 2% per step (gamma=1.02, meant as 0.98)
    "LOSS_DIVERGING": fault(
        Run(plain_cnn, sgd(0.01), steps=250, schedule=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=1.02)),
        {"LOSS_DIVERGING"},
        {"LOSS_OSCILLATING"},
    ),
    "LOSS_OSCILLATING": fault(Run(linear, lambda m: torch.optim.Adam(m.parameters(), lr=2.0)), {"LOSS_OSCILLATING"}),
    # a learning rate 1e5 too small: the update ratio names the cause, the loss at chance follows
    "LOSS_AT_CHANCE": fault(
        Run(plain_cnn, sgd(1e-6), steps=150), {"LR_MISMATCH"}, {"CONSTANT_PREDICTION", "LOSS_AT_CHANCE"}
    ),
    "DEAD_RELU": fault(Run(plain_cnn, sgd(1.0), steps=200), {"LR_MISMATCH", "DEAD_RELU"}, {"LOSS_AT_CHANCE"}),
    "DEAD_RELU_INIT": fault(
        Run(lambda: plain_cnn(bn=True), sgd(0.05), steps=150, before=dead_bn_bias), {"DEAD_RELU"}, {"LOSS_AT_CHANCE"}
    ),
    # LeakyReLU blown up by a learning rate far too high: NaN weights give zero-looking gradients
    # for 100+ steps, but no unit of this net can die, and the NaN is the cause of what follows
    "NAN_LOSS_LEAKY": fault(
        Run(leaky_cnn, sgd(3.0), steps=150), {"NAN_LOSS", "EXPLODING_GRADIENT"}, {"CONSTANT_PREDICTION"}
    ),
    "VANISHING_GRADIENT": fault(
        Run(lambda: deep_stack(10, nn.Sigmoid), sgd(0.05), steps=150), {"VANISHING_GRADIENT"}, {"LOSS_AT_CHANCE"}
    ),
    "EXPLODING_GRADIENT": fault(
        Run(linear, sgd(2.0), criterion=mse, steps=100),
        {"EXPLODING_GRADIENT", "NAN_LOSS"},
        {"LOSS_DIVERGING", "LR_MISMATCH"},
    ),
    "OVERFITTING": fault(
        Run(
            plain_cnn,
            lambda m: torch.optim.Adam(m.parameters(), lr=3e-3),
            subset=128,
            batch_size=16,
            steps=250,
            transform=noisy_labels,
        ),
        {"OVERFITTING"},
    ),
    "CONSTANT_PREDICTION": fault(
        Run(plain_cnn, sgd(0.05), transform=imbalanced_shuffled_labels, steps=150),
        {"CONSTANT_PREDICTION"},
        {"LOSS_AT_CHANCE"},
    ),
    "CONSTANT_LABELS": fault(Run(plain_cnn, sgd(0.05), transform=constant_labels, steps=75), {"CONSTANT_PREDICTION"}),
    "DEGENERATE_TARGETS": fault(
        Run(plain_cnn, sgd(0.05), transform=soft_labels_wrong_dim, steps=50), {"DEGENERATE_TARGETS"}
    ),
    "BN_SMALL_BATCH": fault(Run(lambda: plain_cnn(bn=True), sgd(0.01), batch_size=4, steps=100), {"BN_SMALL_BATCH"}),
    "FROZEN_BN_UPDATING": fault(
        Run(finetune_model, sgd(0.005), batch_size=8, steps=100), {"FROZEN_BN_UPDATING"}, {"BN_SMALL_BATCH"}
    ),
    "NO_GRADIENT": fault(Run(Detached, sgd(0.05), steps=100), {"NO_GRADIENT"}),
    "LR_MISMATCH": fault(
        Run(
            plain_cnn,
            lambda m: torch.optim.SGD(param_groups(m, m[-1], 0.05, head_lr_mult=1e-5), momentum=0.9),
            steps=100,
        ),
        {"LR_MISMATCH"},
    ),
}
SLOW_FAULTS = {"VANISHING_GRADIENT", "OVERFITTING", "LOSS_DIVERGING", "DEAD_RELU_INIT", "NAN_LOSS_LEAKY"}

HEALTHY: dict[str, Run] = {
    "plain_cnn": Run(plain_cnn, sgd(0.05)),
    "resnet_momentum_cosine": Run(
        lambda: ResNetTiny(8),
        sgd(0.1),
        steps=200,
        schedule=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 200),
    ),
    "finetune_frozen_bn": Run(finetune_model, sgd(0.005), batch_size=8, steps=200, before=freeze_bn),
    # DEAD_RELU_INIT's BatchNorm biases at -5 behind LeakyReLU: the units recover, nothing is dead
    "leaky_dead_bn_bias": Run(lambda: leaky_cnn(bn=True), sgd(0.05), steps=150, before=dead_bn_bias),
    "leaky_cnn": Run(leaky_cnn, sgd(0.05), steps=150),
}
SLOW_HEALTHY = {"resnet_momentum_cosine", "leaky_cnn"}


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def consequences(findings: list[Finding]) -> set[str]:
    return {c["code"] for f in findings for c in f.evidence.get("consequences", [])}


@pytest.mark.parametrize("name", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_FAULTS else c for c in FAULTS])
def test_fault_is_named_and_nothing_else(name: str) -> None:
    """Recall and precision: the expected root codes are reported and every other code is quiet;
    the side effects the fault causes are attached to their root, not reported."""
    spec = FAULTS[name]
    mon, _ = train(spec.run)
    found = {f.code: f for f in mon.findings}
    assert set(found) == spec.reported, f"reported {codes(mon.findings)}, want {sorted(spec.reported)}"
    assert consequences(mon.findings) == spec.attached
    for f in found.values():
        assert f.fix and f.evidence["step"] <= spec.run.steps
    check = EVIDENCE.get(name)
    if check is not None:
        check(found)


def _first_poisoned_step() -> int:
    """Replays the training loop's batch order to find the first batch holding the poisoned image."""
    gen = torch.Generator().manual_seed(0)
    n = len(data(0)[1])
    step = 0
    while True:
        for idx in torch.randperm(n, generator=gen).split(32):
            if POISONED in idx.tolist():
                return step
            step += 1


EVIDENCE: dict[str, Callable[[dict[str, Finding]], None]] = {
    "NAN_LOSS": lambda f: _eq(f["NAN_LOSS"].evidence["first_step"], _first_poisoned_step()),
    "BN_SMALL_BATCH": lambda f: _eq(
        (f["BN_SMALL_BATCH"].evidence["batch_size"], f["BN_SMALL_BATCH"].evidence["bn_layers_training"]), (4, 2)
    ),
    "FROZEN_BN_UPDATING": lambda f: _eq(sorted(f["FROZEN_BN_UPDATING"].evidence["layers"]), ["1", "4"]),
    "NO_GRADIENT": lambda f: _eq(
        f["NO_GRADIENT"].evidence["parameters"], ["body.0.weight", "body.0.bias", "body.3.weight", "body.3.bias"]
    ),
    "LR_MISMATCH": lambda f: _eq(
        (f["LR_MISMATCH"].where, f["LR_MISMATCH"].evidence["lr"]), ("head", pytest.approx(0.05 * 1e-5))
    ),
    "CONSTANT_PREDICTION": lambda f: _eq(
        (f["CONSTANT_PREDICTION"].evidence["class"], f["CONSTANT_PREDICTION"].evidence["cause"]), (0, "model")
    ),
    "CONSTANT_LABELS": lambda f: _eq(
        (f["CONSTANT_PREDICTION"].evidence["target_class"], f["CONSTANT_PREDICTION"].evidence["cause"]),
        (0, "degenerate_targets"),
    ),
    # every one of the 32 rows of a batch is normalised over the batch, none sums to 1 (first sync)
    "DEGENERATE_TARGETS": lambda f: _eq(
        (
            f["DEGENERATE_TARGETS"].evidence["soft_rows_not_summing_to_1"],
            f["DEGENERATE_TARGETS"].evidence["first_step"],
        ),
        (32 * 25, 0),
    ),
    "VANISHING_GRADIENT": lambda f: _eq(
        (f["VANISHING_GRADIENT"].evidence["first_layer"], f["VANISHING_GRADIENT"].evidence["last_layer"]), ("0", "21")
    ),
    # the layers that died are the ReLU ones; the last linear (no activation after it) is never judged
    "DEAD_RELU_INIT": lambda f: _eq({x["activation"] for x in f["DEAD_RELU"].evidence["layers"]}, {"relu"}),
}


def _eq(got: object, want: object) -> None:
    assert got == want


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_HEALTHY else n for n in HEALTHY])
def test_healthy_run_raises_nothing(name: str) -> None:
    mon, _ = train(HEALTHY[name])
    loud = [f for f in mon.findings if f.severity in (Severity.ERROR, Severity.WARNING)]
    assert not loud, [f"{f.code}: {f.message}" for f in loud]
    assert mon.report().epochs[-1]["val_acc"] > 0.85  # the run really learned
