"""A few seconds of monitored training on scikit-learn's 8x8 digits, healthy or with one fault.

``convdoctor demo`` shows a healthy run and a sick one side by side::

    healthy = train_digits()
    sick = train_digits(fault="high_lr")
    healthy.report(), sick.report()
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UsageError
from ..monitor import Monitor

#: The faults the demo can inject, each with the finding code it raises (others may join it).
FAULTS: dict[str, str] = {
    "high_lr": "DEAD_RELU",  # SGD at 50x the learning rate: the ReLUs die in the first
    # large steps and the loss falls back to chance
    "low_lr": "LOSS_AT_CHANCE",  # a learning rate 1e5 times too small: nothing moves
    "dead_init": "DEAD_RELU",  # BatchNorm biases initialised to -5: the ReLUs never open
    "small_batch": "BN_SMALL_BATCH",  # BatchNorm trained on batches of 4
}


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as ``(x_train, y_train, x_val, y_val)``: 1,497 / 300 images, 1x8x8 in [0, 1].

    Args:
        seed: seed of the train/validation split.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return x[300:], y[300:], x[:300], y[:300]


class DigitsNet(nn.Module):
    """Two 3x3 conv layers with BatchNorm and a linear classifier: 9,978 parameters."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of 1x8x8 images."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        out: torch.Tensor = self.fc(x.flatten(1))
        return out


def train_digits(
    lr: float = 0.05, steps: int = 300, fault: str | None = None, *, batch_size: int = 32, seed: int = 0, every: int = 1
) -> Monitor:
    """Train :class:`DigitsNet` with momentum SGD under a :class:`Monitor` and return the monitor.

    Args:
        lr: learning rate (``fault="high_lr"`` multiplies it by 50, ``"low_lr"`` divides it by 1e5).
        steps: optimizer steps (about 47 per epoch at batch 32).
        fault: None for a healthy run, or a key of :data:`FAULTS`.
        batch_size: training batch size (``fault="small_batch"`` uses 4).
        seed: seeds the initialisation and the batch order.
        every: the monitor's sampling interval for costly statistics.

    Returns:
        The monitor, with one ``end_epoch`` per pass over the data and a final one.

    Raises:
        UsageError: an unknown fault.
    """
    if fault is not None and fault not in FAULTS:
        raise UsageError(f"unknown fault {fault!r}; choose one of {', '.join(FAULTS)}")
    torch.manual_seed(seed)
    x, y, xv, yv = digits(seed)
    model = DigitsNet()
    lr, batch_size = _apply_fault(fault, model, lr, batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    mon = Monitor(model, num_classes=10, every=every)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    while step < steps:
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):  # type: ignore[no-untyped-call]
            out = model(x[idx])
            loss = F.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            mon.step(loss=loss, outputs=out, targets=y[idx], optimizer=opt)
            opt.step()
            step += 1
            if step >= steps:
                break
        _end_epoch(mon, model, xv, yv)
    mon.close()
    return mon


def _apply_fault(fault: str | None, model: nn.Module, lr: float, batch_size: int) -> tuple[float, int]:
    actions: dict[str, Callable[[], tuple[float, int]]] = {
        "high_lr": lambda: (lr * 50, batch_size),
        "low_lr": lambda: (lr * 1e-5, batch_size),
        "small_batch": lambda: (lr, 4),
        "dead_init": lambda: _dead_init(model, lr, batch_size),
    }
    return actions[fault]() if fault else (lr, batch_size)


def _dead_init(model: nn.Module, lr: float, batch_size: int) -> tuple[float, int]:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.fill_(-5.0)
    return lr, batch_size


@torch.no_grad()
def _end_epoch(mon: Monitor, model: nn.Module, xv: torch.Tensor, yv: torch.Tensor) -> None:
    was = model.training
    model.eval()
    out = model(xv)
    model.train(was)
    mon.end_epoch(val_loss=float(F.cross_entropy(out, yv)), val_acc=float((out.argmax(1) == yv).float().mean()))
