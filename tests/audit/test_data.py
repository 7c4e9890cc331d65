"""--data loading: ImageFolder, .npz and .pt, validated once at the boundary."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convdoctor.audit import load_data
from convdoctor.audit.data import IMAGENET_MEAN, IMAGENET_STD
from convdoctor.errors import UsageError


def _folder(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    """Solid-colour 24x20 images: colour (10c + i, 100, 200) for image i of class c."""
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.empty((20, 24, 3), dtype=np.uint8)
            pixels[:] = (10 * c + i, 100, 200)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def test_image_folder_resizes_crops_and_normalises(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    data = load_data(root, input_size=(1, 3, 16, 16), limit=100)
    assert data.x.shape == (12, 3, 16, 16) and data.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # independent: a solid colour survives resizing and cropping; then (v / 255 - mean) / std per channel
    colour = torch.tensor([10 * 1 + 2, 100, 200], dtype=torch.float32) / 255  # class 1, image 2
    expected = (colour - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(data.x[6], expected[:, None, None].expand(3, 16, 16), atol=1e-5)


def test_limit_keeps_every_class(tmp_path: Path) -> None:
    data = load_data(_folder(tmp_path / "imgs"), input_size=(1, 3, 8, 8), limit=3)
    assert sorted(data.y.tolist()) == [0, 1, 2] and data.total == 12


def test_npz_with_labels(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(10, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 3)
    data = load_data(tmp_path / "d.npz")
    assert torch.equal(data.x, torch.from_numpy(x)) and data.y.tolist() == [i % 3 for i in range(10)]


@pytest.mark.parametrize("obj", ["tensor", "tuple", "dict"])
def test_pt_files(tmp_path: Path, obj: str) -> None:
    x, y = torch.randn(6, 3, 4, 4), torch.arange(6)
    payload = {"tensor": x, "tuple": (x, y), "dict": {"x": x, "y": y}}[obj]
    torch.save(payload, tmp_path / "d.pt")
    data = load_data(tmp_path / "d.pt", input_size=(1, 3, 4, 4))
    assert torch.equal(data.x, x)
    assert (data.y is None) == (obj == "tensor")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_object_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"x": object()}, fh)
    with pytest.raises(UsageError, match="weights_only=True"):
        load_data(tmp_path / "evil.pt")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((4, 5), np.float32)}, "samples have shape 5 but the input is 3x8x8"),
        ({"x": np.zeros((4, 3, 8, 8), np.float32), "y": np.array([0, 1, -1, 2])}, "labels out of range"),
        ({"x": np.zeros((4, 3, 8, 8), np.float32), "y": np.array([0.5, 1, 1, 2])}, "labels must be integers"),
        ({"x": np.zeros((4, 3, 8, 8), np.float32), "y": np.array([0, 1])}, "one label per sample"),
        ({"data": np.zeros((4, 3, 8, 8), np.float32)}, "it needs 'x'"),
    ],
)
def test_bad_files_raise_one_line_usage_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UsageError, match=message) as info:
        load_data(tmp_path / "d.npz", input_size=(1, 3, 8, 8))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["missing.npz", "data.csv"])
def test_missing_or_unknown_files(tmp_path: Path, name: str) -> None:
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(UsageError):
        load_data(tmp_path / name)


def test_empty_folder_is_not_an_image_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="ImageFolder"):
        load_data(tmp_path, input_size=(1, 3, 8, 8))
