"""Real training runs on 8x8 digits: thirteen with one injected fault each, named by its code,
and three healthy ones (plain CNN, residual net with momentum SGD and a schedule, fine-tune
with a properly frozen BatchNorm backbone) that raise no warning or error at all.

Evidence numbers are checked against what the test set up (the batch size it chose, the
layers it froze, the step at which the poisoned sample first enters a batch).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

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


FAULTS: dict[str, Run] = {
    "NAN_LOSS": Run(plain_cnn, sgd(0.05), transform=nan_pixel, steps=100),
    # a schedule that grows the learning rate 2% per step (gamma=1.02, meant as 0.98)
    "LOSS_DIVERGING": Run(plain_cnn, sgd(0.01), steps=250,
                          schedule=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=1.02)),
    "LOSS_OSCILLATING": Run(linear, lambda m: torch.optim.Adam(m.parameters(), lr=2.0)),
    "LOSS_AT_CHANCE": Run(plain_cnn, sgd(1e-6), steps=150),
    "DEAD_RELU": Run(plain_cnn, sgd(1.0), steps=200),
    "VANISHING_GRADIENT": Run(lambda: deep_stack(10, nn.Sigmoid), sgd(0.05), steps=150),
    "EXPLODING_GRADIENT": Run(linear, sgd(2.0), criterion=mse, steps=100),
    "OVERFITTING": Run(plain_cnn, lambda m: torch.optim.Adam(m.parameters(), lr=3e-3), subset=128, batch_size=16,
                       steps=250, transform=noisy_labels),
    "CONSTANT_PREDICTION": Run(plain_cnn, sgd(0.05), transform=imbalanced_shuffled_labels, steps=150),
    "BN_SMALL_BATCH": Run(lambda: plain_cnn(bn=True), sgd(0.01), batch_size=4, steps=100),
    "FROZEN_BN_UPDATING": Run(finetune_model, sgd(0.005), batch_size=8, steps=100),
    "NO_GRADIENT": Run(Detached, sgd(0.05), steps=100),
    "LR_MISMATCH": Run(plain_cnn, lambda m: torch.optim.SGD(param_groups(m, m[-1], 0.05, head_lr_mult=1e-5),
                                                            momentum=0.9), steps=100),
}
SLOW_FAULTS = {"VANISHING_GRADIENT", "OVERFITTING", "LOSS_DIVERGING"}

HEALTHY: dict[str, Run] = {
    "plain_cnn": Run(plain_cnn, sgd(0.05)),
    "resnet_momentum_cosine": Run(lambda: ResNetTiny(8), sgd(0.1), steps=200,
                                  schedule=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 200)),
    "finetune_frozen_bn": Run(finetune_model, sgd(0.005), batch_size=8, steps=200, before=freeze_bn),
}


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


@pytest.mark.parametrize("code", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_FAULTS else c for c in FAULTS])
def test_fault_is_named(code: str) -> None:
    mon, _ = train(FAULTS[code])
    found = {f.code: f for f in mon.findings}
    assert code in found, f"{code} not raised; got {codes(mon.findings)}"
    assert found[code].fix and found[code].evidence["step"] <= FAULTS[code].steps
    check = EVIDENCE.get(code)
    if check is not None:
        check(found[code])


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


EVIDENCE: dict[str, Callable[[Finding], None]] = {
    "NAN_LOSS": lambda f: _eq(f.evidence["first_step"], _first_poisoned_step()),
    "BN_SMALL_BATCH": lambda f: _eq((f.evidence["batch_size"], f.evidence["bn_layers_training"]), (4, 2)),
    "FROZEN_BN_UPDATING": lambda f: _eq(sorted(f.evidence["layers"]), ["1", "4"]),
    "NO_GRADIENT": lambda f: _eq(f.evidence["parameters"], ["body.0.weight", "body.0.bias", "body.3.weight",
                                                            "body.3.bias"]),
    "LR_MISMATCH": lambda f: _eq((f.where, f.evidence["lr"]), ("head", pytest.approx(0.05 * 1e-5))),
    "CONSTANT_PREDICTION": lambda f: _eq(f.evidence["class"], 0),
    "VANISHING_GRADIENT": lambda f: _eq((f.evidence["first_layer"], f.evidence["last_layer"]), ("0", "21")),
}


def _eq(got: object, want: object) -> None:
    assert got == want


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnet_momentum_cosine" else n
                                  for n in HEALTHY])
def test_healthy_run_raises_nothing(name: str) -> None:
    mon, _ = train(HEALTHY[name])
    loud = [f for f in mon.findings if f.severity in (Severity.ERROR, Severity.WARNING)]
    assert not loud, [f"{f.code}: {f.message}" for f in loud]
    assert mon.report().epochs[-1]["val_acc"] > 0.85  # the run really learned
