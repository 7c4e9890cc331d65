"""Small models that each break one inference assumption, for the audit tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bn_net(num_classes: int = 4, channels: int = 3) -> nn.Sequential:
    """Conv-BN-ReLU-pool-linear: the incident's shape in miniature."""
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-default statistics and affine parameters, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.num_batches_tracked.fill_(100)
    return model


def norm_net(kind: str) -> nn.Sequential:
    """Per-sample normalisation (GroupNorm or LayerNorm): no batch dependence in any mode."""
    norm = nn.GroupNorm(2, 8) if kind == "group" else nn.LayerNorm([8, 6, 6])
    return nn.Sequential(nn.Conv2d(3, 8, 3), norm, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))


class BatchMean(nn.Module):
    """Subtracts the batch mean even in eval mode (a home-made 'normalisation')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=0, keepdim=True)


def batch_mean_net() -> nn.Sequential:
    """Conv, then the batch-mean layer at index 1, then a head."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), BatchMean(), nn.Flatten(), nn.Linear(4 * 36, 3))


class HardDropout(nn.Module):
    """Calls ``F.dropout(x, training=True)``: random in eval mode too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.conv(x), 0.5, training=True).mean(dim=(2, 3))


class Counter(nn.Module):
    """Carries state between calls: adds how many times it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x).mean(dim=(2, 3)) + self.calls


class OwnFlag(nn.Module):
    """A custom layer that branches on ``self.training``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if self.training else x


def own_flag_net() -> nn.Sequential:
    """Conv, the custom layer at index 1, a head."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), OwnFlag(), nn.Flatten(), nn.Linear(4 * 36, 3))


class FixedBatch(nn.Module):
    """Reads the batch size as a Python int: eager works at any batch, exporters bake it in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        return self.fc(self.conv(x).reshape(n, -1))


class Branchy(nn.Module):
    """Python control flow on a tensor value."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean(dim=(2, 3))
        if x.mean() > 0:
            return y * 2
        return y


class DictBN(nn.Module):
    """BatchNorm inside, a dict of two heads out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.cls = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = torch.relu(self.bn(self.conv(x)))
        return {"logits": self.cls(f.mean(dim=(2, 3))), "features": f}


def images(n: int = 8, side: int = 8, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Reproducible random images ``(n, channels, side, side)``."""
    return torch.randn(n, channels, side, side, generator=torch.Generator().manual_seed(seed))
