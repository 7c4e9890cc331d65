"""Shared pytest configuration: golden-file regeneration and markers."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import settings as hypothesis_settings

# Tests are small: one intra-op thread keeps them fast and stable on 2 shared cores.
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")
# Compiled int8 packages go to a cache of this run (subprocesses inherit it), never the
# developer's ~/.cache: a test sees a cold cache unless an earlier test of the run filled it.
os.environ["CONVDOCTOR_CACHE_DIR"] = _CACHE = tempfile.mkdtemp(prefix="convdoctor-test-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

# Property tests draw the same examples on every run and machine: a failure in CI reproduces
# locally with the same seed, and a pass is not luck of the draw. Each @settings states its
# max_examples (the example count); no example database, so no run depends on an earlier one.
# HYPOTHESIS_PROFILE=explore gives random draws for hunting new counterexamples by hand.
hypothesis_settings.register_profile("convdoctor", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, database=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "convdoctor"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/* from current output")


GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """Whether golden files should be rewritten instead of compared."""
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def golden(update_golden: bool) -> Callable[[str, str], None]:
    """``golden(name, text)``: compare rendered text with ``tests/golden/name``, or rewrite it
    under ``--update-golden``. A missing golden fails: a check that writes its own expectation
    could never go red (the file is written only when asked, then reviewed in the diff)."""
    return make_golden_check(GOLDEN, update_golden)


def make_golden_check(folder: Path, update: bool) -> Callable[[str, str], None]:
    """The comparison behind the ``golden`` fixture, over any folder (tests point it at tmp_path)."""

    def check(name: str, text: str) -> None:
        path = folder / name
        if update:
            path.write_text(text, encoding="utf-8")
            return
        if not path.exists():
            pytest.fail(f"golden file {name} is missing; create it with --update-golden and review it")
        assert text == path.read_text(encoding="utf-8"), f"{name} changed; rerun with --update-golden if intended"

    return check


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
