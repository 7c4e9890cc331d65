"""Small real training runs for the monitor tests: tiny CNNs on 8x8 digits, one fault each.

Every run is seeded and single-threaded-friendly (a few hundred steps of a model with a
few thousand parameters: about a second on one core).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from convdoctor.demo.training import digits
from convdoctor.monitor import Monitor

_DATA: dict[int, tuple[torch.Tensor, ...]] = {}


def data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val), cached."""
    if seed not in _DATA:
        _DATA[seed] = digits(seed)
    return _DATA[seed]


def plain_cnn(width: int = 16, bn: bool = False) -> nn.Module:
    """conv-(BN)-ReLU x2, max-pool, linear: a plain CNN for 1x8x8 inputs."""
    norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        norm(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        norm(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 16, 10),
    )


class Block(nn.Module):
    """A basic residual block (two 3x3 conv-BN, identity shortcut, functional ReLU)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class ResNetTiny(nn.Module):
    """Stem, three residual blocks, global average pool, linear head."""

    def __init__(self, c: int = 16, blocks: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.blocks = nn.Sequential(*[Block(c) for _ in range(blocks)])
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def deep_stack(depth: int, act: Callable[[], nn.Module], bn: bool = False, width: int = 8) -> nn.Module:
    """A plain (no shortcut) stack of ``depth`` 3x3 convs: the classic vanishing/exploding setting."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1)]
    for _ in range(depth - 1):
        layers += [nn.BatchNorm2d(width)] if bn else []
        layers += [act(), nn.Conv2d(width, width, 3, padding=1)]
    layers += [act(), nn.Flatten(), nn.Linear(width * 64, 10)]
    return nn.Sequential(*layers)


@dataclass
class Run:
    """One training run's settings; :func:`train` executes it."""

    model: Callable[[], nn.Module]
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    steps: int = 300
    batch_size: int = 32
    seed: int = 0
    every: int = 1
    epochs_val: bool = True
    subset: int | None = None
    transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    before: Callable[[nn.Module], Any] | None = None
    schedule: Callable[[torch.optim.Optimizer], Any] | None = None
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    extra: dict[str, Any] = field(default_factory=dict)


def train(run: Run) -> tuple[Monitor, nn.Module]:
    """Train ``run`` under a monitor (step after backward, before optimizer.step) and return both."""
    torch.manual_seed(run.seed)
    x, y, xv, yv = data(0)
    if run.subset is not None:
        x, y = x[: run.subset], y[: run.subset]
    if run.transform is not None:
        x, y = run.transform(x, y)
    model = run.model()
    if run.before is not None:
        run.before(model)
    opt = run.optimizer(model)
    sched = run.schedule(opt) if run.schedule else None
    mon = Monitor(model, num_classes=10, every=run.every)
    gen = torch.Generator().manual_seed(run.seed)
    step = 0
    while step < run.steps:
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(run.batch_size):
            out = model(x[idx])
            loss = run.criterion(out, y[idx])
            opt.zero_grad()
            loss.backward()
            mon.step(loss=loss, outputs=out, targets=y[idx], optimizer=opt)
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            if step >= run.steps:
                break
        if run.epochs_val:
            _validate(mon, model, xv, yv)
    mon.close()
    return mon, model


@torch.no_grad()
def _validate(mon: Monitor, model: nn.Module, xv: torch.Tensor, yv: torch.Tensor) -> None:
    model.eval()
    out = model(xv)
    model.train()
    mon.end_epoch(val_loss=float(F.cross_entropy(out, yv)), val_acc=float((out.argmax(1) == yv).float().mean()))


def ddp_worker(
    rank: int, world: int, init_file: str, out: str, steps: int, engine: str = "ddp", dead: bool = False
) -> None:
    """One rank of a 2-process gloo run of :func:`train_global` under DDP or FSDP2 (spawned by the tests)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mon, _ = train_global(steps, rank=rank, world=world, engine=engine, dead=dead)
        torch.save(
            {
                "findings": [f.to_dict() for f in mon.findings],
                "history": mon.history(),
                "report": mon.report().to_dict(),
            },
            f"{out}/rank{rank}.pt",
        )
        # both ranks done with every collective before either tears gloo down: one rank's
        # teardown while the other still had FSDP2 traffic aborted it once (SIGABRT,
        # "terminate called without an active exception"; 1 in 2 full runs, not reproduced in 4)
        dist.barrier()
    finally:
        dist.destroy_process_group()


#: Filters of the first conv whose bias is set so low that they never activate: dead ReLUs from
#: step 0. Under FSDP2 on 2 ranks rank 0 holds filters 0-7 and rank 1 filters 8-15, so the dead
#: ones lie on both.
DEAD_FILTERS = range(4, 12)


def kill_filters(model: nn.Module) -> None:
    """Bias -100 on :data:`DEAD_FILTERS` of the first conv (inputs are in [0, 1], weights ~0.3)."""
    with torch.no_grad():
        model[0].bias[DEAD_FILTERS.start : DEAD_FILTERS.stop] = -100.0


def train_global(
    steps: int, rank: int = 0, world: int = 1, lr: float = 1e-6, engine: str = "ddp", dead: bool = False
) -> tuple[Monitor, nn.Module]:
    """Global batches of 32 from a fixed order; with ``world > 1`` each rank takes its share of each
    batch, under DDP or FSDP2 (``engine="fsdp"``: ``fully_shard`` on both convs, the head and the root).

    ``lr=1e-6`` keeps the run numerically the same between one process and two (the update ratio
    is far too small: LR_MISMATCH, with the loss at chance attached), so verdicts and curves
    compare exactly. ``dead`` kills :data:`DEAD_FILTERS` (DEAD_RELU).
    """
    x, y, _, _ = data(0)
    torch.manual_seed(0)
    model: nn.Module = plain_cnn()
    if dead:
        kill_filters(model)
    if world > 1 and engine == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for i in (0, 3, 8):
            fully_shard(model[i])
        fully_shard(model)
    elif world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    mon = Monitor(model, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    step = 0
    while step < steps:
        for idx in torch.randperm(len(y) // 32 * 32, generator=gen).split(32):
            local = idx.chunk(world)[rank]
            out = model(x[local])
            loss = F.cross_entropy(out, y[local])
            opt.zero_grad()
            loss.backward()
            mon.step(loss=loss, outputs=out, targets=y[local], optimizer=opt)
            opt.step()
            step += 1
            if step >= steps:
                break
        mon.end_epoch()
    mon.close()
    return mon, model
