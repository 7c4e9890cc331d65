"""The int8 package cache loads only what it wrote: a planted, swapped or linked package, or any
package in a folder others can write, is never loaded; a warning says why and the rebuilt
package is right. A stand-in compiler and loader (bytes naming a model) keep this instant;
``test_serve.py`` runs the same paths with real AOTInductor packages."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from convdoctor import _cache
from convdoctor.cli import main
from convdoctor.quant import CompiledInt8, serve

#: What the stand-in compiler writes: a package of *this* model.
GOOD = b"package of the model being served"
#: Another model's package (its outputs are off by 0.36, as in the report).
OTHER = b"package of a different model"
OFF_BY = 0.36


def _reference() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()).eval()


@dataclass
class Harness:
    """The cache folder, and every load the stand-in loader saw: (path, bytes)."""

    cache: Path
    reference: nn.Module
    loads: list[tuple[Path, bytes]] = field(default_factory=list)
    compiles: list[str] = field(default_factory=list)
    x: torch.Tensor = field(default_factory=lambda: torch.rand(2, 1, 6, 6))

    def serve(self) -> tuple[CompiledInt8, torch.Tensor]:
        model = CompiledInt8(self.reference, self.reference)
        with torch.no_grad():
            out = model(self.x)
        return model, out

    def expected(self) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = self.reference(self.x)
        return out

    @property
    def loaded_bytes(self) -> list[bytes]:
        return [data for _, data in self.loads]


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    h = Harness(tmp_path / "cache", _reference())
    monkeypatch.setenv(_cache.CACHE_ENV, str(h.cache))

    def compile_(_program: object, path: str, _options: object) -> str:
        h.compiles.append(path)
        Path(path).write_bytes(GOOD)
        return path

    def load(path: str) -> Callable[..., Any]:
        data = Path(path).read_bytes()
        h.loads.append((Path(path), data))
        return h.reference if data == GOOD else (lambda x: h.reference(x) + OFF_BY)

    monkeypatch.setattr(serve, "aoti_compile", compile_)
    monkeypatch.setattr(serve, "aoti_load", load)
    yield h


def _package(h: Harness) -> Path:
    """Serve once into a trusted cache: the package's path (it and its record exist)."""
    model, out = h.serve()
    torch.testing.assert_close(out, h.expected())
    return Path(model.records[0].package)


def _record(package: Path) -> Path:
    return package.parent.parent / _cache.DIGESTS / package.parent.name / package.name


def _rebuilt_correctly(h: Harness, package: Path, model: CompiledInt8, out: torch.Tensor) -> None:
    torch.testing.assert_close(out, h.expected(), rtol=0, atol=1e-6)
    assert OTHER not in h.loaded_bytes, "a package convdoctor did not write was loaded"
    assert not model.records[0].cached
    assert package.read_bytes() == GOOD
    assert _record(package).read_text() == hashlib.sha256(GOOD).hexdigest()


def test_a_cached_package_is_loaded_from_a_private_copy_of_verified_bytes(harness: Harness) -> None:
    package = _package(harness)
    assert package.read_bytes() == GOOD
    model, out = harness.serve()
    assert model.records[0].cached and len(harness.compiles) == 1
    path, data = harness.loads[-1]
    assert data == GOOD and harness.cache not in path.parents  # loaded from a copy, not the cache file


def test_a_planted_package_without_a_record_is_never_loaded(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    package = _package(harness)
    _record(package).unlink(missing_ok=True)
    package.write_bytes(OTHER)  # a different model's package under the expected name
    with caplog.at_level(logging.WARNING):
        model, out = harness.serve()
    assert "has no digest record" in caplog.text and str(package) in caplog.text
    _rebuilt_correctly(harness, package, model, out)


def test_a_swapped_package_is_never_loaded(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    package = _package(harness)
    package.write_bytes(OTHER)
    with caplog.at_level(logging.WARNING):
        model, out = harness.serve()
    assert "does not match the digest recorded" in caplog.text
    _rebuilt_correctly(harness, package, model, out)


def test_a_linked_package_is_never_loaded(harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    package = _package(harness)
    elsewhere = tmp_path / "elsewhere.pt2"
    elsewhere.write_bytes(GOOD)
    package.unlink()
    package.symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING):
        model, out = harness.serve()
    assert "is a link" in caplog.text
    assert not package.is_symlink()
    _rebuilt_correctly(harness, package, model, out)


def test_a_folder_others_can_write_is_not_used(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    package = _package(harness)
    # what another user could do there: plant a package and a record that matches it
    package.write_bytes(OTHER)
    _record(package).parent.mkdir(parents=True, exist_ok=True)
    _record(package).write_text(hashlib.sha256(OTHER).hexdigest())
    harness.cache.chmod(0o777)
    with caplog.at_level(logging.WARNING):
        model, out = harness.serve()
    assert "other users can write to it (mode 777)" in caplog.text and "private folder" in caplog.text
    assert OTHER not in harness.loaded_bytes
    torch.testing.assert_close(out, harness.expected(), rtol=0, atol=1e-6)
    used = Path(model.records[0].package)
    assert harness.cache not in used.parents and used.read_bytes() == GOOD
    assert package.read_bytes() == OTHER  # theirs is left alone, not "fixed" in place


def test_a_folder_of_another_user_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    assert _cache.folder_problem(folder) is None
    monkeypatch.setattr(os, "getuid", lambda: folder.stat().st_uid + 1)
    assert "belongs to uid" in str(_cache.folder_problem(folder))


def test_eviction_keeps_the_store_under_its_size_and_age_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(_cache.MAX_BYTES_ENV, "2500")
    store = _cache.Store.open("int8")
    assert store is not None
    for i, age_days in enumerate((90, 2, 1, 0)):
        built = store.folder / f".{os.getpid()}.partial.p{i}.pt2"
        built.write_bytes(bytes(1000))
        final = store.put(f"p{i}.pt2", built)
        then = time.time() - age_days * 86400
        os.utime(final, (then, then))
    names = sorted(p.name for p in store.folder.iterdir())
    # p0 went for its age at the second write; then the least recently used until <= 2500 bytes
    assert names == ["p2.pt2", "p3.pt2"]
    assert sorted(p.name for p in store.digests.iterdir()) == names


def test_cache_info_and_clear(harness: Harness) -> None:
    _package(harness)
    unrelated = harness.cache / "my-notes.txt"  # the folder may be one the user chose: not ours to delete
    unrelated.write_text("keep")
    info = CliRunner().invoke(main, ["cache", "info", "--json"])
    assert info.exit_code == 0, info.output
    doc = json.loads(info.stdout)
    assert doc["root"] == str(harness.cache) and doc["trusted"] and doc["stores"]["int8"]["files"] == 1
    cleared = CliRunner().invoke(main, ["cache", "clear"])
    assert cleared.exit_code == 0 and "removed 1 file(s)" in cleared.stdout
    assert list((harness.cache / "int8").iterdir()) == [] and unrelated.read_text() == "keep"
    harness.cache.chmod(0o777)
    shown = CliRunner().invoke(main, ["cache", "info"])
    assert "not trusted: other users can write to it" in shown.stdout
