"""Load the data an audit runs on (``--data``).

Three layouts:

* a folder in ImageFolder layout (``root/<class>/<image>``), read with torchvision's
  ``ImageFolder``: each image is resized to ``H / 0.875`` on its short side and
  centre-cropped to ``H x W`` (torchvision's evaluation recipe); 3-channel images are
  normalised with the ImageNet mean and standard deviation, 1-channel ones are not;
* an ``.npz`` file with an array ``x`` (``N x C x H x W`` or the model's input layout)
  and optionally integer labels ``y`` (read with ``allow_pickle=False``);
* a ``.pt``/``.pth`` file holding a tensor ``x``, a tuple ``(x, y)`` or a dict with
  ``"x"`` and optionally ``"y"``, read with ``weights_only=True``.

At most ``limit`` samples are kept, evenly spaced over the file (an ImageFolder lists
images class by class, so the first ``limit`` would all be one class).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..capture.inputs import format_shape
from ..errors import UsageError

#: Samples kept by default: enough for the default batch sizes and a stable accuracy
#: figure, few enough that the accuracy table of a ResNet-50 stays under a minute.
DEFAULT_LIMIT = 256
#: torchvision's evaluation transforms resize to crop / 0.875 before centre-cropping.
RESIZE_RATIO = 0.875
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGE_SIZE = (3, 224, 224)


@dataclass(frozen=True)
class AuditData:
    """Samples to audit on.

    Attributes:
        x: inputs, ``(N, ...)`` float32.
        y: integer labels ``(N,)`` or None.
        source: where they came from, for the report.
        total: samples in the source before ``limit``.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    source: str
    total: int


def _subset(n: int, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    return torch.linspace(0, n - 1, limit).round().long().tolist()


def _from_folder(path: Path, input_size: tuple[int, ...] | None, limit: int) -> tuple[Any, Any, int]:
    try:
        from torchvision import datasets, transforms
    except ImportError as exc:  # optional dependency
        raise UsageError(
            "reading an image folder needs torchvision: pip install torchvision "
            "(or 'convdoctor[vision]'); or pass a .npz/.pt file of tensors"
        ) from exc

    size = input_size or (1, *_IMAGE_SIZE)
    if len(size) != 4 or size[1] not in (1, 3):
        raise UsageError(
            f"an ImageFolder gives 1- or 3-channel images; the input {format_shape(size)} is not N x 1|3 x H x W"
        )
    _, c, h, w = size
    steps: list[Any] = [transforms.Resize(round(min(h, w) / RESIZE_RATIO)), transforms.CenterCrop((h, w))]
    steps += [transforms.Grayscale(1)] if c == 1 else []
    steps.append(transforms.ToTensor())
    steps += [transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)] if c == 3 else []
    try:
        dataset = datasets.ImageFolder(str(path), transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as exc:
        raise UsageError(f"--data {path} is not an ImageFolder (root/<class>/<image>): {exc}") from exc
    idx = _subset(len(dataset), limit)
    try:
        items = [dataset[i] for i in idx]
    except OSError as exc:
        raise UsageError(f"--data {path}: cannot read an image: {exc}") from exc
    x = torch.stack([it[0] for it in items])
    y = torch.tensor([it[1] for it in items], dtype=torch.long)
    return x, y, len(dataset)


def _from_npz(path: Path) -> tuple[Any, Any]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise UsageError(f"--data {path} has arrays {archive.files}; it needs 'x' (and optionally 'y')")
            x = archive["x"]
            y = archive["y"] if "y" in archive.files else None
    except UsageError:
        raise
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read --data {path} as .npz: {exc}") from exc
    return torch.from_numpy(np.ascontiguousarray(x)), None if y is None else torch.from_numpy(np.asarray(y))


def _from_pt(path: Path) -> tuple[Any, Any]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors of every kind
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(f"cannot read --data {path} with weights_only=True: {type(exc).__name__}: {first}") from exc
    if isinstance(obj, torch.Tensor):
        return obj, None
    if isinstance(obj, (tuple, list)) and len(obj) in (1, 2):
        return obj[0], obj[1] if len(obj) == 2 else None
    if isinstance(obj, dict) and "x" in obj:
        return obj["x"], obj.get("y")
    raise UsageError(f"--data {path} must hold a tensor x, a tuple (x, y) or a dict with 'x' and optionally 'y'")


def validate_samples(x: Any, y: Any, input_size: tuple[int, ...] | None, source: str) -> tuple[torch.Tensor, Any]:
    """Check shapes and label types once, at the boundary; return float32 x and int64 y.

    Raises:
        UsageError: not tensors, fewer than 2 dims, a shape that disagrees with ``input_size``,
            labels that are not one integer per sample or are negative.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise UsageError(
            f"{source}: x must be a non-empty tensor of shape N x C x ..., got {getattr(x, 'shape', type(x).__name__)}"
        )
    if input_size is not None and tuple(x.shape[1:]) != tuple(input_size[1:]):
        raise UsageError(
            f"{source}: samples have shape {format_shape(x.shape[1:])} but the input is "
            f"{format_shape(input_size[1:])}; give data in the model's input layout"
        )
    x = x.float() if not x.is_floating_point() else x
    if y is None:
        return x, None
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise UsageError(
            f"{source}: y must hold one label per sample ({x.shape[0]}), "
            f"got shape {getattr(y, 'shape', type(y).__name__)}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise UsageError(f"{source}: labels must be integers (class indices), got {y.dtype}")
    if y.numel() and int(y.min()) < 0:
        raise UsageError(f"{source}: labels out of range: found {int(y.min())}; class indices start at 0")
    return x, y.long()


def load_data(
    path: str | os.PathLike[str], *, input_size: tuple[int, ...] | None = None, limit: int = DEFAULT_LIMIT
) -> AuditData:
    """Read ``--data`` (ImageFolder folder, ``.npz`` or ``.pt``) into tensors.

    Args:
        path: the folder or file.
        input_size: the model's input ``(N, C, H, W)``; sets the image size of a folder and
            is checked against the samples of a file.
        limit: keep at most this many samples, evenly spaced.

    Returns:
        The samples, labels and a description of the source.

    Raises:
        UsageError: missing path, unknown format, unreadable file, wrong shapes or labels.
    """
    p = Path(path)
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    if p.is_dir():
        x, y, total = _from_folder(p, input_size, limit)
        kind = "ImageFolder"
    elif not p.is_file():
        raise UsageError(f"--data {p} does not exist")
    elif p.suffix == ".npz":
        (x, y), kind = _from_npz(p), "npz"
    elif p.suffix in (".pt", ".pth"):
        (x, y), kind = _from_pt(p), "tensors"
    else:
        raise UsageError(f"--data {p}: expected an ImageFolder directory, an .npz or a .pt file")
    if p.is_file():
        x, y = validate_samples(x, y, input_size, f"--data {p}")
        total = int(x.shape[0])
        idx = torch.tensor(_subset(total, limit))
        x, y = x[idx], None if y is None else y[idx]
    return AuditData(x, y, f"{p} ({kind}, {x.shape[0]} of {total} samples)", total)
