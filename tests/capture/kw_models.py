"""Small models called the ways real CNNs are: by keyword, with extra arguments, with a list of images.

Importable as MODEL specs (``tests.capture.kw_models:kw_net``) for the CLI tests.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

#: side of the toy detector's images after its transform (min_size = max_size)
DETECTOR_SIDE = 32


class KwNet(nn.Module):
    """``forward(pixel_values, scale=1.0)``: a HuggingFace-style keyword input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, pixel_values: torch.Tensor, scale: float = 1.0) -> dict[str, torch.Tensor]:
        x = self.conv2(torch.relu(self.bn(self.conv1(pixel_values))))
        return {"logits": self.fc(self.pool(x).flatten(1)) * scale}


class TwoInputs(nn.Module):
    """``forward(image, mask)``: two tensor inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.mconv = nn.Conv2d(1, 4, 3)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.conv(image) * self.mconv(mask)


class ToyDetector(nn.Module):
    """Takes a list of ``CxHxW`` images like torchvision's detectors (same transform class)."""

    def __init__(self) -> None:
        super().__init__()
        self.transform = GeneralizedRCNNTransform(DETECTOR_SIDE, DETECTOR_SIDE, [0.0] * 3, [1.0] * 3)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1)
        )
        self.head = nn.Linear(6, 4)

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        batch, _ = self.transform(images)
        feats = self.backbone(batch.tensors).mean((2, 3))
        return [{"scores": s} for s in self.head(feats)]


def kw_net(train: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return KwNet().train(train)


def two_inputs() -> nn.Module:
    torch.manual_seed(0)
    return TwoInputs().eval()


def toy_detector() -> nn.Module:
    torch.manual_seed(0)
    return ToyDetector().eval()
