"""Hostile model files, built from real ``torch.export.save`` archives of a tiny model.

Each builder returns the path of a file that, loaded by ``torch.export.load`` itself, creates
``marker`` (where it can run code at all): the tests check that convdoctor refuses it and the
marker never appears.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from tests.fixtures.user_models import tiny

#: An archive entry's name inside the zip's one top folder -> its new bytes (None: unchanged).
Edit = Callable[[str, bytes], bytes | None]


class OpenFile:
    """Pickles to ``open(path, "w")``: unpickling it creates the file (the payload)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def exported(path: Path, *, dynamic: bool = False) -> Path:
    """A genuine ``.pt2`` of the tiny model (a dynamic batch writes shape expressions)."""
    x = torch.randn(2, 3, 8, 8)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(tiny().eval(), (x,), dynamic_shapes=shapes), str(path))
    return path


def rewrite(src: Path, dst: Path, edit: Edit, extra: dict[str, bytes] | None = None) -> Path:
    """Copy the archive ``src`` to ``dst`` with ``edit`` applied to each entry (names without the
    top folder), plus ``extra`` entries; stored uncompressed, as torch writes them."""
    zin = zipfile.ZipFile(src)
    root = zin.namelist()[0].split("/", 1)[0]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            name = info.filename.split("/", 1)[1]
            data = zin.read(info.filename)
            zout.writestr(info.filename, edit(name, data) or data)
        for name, data in (extra or {}).items():
            zout.writestr(f"{root}/{name}", data)
    return dst


def pickled_weight(base: Path, dst: Path, marker: Path) -> Path:
    """One weight switched to the pickle format, its bytes a ``__reduce__`` payload."""

    def edit(name: str, data: bytes) -> bytes | None:
        if name.endswith("_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        if name == "data/weights/weight_0":
            return pickle.dumps(OpenFile(marker))
        return None

    return rewrite(base, dst, edit)


def pickled_sample_inputs(base: Path, dst: Path, marker: Path) -> Path:
    """Sample inputs torch's ``weights_only=True`` refuses, so it retries with ``weights_only=False``."""
    return rewrite(base, dst, lambda name, data: pickle.dumps(OpenFile(marker)) if "sample_inputs" in name else None)


def code_in_shape_expression(dynamic_base: Path, dst: Path, marker: Path) -> Path:
    """No pickle at all: a symbolic shape expression (``sympy.sympify``, i.e. ``eval``) that runs code."""
    payload = f"__import__('pathlib').Path('{marker}').touch() or Symbol"

    def edit(name: str, data: bytes) -> bytes | None:
        if name.startswith("models/"):
            text = data.decode()
            assert '"expr_str": "Symbol(' in text, "torch no longer writes shape expressions this way"
            return text.replace('"expr_str": "Symbol', f'"expr_str": "{payload}', 1).encode()
        return None

    return rewrite(dynamic_base, dst, edit)


def python_call_in_graph(base: Path, dst: Path, _marker: Path) -> Path:
    """A graph node whose target is a Python callable reached through torch (``os.system``)."""

    def edit(name: str, data: bytes) -> bytes | None:
        if name.startswith("models/"):
            return data.replace(b'"torch.ops.aten.relu.default"', b'"torch.serialization.os.system"', 1)
        return None

    return rewrite(base, dst, edit)


def shared_object(base: Path, dst: Path, _marker: Path) -> Path:
    """An AOTInductor payload, which torch dlopens (its ELF constructors run)."""
    return rewrite(base, dst, lambda *_: None, {"data/aotinductor/model/model.so": b"\x7fELF not really"})


def unknown_entry(base: Path, dst: Path) -> Path:
    """A harmless entry torch ignores but a plain program does not have: refused, loads when trusted."""
    return rewrite(base, dst, lambda *_: None, {"notes/readme.txt": b"hello"})
