"""Model files someone else made: ``.pt2`` exported programs and TorchScript archives.

**The threat.** ``torch.export.load`` is not safe on a file from an untrusted source (torch's
own docstring says so), in three ways we know of in torch 2.x: a weight or constant entry
flagged ``use_pickle`` is read with ``torch.load(weights_only=False)`` (a ``__reduce__``
payload runs); the sample inputs are read with ``weights_only=True`` *and, when that fails,
again with* ``weights_only=False``; and every symbolic-shape expression in ``models/*.json``
goes through ``sympy.sympify``, which is Python's ``eval``. An archive may also carry an
AOTInductor shared object, which ``load_pt2`` dlopens (its ELF constructors run).

**What we do.** Without ``trusted``, :func:`load_exported` reads the file once into memory
(what is checked is what is loaded), then vets it before torch deserialises anything: the zip
directory must read the same to Python's reader and to torch's; every entry must be one that
``torch.export.save`` writes for a plain program (JSON, raw tensor bytes, one sample-inputs
pickle); no entry may be flagged ``use_pickle`` or be a custom/opaque object, an AOTInductor,
ExecuTorch or legacy ``.pt`` payload; the sample inputs must load with ``weights_only=True``
(so torch never falls back); every ``expr_str`` must parse to sympy constructors and
arithmetic only (no attribute, no other name); and every graph node must call a
``torch.ops`` operator, an ``operator``/``math`` function or a ``torch.sym_*`` helper (an
archive could name ``torch.serialization.os.system`` as a node's target). Anything else is
refused in one line that names the entry and the way to opt in (``trusted=True``, CLI
``--trust-file``). A file that passes is loaded from the checked bytes.

**TorchScript** has no such path: ``torch.jit.load`` compiles and runs the archive's own code
(``__setstate__`` runs at load), its C++ deserialiser has had memory-safety bugs, and torch's
``weights_only`` RCE of 2025 (CVE-2025-32434) went through it. A TorchScript file loads only
when trusted; a zip without TorchScript code (a ``torch.save`` checkpoint given as MODEL) is
told to use ``--weights`` without being loaded.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import math
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export.pt2_archive import PT2ArchiveReader
from torch.export.pt2_archive import constants as pt2

from .._native import capture_native
from ..errors import ModelLoadError, one_line

__all__ = ["TRUST_HINT", "load_exported", "load_torchscript", "vet_exported"]

#: How to opt in, appended to every refusal.
TRUST_HINT = "pass --trust-file (trusted=True) only if you trust whoever made it"

#: ``torch.jit.load`` with the type it has (torch leaves it unannotated).
_jit_load: Callable[..., nn.Module] = torch.jit.load

#: sympy constructors an exported program's shape expressions are printed with (``srepr``),
#: and torch's own sympy functions (the deserialiser's ``sympy_functions``).
_SYMPY_NAMES = frozenset(
    "Add Mul Pow Mod Integer Float Rational Symbol Max Min Abs floor ceiling Eq Ne Lt Le Gt Ge "
    "StrictLessThan StrictGreaterThan LessThan GreaterThan Equality Unequality And Or Not "
    "Piecewise ExprCondPair oo zoo nan true false "
    "FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift "
    "PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat "
    "TruncToInt RoundToInt RoundDecimal ToFloat Identity".split()
)
_EXPR_NODES = (
    ast.Expression,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.keyword,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
)
#: A symbol the deserialiser made (``s0``, ``u3``): names sympy turns into Symbols.
_SYMBOL = re.compile(r"[a-z]{1,3}\d+")
_DATA_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[-+0-9.eE]+")
#: ``operator`` functions a graph may call (pure arithmetic and indexing).
_OPERATORS = frozenset(
    "getitem add sub mul truediv floordiv mod pow neg pos abs and_ or_ xor invert not_ "
    "eq ne lt le gt ge lshift rshift".split()
)
_OP_TARGET = re.compile(r"torch\.ops\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?")


def _refuse(path: Path, why: str) -> ModelLoadError:
    return ModelLoadError(f"refusing to load {path}: {why}; {TRUST_HINT}")


def _safe_expr(text: str) -> bool:
    """Whether a shape expression is sympy constructors, symbols, numbers and arithmetic only."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _EXPR_NODES):
            return False
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _SYMPY_NAMES):
            return False
        if isinstance(node, ast.Name) and not (node.id in _SYMPY_NAMES or _SYMBOL.fullmatch(node.id)):
            return False
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and not _DATA_STRING.fullmatch(node.value):
            return False
        if isinstance(node, ast.keyword) and (node.arg is None or not isinstance(node.value, ast.Constant)):
            return False
    return True


def _safe_target(target: str) -> bool:
    """Whether a node target is an operator (never a Python callable reached through torch)."""
    head, _, name = target.partition(".")
    if head == "_operator":
        return name in _OPERATORS
    if head == "math":
        return name.isidentifier() and not name.startswith("_") and callable(getattr(math, name, None))
    if re.fullmatch(r"torch\.sym_[a-z]+", target):
        return True
    m = _OP_TARGET.fullmatch(target)
    if m is None or any(part and part.startswith("__") for part in m.groups()):
        return False
    return not hasattr(type(torch.ops), m.group(1))  # load_library, import_module...: not a namespace


def _vet_program(text: str) -> str | None:
    """Why a ``models/*.json`` entry is unsafe to deserialise, or None."""
    problem: list[str] = []

    def walk(node: Any, in_nodes: bool) -> None:
        if problem:
            return
        if isinstance(node, dict):
            target = node.get("target")
            if in_nodes and isinstance(target, str) and not _safe_target(target):
                problem.append(f"a graph node calls {target[:80]!r}, not a torch operator")
            for key, value in node.items():
                if key == "expr_str" and not (isinstance(value, str) and _safe_expr(value)):
                    problem.append(f"a shape expression is code, not arithmetic: {str(value)[:80]!r}")
                walk(value, key == "nodes")
        elif isinstance(node, list):
            for item in node:
                walk(item, in_nodes)

    try:
        walk(json.loads(text), False)
    except ValueError:
        return "a program entry is not JSON"
    return problem[0] if problem else None


def _vet_payloads(text: str, prefix: str) -> str | None:
    """Why a weights or constants config is unsafe (a pickled or non-tensor entry), or None."""
    try:
        config = json.loads(text).get("config", {})
    except (ValueError, AttributeError):
        return "a payload config is not JSON"
    for fqn, meta in config.items():
        name = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False or not name.startswith(prefix):
            return f"entry {str(fqn)[:60]!r} is stored as a pickle ({name or 'no path'}), which torch unpickles"
    return None


def _entry_kinds() -> list[tuple[re.Pattern[str], str]]:
    """What each entry ``torch.export.save`` writes for a plain program is, by its name."""

    def fmt(template: str) -> str:
        return re.escape(template).replace(re.escape("{}"), r"(\w+)")

    return [
        (
            re.compile(
                rf"{re.escape(pt2.ARCHIVE_FORMAT_PATH)}|{re.escape(pt2.ARCHIVE_VERSION_PATH)}|byteorder|\.data/.*"
            ),
            "meta",
        ),
        (re.compile(fmt(pt2.MODELS_FILENAME_FORMAT)), "program"),
        (re.compile(fmt(pt2.WEIGHTS_CONFIG_FILENAME_FORMAT)), "weights"),
        (re.compile(fmt(pt2.CONSTANTS_CONFIG_FILENAME_FORMAT)), "constants"),
        (re.compile(re.escape(pt2.WEIGHTS_DIR + pt2.WEIGHT_FILENAME_PREFIX) + r"\d+"), "raw"),
        (re.compile(re.escape(pt2.CONSTANTS_DIR + pt2.TENSOR_CONSTANT_FILENAME_PREFIX) + r"\d+"), "raw"),
        (re.compile(fmt(pt2.SAMPLE_INPUTS_FILENAME_FORMAT)), "sample"),
        (re.compile(re.escape(pt2.EXTRA_DIR) + r".*"), "raw"),
    ]


def _vet_entry(kind: str, data: bytes) -> str | None:
    if kind == "program":
        return _vet_program(data.decode("utf-8", errors="replace"))
    if kind in ("weights", "constants"):
        prefix = pt2.WEIGHT_FILENAME_PREFIX if kind == "weights" else pt2.TENSOR_CONSTANT_FILENAME_PREFIX
        return _vet_payloads(data.decode("utf-8", errors="replace"), prefix)
    if kind == "sample":
        try:  # torch reads these with weights_only=True, then without: it must not need the second
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the restricted unpickler's notes on pickle protocols
                torch.load(io.BytesIO(data), weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means torch would retry unrestricted
            return f"its sample inputs need a full unpickler ({one_line(exc)[:80]})"
    return None


def vet_exported(data: bytes, path: Path) -> None:
    """Refuse an exported-program archive torch could not load without running code from it.

    Args:
        data: the file's bytes (the ones that will be loaded).
        path: its name, for the message.

    Raises:
        ModelLoadError: not a ``.pt2`` archive, or one that needs trust (the line says why).
    """
    if not data:
        raise ModelLoadError(f"{path} is empty, not an exported program (write one with torch.export.save)")
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ModelLoadError(f"{path} is not an exported program (a .pt2 zip archive): {one_line(exc)}") from None
    roots = {n.split("/", 1)[0] for n in names}
    ours = sorted(n.split("/", 1)[1] for n in names if "/" in n)
    with _quiet(f"reading {path.name}"):
        try:
            reader = PT2ArchiveReader(io.BytesIO(data))
            theirs = sorted(reader.get_file_names())
        except Exception as exc:  # noqa: BLE001 - a zip that is not torch's: say so, in one line
            raise ModelLoadError(f"{path} is not an exported program ({one_line(exc)[:120]})") from None
    if len(roots) != 1 or len(set(names)) != len(names) or ours != theirs:
        raise _refuse(path, "its zip directory reads differently to Python and to torch")
    kinds = _entry_kinds()
    for name in theirs:
        kind = next((k for pattern, k in kinds if pattern.fullmatch(name)), None)
        if kind is None:
            raise _refuse(path, f"entry {name!r} is not part of a plain exported program (code or pickle)")
        why = _vet_entry(kind, reader.read_bytes(name))
        if why is not None:
            raise _refuse(path, why)


#: torch's export loggers: they log a traceback before re-raising (the CLI prints one line).
_EXPORT_LOGGER = "torch.export"


@contextlib.contextmanager
def _quiet(label: str) -> Iterator[None]:
    """torch's warnings, export logs and native output held back (shown under ``-v``)."""
    logger = logging.getLogger(_EXPORT_LOGGER)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), capture_native(label):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def load_exported(
    path: str | Path, *, trusted: bool = False, extra_files: dict[str, str] | None = None
) -> torch.export.ExportedProgram:
    """Load a ``.pt2`` written by ``torch.export.save``, vetted first unless ``trusted``.

    Args:
        path: the file.
        trusted: skip the vetting (the file may run code: only for a file you trust).
        extra_files: names of extra text entries to read (``torch.export.save(..., extra_files=)``);
            each value is replaced with the entry's text, or left as given when the file has none.

    Returns:
        The exported program.

    Raises:
        ModelLoadError: missing, not a program, refused (see the module docstring), or torch
            cannot read it; always one line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {one_line(exc)}") from None
    if not trusted:
        vet_exported(data, path)
    try:
        with _quiet(f"torch.export.load({path.name})"):
            found: dict[str, str] = {"": ""}  # non-empty: torch swaps an empty map for its own, then fills every entry
            program = torch.export.load(io.BytesIO(data), extra_files=found)
    except Exception as exc:  # noqa: BLE001 - a truncated file, or one from another torch: one line
        raise ModelLoadError(f"cannot load exported program {path}: {one_line(exc)[:200]}") from None
    if extra_files is not None:
        for name in extra_files:
            text = found.get(name)
            if isinstance(text, str) and text:
                extra_files[name] = text
    return program


def load_torchscript(path: str | Path, *, trusted: bool = False) -> nn.Module:
    """Load a TorchScript archive, only when ``trusted`` (see the module docstring).

    Raises:
        ModelLoadError: not a TorchScript archive, not trusted, or torch cannot read it.
    """
    path = Path(path)
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        names = []
    if not any("/code/" in n for n in names):
        raise ModelLoadError(
            f"{path} is not a TorchScript model; for a state_dict checkpoint use MODEL --weights CKPT "
            "(use pkg.module:factory for Python models)"
        )
    if not trusted:
        raise _refuse(path, "a TorchScript archive runs the code inside it when torch.jit.load reads it")
    try:
        with _quiet(f"torch.jit.load({path.name})"):
            return _jit_load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - one line, whatever torch raised
        raise ModelLoadError(f"cannot load TorchScript model {path}: {one_line(exc)[:200]}") from None
