"""Every private torch API convdoctor relies on, in one module.

torch changes its underscored names without a deprecation cycle. Each one we use is named
here once, with the reason no public API does the job, and ``tests/test_compat.py`` checks
each entry on the installed torch and names that version when one breaks; the rest of the
package imports from here (a test greps it for private torch access anywhere else). Type
names from ``torch._ops`` (``OpOverload``, ``OpOverloadPacket``, ``ops``) are the one
exception: ``torch.ops`` *is* ``torch._ops.ops`` and the classes have no public alias.

Heavy or optional internals (``torch._inductor``, ``torch._export``) are imported inside
the function that needs them, never at package import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd
from torch.utils._pytree import tree_flatten, tree_map

__all__ = [
    "INDUCTOR_LOGGER",
    "PYTREE_LOGGER",
    "BatchNormBase",
    "ConvBase",
    "DropoutBase",
    "NormBase",
    "TorchDispatchMode",
    "child_names",
    "compiled_in_place",
    "compiled_inner",
    "foreach_norm",
    "foreach_sub",
    "forward_pre_hooks",
    "aoti_compile",
    "aoti_load",
    "inductor_constant_fold",
    "inductor_freezing_passes",
    "is_cia_op",
    "op_arguments",
    "op_schema",
    "tensor_version",
    "tree_flatten",
    "tree_map",
]

# --- Dispatch and pytrees: no public equivalent in torch 2.x ---------------------------
# ``TorchDispatchMode`` (torch.utils._python_dispatch) is how the capture sees every aten op
# with its real schema; ``tree_flatten``/``tree_map`` (torch.utils._pytree) flatten op
# arguments the way the dispatcher does (torch.Size, dicts, dataclass outputs).
_Mode = TypeVar("_Mode", bound="TorchDispatchMode")

if TYPE_CHECKING:

    class TorchDispatchMode:
        """What we use of torch's class, typed (torch's own methods carry no annotations)."""

        def __init__(self) -> None: ...
        def __enter__(self: _Mode) -> _Mode: ...
        def __exit__(self, *exc: object) -> None: ...
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any: ...

else:
    from torch.utils._python_dispatch import TorchDispatchMode

#: Name of torch's pytree logger (muted while torchao registers its pytree nodes).
PYTREE_LOGGER = "torch.utils._pytree"
#: Name of Inductor's logger (muted while the int8 model compiles).
INDUCTOR_LOGGER = "torch._inductor"

# --- Module base classes: the only way to say "any BatchNorm / conv / dropout" ------------
#: Base of BatchNorm1d/2d/3d and SyncBatchNorm (running stats and affine parameters).
BatchNormBase = _BatchNorm
#: Base of every BatchNorm and InstanceNorm (``track_running_stats`` lives here).
NormBase = _NormBase
#: Base of Conv1d/2d/3d and the transposed convolutions.
ConvBase = _ConvNd
#: Base of Dropout, Dropout1d/2d/3d, AlphaDropout and FeatureAlphaDropout.
DropoutBase = _DropoutNd


# --- Module internals with no public getter ------------------------------------------
def forward_pre_hooks(module: nn.Module) -> list[Callable[..., Any]]:
    """The forward pre-hooks registered on ``module`` (no public getter exists)."""
    hooks: dict[int, Callable[..., Any]] = getattr(module, "_forward_pre_hooks", {})
    return list(hooks.values())


def child_names(module: nn.Module) -> list[str]:
    """Every child name in registration order, duplicates of one module object included.

    ``named_children()`` skips a module registered twice, which changes what
    ``nn.Sequential.forward`` (it iterates ``_modules``) actually runs.
    """
    return list(module._modules)


def compiled_inner(module: nn.Module) -> nn.Module | None:
    """The module a ``torch.compile`` wrapper (``OptimizedModule._orig_mod``) runs, else None."""
    inner = getattr(module, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else None


# --- Version counters: the only cheap way to see that a tensor was written in place -----
def tensor_version(t: torch.Tensor) -> int | None:
    """How many in-place writes ``t`` has seen (``Tensor._version``); None where it is not kept.

    Inference-mode tensors keep no version counter.
    """
    try:
        return int(t._version)
    except (RuntimeError, AttributeError):
        return None


def compiled_in_place(module: nn.Module) -> bool:
    """Whether ``module.compile()`` replaced its call in place (``Module._compiled_call_impl``)."""
    return getattr(module, "_compiled_call_impl", None) is not None


# --- Op schemas: ``OpOverload._schema`` is the only handle on argument names and aliasing --
def op_schema(op: Any) -> torch._C.FunctionSchema | None:
    """The ``FunctionSchema`` of an op overload, or None for anything else."""
    schema = getattr(op, "_schema", None)
    return schema if isinstance(schema, torch._C.FunctionSchema) else None


def op_arguments(op: Any) -> list[torch._C.Argument]:
    """The schema arguments of an op overload, in order.

    Raises:
        TypeError: ``op`` is not an op overload (a rule was registered on something else).
    """
    schema = op_schema(op)
    if schema is None:
        raise TypeError(f"{op!r} has no op schema")
    return list(schema.arguments)


# --- Multi-tensor kernels: one launch per device instead of one per tensor -------------
def foreach_norm(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The L2 norm of each tensor (``torch._foreach_norm``; a plain loop if it is gone)."""
    fn = getattr(torch, "_foreach_norm", None)
    if fn is None:
        return [torch.linalg.vector_norm(t) for t in tensors]
    return list(fn(list(tensors)))


def foreach_sub(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``a[i] - b[i]`` for each pair (``torch._foreach_sub``; a plain loop if it is gone)."""
    fn = getattr(torch, "_foreach_sub", None)
    if fn is None:
        return [x - y for x, y in zip(a, b, strict=True)]
    return list(fn(list(a), list(b)))


# --- PT2E lowering: the inductor passes torchao's x86 lowering calls -------------------
def is_cia_op(op: Any) -> bool:
    """Whether an op is CompositeImplicitAutograd (``torch._export.utils._is_cia_op``)."""
    from torch._export.utils import _is_cia_op

    return bool(_is_cia_op(op))


def inductor_freezing_passes(gm: torch.fx.GraphModule, example: Sequence[torch.Tensor]) -> None:
    """Inductor's freezing passes (fuse q/dq patterns into oneDNN int8 kernels), in place."""
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes

    freezing_passes(gm, example)


def inductor_constant_fold(gm: torch.fx.GraphModule) -> None:
    """Inductor's constant folding, in place."""
    from torch._inductor.constant_folding import constant_fold

    constant_fold(gm)


# --- AOTInductor: compile an exported program into a loadable package ------------------
# ``aoti_compile_and_package`` and ``aoti_load_package`` are the documented AOTInductor entry
# points (torch.compiler_aot_inductor), but they live in ``torch._inductor``.
def aoti_compile(program: torch.export.ExportedProgram, path: str, options: dict[str, Any]) -> str:
    """Compile ``program`` with AOTInductor into the ``.pt2`` package ``path``; returns the path."""
    from torch._inductor import aoti_compile_and_package

    return str(aoti_compile_and_package(program, package_path=path, inductor_configs=dict(options)))


def aoti_load(path: str) -> Callable[..., Any]:
    """Load a package written by :func:`aoti_compile`: a callable taking the program's inputs."""
    from torch._inductor import aoti_load_package

    runner: Callable[..., Any] = aoti_load_package(path)
    return runner
