"""Fixtures for the bench tests: a private peaks cache and a fresh tiny model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from bench_helpers import tiny_cnn


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep the peaks cache out of ~/.cache; one probe per session."""
    path = tmp_path_factory.mktemp("convdoctor-cache")
    old = os.environ.get("CONVDOCTOR_CACHE_DIR")
    os.environ["CONVDOCTOR_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("CONVDOCTOR_CACHE_DIR", None)
    else:
        os.environ["CONVDOCTOR_CACHE_DIR"] = old


@pytest.fixture
def tiny() -> torch.nn.Module:
    """The tiny CNN in training mode (BatchNorm and Dropout active), fresh per test."""
    torch.manual_seed(0)
    return tiny_cnn(8)
