"""The one-way data flow of DESIGN.md, as an allowlist of import edges (AST, not runtime).

A *unit* is a top-level module or package of ``convdoctor`` (``api``, ``findings``,
``capture``...). Every import of one unit by another must be listed in ``ALLOWED``; an
edge that is not listed fails, so a new shortcut needs a decision here, not an accident.
On top of that, nothing imports another unit's ``_private`` module or name (the
``_cache``, ``_compat``, ``_guard`` and ``_native`` units are the package's own shared internals).

The layers: ``capture -> graph -> analysis -> findings/results -> report -> cli``.
``graph``, ``findings`` and ``results`` are data: they import no behaviour. ``analysis``
produces findings and result rows; ``audit``, ``bench``, ``monitor``, ``fix`` and
``quant`` run models, use the lower layers and each other's public modules, never
``report`` or ``cli``; ``inspect``, ``rf``, ``check`` and ``advice`` are the pipelines behind
the public verbs (``api``, ``rf_api`` and ``check_api`` are the old paths, re-exporting them);
``report`` sees only results and findings; ``cli`` sees the public verbs and ``report``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "convdoctor"

#: Shared internals any unit may import (each one's docstring says why it exists).
BASE = {"errors", "_cache", "_compat", "_guard", "_native"}
#: Data units: types and their JSON form, no behaviour.
DATA = {"graph", "findings", "results"}
LOWER = BASE | DATA | {"capture", "analysis"}
#: Units that run models; each may use the others' public modules.
ROLES = {"audit", "bench", "monitor", "fix", "quant"}
#: The pipelines behind the public verbs.
PIPELINES = {"inspect", "rf", "check", "advice"}

#: unit -> the units it may import. ``"pkg.module"`` entries allow one module of a unit.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_compat": set(),
    "_cache": set(),
    "_native": {"errors"},
    "_guard": {"_compat", "errors"},
    "graph": {"errors"},
    "findings": {"errors"},
    "results": {"findings", "errors", "__version__"},
    "capture": BASE | {"graph"},
    "analysis": LOWER,
    "inspect": LOWER,
    "rf": LOWER,
    "advice": LOWER | {"inspect"},
    "audit": LOWER | ROLES,
    "bench": LOWER | ROLES,
    "monitor": LOWER | ROLES,
    "fix": LOWER | ROLES,
    "quant": LOWER | ROLES,
    "check": LOWER | ROLES | PIPELINES,
    # the old module paths of the pipelines: each re-exports its new home, nothing else
    "api": {"inspect"},
    "rf_api": {"rf"},
    "check_api": {"check"},
    "demo": LOWER | ROLES | PIPELINES,
    "report": {"results", "findings", "errors", "__version__"},
    # `convdoctor cache info|clear` reads and empties the cache through _cache's own functions
    "cli": {"errors", "findings", "results", "report", "demo", "__version__", "capture.choices", "_cache"}
    | ROLES
    | PIPELINES,
    "__init__": {"findings", "__version__"} | ROLES | PIPELINES,
    "__main__": {"cli"},
}


def _unit(path: Path) -> str:
    return path.relative_to(PKG).parts[0].removesuffix(".py")


def _is_module(dotted: str) -> bool:
    """Whether ``convdoctor.a.b`` names a module or package on disk."""
    rel = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    return (PKG / rel).with_suffix(".py").is_file() or (PKG / rel / "__init__.py").is_file()


def _imported_paths(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """``(line, dotted path)`` of every convdoctor module or name this file (or ``source`` as it) imports."""
    rel = path.relative_to(PKG)
    package = ("convdoctor", *rel.parts[:-1])
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source if source is not None else path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "convdoctor"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.split(".")[0] == "convdoctor":
                module = node.module
            else:
                continue
            for a in node.names:
                full = f"{module}.{a.name}"
                out.append((node.lineno, full if _is_module(full) or module == "convdoctor" else module))
                if not _is_module(full) and module != "convdoctor":
                    out.append((node.lineno, full))  # the imported name itself, for the private check
    return out


def _target(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edge_allowed(unit: str, dotted: str) -> bool:
    target = _target(dotted)
    allowed = ALLOWED.get(unit, set())
    parts = dotted.split(".")
    modules = {".".join(parts[1:end]) for end in range(3, len(parts) + 1)}  # "capture.choices", ...
    return target == unit or target in allowed or bool(modules & allowed)


def _private_of_other_unit(unit: str, dotted: str) -> bool:
    parts = dotted.split(".")
    if _target(dotted) in (unit, *BASE):
        return False
    return any(p.startswith("_") and not p.startswith("__") for p in parts[2:])


FILES = sorted(PKG.rglob("*.py"))


def test_every_unit_has_a_rule() -> None:
    units = {_unit(p) for p in FILES}
    assert units <= ALLOWED.keys(), f"units without an import rule: {sorted(units - ALLOWED.keys())}"


def test_every_rule_names_something_that_exists() -> None:
    """A rule for a unit that was renamed or removed would silently allow nothing useful."""
    units = {_unit(p) for p in FILES}
    stale = {k for k in ALLOWED if k not in units}
    stale |= {
        t for targets in ALLOWED.values() for t in targets if t != "__version__" and not _is_module(f"convdoctor.{t}")
    }
    assert not stale, f"rules for units that do not exist: {sorted(stale)}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_follow_the_allowed_edges(path: Path) -> None:
    unit = _unit(path)
    imports = _imported_paths(path)
    bad = sorted({f"{line}: {d}" for line, d in imports if _is_module(d) and not _edge_allowed(unit, d)})
    assert not bad, f"{path.relative_to(PKG)} ({unit}) imports outside its allowed edges: {bad}"
    private = sorted({f"{line}: {d}" for line, d in imports if _private_of_other_unit(unit, d)})
    assert not private, f"{path.relative_to(PKG)} ({unit}) imports another unit's private parts: {private}"


def test_the_checker_sees_each_import_form() -> None:
    """The AST walk resolves relative, absolute and ``from convdoctor import X`` imports."""
    src = (
        "from ..analysis.layers import layer_rows\n"
        "from convdoctor.report import render\n"
        "from convdoctor import api\n"
        "import convdoctor.cli\n"
        "from .. import __version__\n"
        "from ..findings import _jsonable\n"
    )
    tree_paths = [d for _, d in _imported_paths(PKG / "results" / "base.py", src)]
    assert "convdoctor.analysis.layers" in tree_paths
    assert "convdoctor.report" in tree_paths
    assert "convdoctor.api" in tree_paths
    assert "convdoctor.cli" in tree_paths
    assert "convdoctor.__version__" in tree_paths
    assert "convdoctor.findings._jsonable" in tree_paths
    assert not _edge_allowed("results", "convdoctor.analysis.layers")
    assert not _edge_allowed("results", "convdoctor.api")
    assert not _edge_allowed("audit", "convdoctor.report")
    assert not _edge_allowed("audit", "convdoctor.cli")
    assert not _edge_allowed("cli", "convdoctor.capture.trace")
    assert _edge_allowed("cli", "convdoctor.capture.choices")
    assert _edge_allowed("results", "convdoctor.__version__")
    assert _private_of_other_unit("demo", "convdoctor.audit._int8")
    assert _private_of_other_unit("results", "convdoctor.findings._jsonable")
    assert not _private_of_other_unit("analysis", "convdoctor.analysis._registry")
    assert not _private_of_other_unit("capture", "convdoctor._guard")
