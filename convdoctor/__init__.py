"""convdoctor: finds what is wrong with a PyTorch CNN before production does.

The public surface is exactly ``__all__``; everything else is internal.

Importing the package imports neither torch nor anything else heavy: each public name is
imported on first use (PEP 562 ``__getattr__``), so ``convdoctor --help`` and
``--version`` answer in the time Python takes to start, and a verb pays only for what it
runs (``tests/test_imports.py``).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Finding",
    "Monitor",
    "Severity",
    "__version__",
    "audit",
    "bench",
    "check",
    "compare",
    "inspect",
    "receptive_field",
]

if TYPE_CHECKING:  # what a type checker and an IDE see: the same names, imported eagerly
    from .audit import audit
    from .bench import bench, compare
    from .check import check
    from .findings import Finding, Severity
    from .inspect import inspect
    from .monitor import Monitor
    from .rf import receptive_field

#: public name -> the module that defines it.
_HOMES = {
    "inspect": ".inspect",
    "audit": ".audit",
    "bench": ".bench",
    "compare": ".bench",
    "check": ".check",
    "Finding": ".findings",
    "Severity": ".findings",
    "Monitor": ".monitor",
    "receptive_field": ".rf",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


#: subpackages named like the public function they define.
_SHADOWED = frozenset({"audit", "bench", "check", "inspect"})


class _Package(types.ModuleType):
    """Keeps ``convdoctor.audit``, ``.bench``, ``.check`` and ``.inspect`` the functions, not the subpackages.

    Importing a submodule sets it as an attribute of its parent. The eager ``from .audit
    import audit`` used to overwrite that right away; lazily, any ``import convdoctor.audit.x``
    (``check`` does one) would leave ``convdoctor.audit`` a module, and ``convdoctor.audit(model)``
    would fail. The subpackages stay reachable through ``sys.modules`` and ``from`` imports.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
