"""The one-way data flow of DESIGN.md, checked on the import statements (AST, not runtime)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "convdoctor"

#: layer -> internal top-level packages/modules it must never import.
FORBIDDEN: dict[str, set[str]] = {
    "graph": {"capture", "analysis", "results", "report", "cli", "audit", "bench", "monitor", "fix", "api", "demo"},
    "capture": {"analysis", "results", "report", "cli", "audit", "bench", "monitor", "fix", "api", "demo"},
    "analysis": {"results", "report", "cli", "audit", "bench", "monitor", "fix", "api", "demo"},
    "findings": {"capture", "analysis", "results", "report", "cli", "audit", "bench", "monitor", "fix", "api"},
    "results": {"report", "cli", "audit", "bench", "monitor", "fix", "api", "demo"},
    "report": {"capture", "analysis", "cli", "audit", "bench", "monitor", "fix", "api", "demo"},
    "audit": {"report", "cli"},
    "bench": {"report", "cli"},
    "monitor": {"report", "cli"},
    "fix": {"report", "cli"},
}


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _internal_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    depth_pkg = len(path.relative_to(PKG).parts) - 1  # folders below convdoctor/
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("convdoctor."):
                found.add(node.module.split(".")[1])
            elif node.level > 0:
                up = node.level - 1  # levels above the current package
                if up == depth_pkg:  # relative to convdoctor/ itself
                    if node.module:
                        found.add(node.module.split(".")[0])
                    else:
                        found.update(a.name for a in node.names)
                elif up < depth_pkg:
                    found.add(path.relative_to(PKG).parts[0])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("convdoctor."):
                    found.add(a.name.split(".")[1])
    return found


FILES = sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_flow_one_way(path: Path) -> None:
    layer = _layer(path)
    bad = _internal_imports(path) & FORBIDDEN.get(layer, set())
    assert not bad, f"{path.relative_to(PKG)} ({layer}) imports {sorted(bad)}"


def test_nothing_but_the_cli_imports_the_cli() -> None:
    for path in FILES:
        if _layer(path) in ("cli", "__main__"):
            continue
        assert "cli" not in _internal_imports(path), path
