"""``convdoctor._compat``: each private torch API we use still exists and behaves as relied on.

A failure here names the torch version, so the message reads "torch X.Y removed/changed
<entry>" and the one file to fix is ``convdoctor/_compat.py``. The last test keeps private
torch access from creeping back anywhere else in the package.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from convdoctor import _compat

TORCH = f"torch {torch.__version__}"
PKG = Path(__file__).resolve().parent.parent / "convdoctor"


def test_torch_dispatch_mode_sees_aten_ops() -> None:
    seen: list[str] = []

    class Spy(_compat.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            seen.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    with Spy():
        torch.ones(2) + 1
    assert "aten.add" in seen, f"{TORCH}: TorchDispatchMode no longer intercepts aten ops"


def test_pytree_flattens_and_maps_like_the_dispatcher() -> None:
    tree = {"a": (1, [2, 3]), "b": torch.Size([4, 5])}
    leaves, spec = _compat.tree_flatten(tree)
    assert leaves == [1, 2, 3, 4, 5], f"{TORCH}: torch.utils._pytree.tree_flatten changed"
    assert spec.num_leaves == 5
    assert _compat.tree_map(lambda x: x * 10, (1, [2])) == (10, [20]), f"{TORCH}: tree_map changed"


def test_pytree_logger_is_torchs_pytree_module() -> None:
    import torch.utils._pytree as pytree

    assert _compat.PYTREE_LOGGER == pytree.__name__, f"{TORCH}: the pytree module moved"
    assert isinstance(logging.getLogger(_compat.PYTREE_LOGGER), logging.Logger)


def test_inductor_logger_is_inductors_package() -> None:
    import torch._inductor

    assert _compat.INDUCTOR_LOGGER == torch._inductor.__name__, f"{TORCH}: torch._inductor moved"


@pytest.mark.parametrize(
    ("base", "members"),
    [
        ("BatchNormBase", (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)),
        ("NormBase", (nn.BatchNorm2d, nn.InstanceNorm2d)),
        ("ConvBase", (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)),
        ("DropoutBase", (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)),
    ],
)
def test_module_base_classes_cover_their_family(base: str, members: tuple[type[nn.Module], ...]) -> None:
    cls = getattr(_compat, base)
    for m in members:
        assert issubclass(m, cls), f"{TORCH}: {m.__name__} no longer derives from {cls.__qualname__}"
    assert not issubclass(nn.Linear, cls)


def test_instance_norm_is_not_a_batchnorm() -> None:
    assert not issubclass(nn.InstanceNorm2d, _compat.BatchNormBase), f"{TORCH}: _BatchNorm widened"


def test_forward_pre_hooks_lists_what_was_registered() -> None:
    m = nn.Linear(2, 2)

    def hook(module: nn.Module, args: object) -> None:
        return None

    m.register_forward_pre_hook(hook)
    assert _compat.forward_pre_hooks(m) == [hook], f"{TORCH}: _forward_pre_hooks changed"


def test_child_names_keeps_a_module_registered_twice() -> None:
    relu = nn.ReLU()
    seq = nn.Sequential(nn.Linear(2, 2), relu, relu)
    assert _compat.child_names(seq) == ["0", "1", "2"], f"{TORCH}: Module._modules changed"
    assert [n for n, _ in seq.named_children()] == ["0", "1"]  # why the public API is not enough


def test_compiled_inner_unwraps_torch_compile() -> None:
    inner = nn.Linear(2, 2)
    wrapped = torch.compile(inner)  # wrapping compiles nothing until the first call
    assert _compat.compiled_inner(wrapped) is inner, f"{TORCH}: OptimizedModule._orig_mod is gone"
    assert _compat.compiled_inner(inner) is None


def test_compiled_in_place_sees_module_compile() -> None:
    m = nn.Linear(2, 2)
    assert not _compat.compiled_in_place(m)
    m.compile()  # compiles lazily, on the first call
    assert _compat.compiled_in_place(m), f"{TORCH}: Module._compiled_call_impl is gone"


def test_tensor_version_counts_in_place_writes() -> None:
    t = torch.zeros(3)
    before = _compat.tensor_version(t)
    assert before is not None, f"{TORCH}: Tensor._version is gone"
    t.add_(1)
    assert _compat.tensor_version(t) == before + 1, f"{TORCH}: Tensor._version no longer counts writes"
    t + 1  # out of place: no write
    assert _compat.tensor_version(t) == before + 1
    with torch.inference_mode():
        frozen = torch.zeros(1)
    assert _compat.tensor_version(frozen) is None


def test_op_schema_gives_arguments_defaults_and_aliasing() -> None:
    schema = _compat.op_schema(torch.ops.aten.convolution.default)
    assert schema is not None, f"{TORCH}: OpOverload._schema is gone"
    names = [a.name for a in schema.arguments]
    assert names[:3] == ["input", "weight", "bias"], f"{TORCH}: FunctionSchema.arguments changed: {names}"
    add = _compat.op_schema(torch.ops.aten.add.Tensor)
    alpha = next(a for a in add.arguments if a.name == "alpha")
    assert alpha.has_default_value() and alpha.default_value == 1
    view = _compat.op_schema(torch.ops.aten.view.default)
    assert view.returns[0].alias_info is not None, f"{TORCH}: schema alias info changed"
    assert _compat.op_schema(len) is None
    assert [a.name for a in _compat.op_arguments(torch.ops.aten.add.Tensor)] == ["self", "other", "alpha"]
    with pytest.raises(TypeError, match="no op schema"):
        _compat.op_arguments(torch.ops.aten.add)  # a packet, not an overload


def test_foreach_norm_and_sub_match_plain_math() -> None:
    a = [torch.tensor([3.0, 4.0]), torch.tensor([[1.0, 2.0], [2.0, 4.0]])]
    b = [torch.ones(2), torch.ones(2, 2)]
    norms = _compat.foreach_norm(a)
    assert [n.item() for n in norms] == pytest.approx([5.0, 5.0]), f"{TORCH}: _foreach_norm changed"
    diff = _compat.foreach_sub(a, b)
    assert all(torch.equal(d, x - y) for d, x, y in zip(diff, a, b, strict=True)), f"{TORCH}: _foreach_sub changed"
    assert getattr(torch, "_foreach_norm", None) is not None, f"{TORCH}: _foreach_norm gone (fallback loop in use)"


def test_foreach_fallback_loop_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    a = [torch.tensor([3.0, 4.0]), torch.tensor([1.0])]
    fast = _compat.foreach_norm(a)
    monkeypatch.delattr(torch, "_foreach_norm")
    monkeypatch.delattr(torch, "_foreach_sub")
    assert [n.item() for n in _compat.foreach_norm(a)] == [n.item() for n in fast]
    assert [d.tolist() for d in _compat.foreach_sub(a, a)] == [[0.0, 0.0], [0.0]]


def test_is_cia_op_tells_composite_from_primitive() -> None:
    assert _compat.is_cia_op(torch.ops.aten.linear.default), f"{TORCH}: _is_cia_op changed"
    assert not _compat.is_cia_op(torch.ops.aten.convolution.default)


def test_aoti_entry_points_are_importable() -> None:
    # A real compile and load run in tests/quant/test_serve.py; here only that the names still exist.
    import inspect

    from torch._inductor import aoti_compile_and_package, aoti_load_package

    params = inspect.signature(aoti_compile_and_package).parameters
    assert {"package_path", "inductor_configs"} <= set(params), f"{TORCH}: aoti_compile_and_package changed"
    assert callable(aoti_load_package), f"{TORCH}: aoti_load_package moved"


def test_inductor_passes_are_importable() -> None:
    # Importing torch._inductor costs seconds; the passes themselves run in tests/quant.
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes

    assert callable(constant_fold) and callable(freezing_passes), f"{TORCH}: inductor passes moved"


# --- No private torch access outside _compat.py -----------------------------------------

#: Op namespaces whose attributes are op names (``aten._to_copy`` is a public op spelled with _).
_OP_NAMESPACES = {"aten", "prims", "quantized_decomposed"}
#: ``torch._ops`` type names may be imported directly (see _compat's docstring).
_ALLOWED_PRIVATE_MODULES = {"torch._ops"}


def _own_private_names() -> set[str]:
    """Every ``_name`` a convdoctor class or object defines (methods, class fields, ``x._y = ...``).

    Module-level functions do not count: ``op._schema`` must not pass because some module
    happens to define a helper called ``_schema``.
    """
    names: set[str] = set()
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        names.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        names.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        names.update(t.id for t in item.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if _private(n)}


def _dotted(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _import_violation(node: ast.Import | ast.ImportFrom) -> str | None:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.split(".")[0] == "torch"]
        bad = [n for n in names if any(_private(p) for p in n.split("."))]
        return f"import {', '.join(bad)}" if bad else None
    module = node.module or ""
    if node.level or module.split(".")[0] != "torch" or module in _ALLOWED_PRIVATE_MODULES:
        return None
    if any(_private(p) for p in module.split(".")) or any(_private(a.name) for a in node.names):
        return f"from {module} import {', '.join(a.name for a in node.names)}"
    return None


def _attribute_violation(node: ast.Attribute, own: set[str]) -> str | None:
    base = _dotted(node.value)
    root = base.split(".")[0] if base else None
    if base is not None and (base.split(".")[-1] in _OP_NAMESPACES or root in {"self", "cls"}):
        return None  # an op name, or convdoctor's own object
    full = f"{base}.{node.attr}"
    if root in {"torch", "nn", "F"}:
        return None if full == "torch._ops" or full.startswith("torch._ops.") else full
    return None if node.attr in own else f".{node.attr} (not a convdoctor name: a torch private?)"


def _getattr_violation(node: ast.Call, own: set[str]) -> str | None:
    if not (isinstance(node.func, ast.Name) and node.func.id in {"getattr", "hasattr", "setattr", "delattr"}):
        return None
    name = node.args[1] if len(node.args) >= 2 else None
    if isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value):
        return None if name.value in own else f"{node.func.id}(..., {name.value!r})"
    return None


def _string_violation(node: ast.Constant) -> str | None:
    """A private torch module named in a string value (a logger, ``import_module``...)."""
    if isinstance(node.value, str) and any(
        f"{m}._" in node.value for m in ("torch", "torch.utils", "torch.nn.modules")
    ):
        return f"string {node.value!r}"
    return None


def _violations(source: str, own: set[str]) -> list[str]:
    tree = ast.parse(source)
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        found = None
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found = _import_violation(node)
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            found = _attribute_violation(node, own)
        elif isinstance(node, ast.Call):
            found = _getattr_violation(node, own)
        elif isinstance(node, ast.Constant) and id(node) not in prose:  # docstrings may name what they replace
            found = _string_violation(node)
        if found:
            out.append(f"{getattr(node, 'lineno', 0)}: {found}")
    return out


def test_private_torch_access_only_in_compat() -> None:
    own = _own_private_names()
    bad = {}
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "_compat.py" and path.parent == PKG:
            continue
        found = _violations(path.read_text(encoding="utf-8"), own)
        if found:
            bad[str(path.relative_to(PKG.parent))] = found
    assert not bad, "private torch APIs belong in convdoctor/_compat.py:\n" + "\n".join(
        f"{p}:{v}" for p, vs in bad.items() for v in vs
    )


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from torch.utils._pytree import tree_map", True),
        ("import torch._dynamo", True),
        ("from torch.nn.modules.batchnorm import _BatchNorm", True),
        ("x = torch._foreach_norm(ts)", True),
        ("ok = isinstance(m, nn.modules.conv._ConvNd)", True),
        ("names = op._schema.arguments", True),
        ("inner = getattr(m, '_orig_mod', None)", True),
        ("log = logging.getLogger('torch._inductor')", True),
        ("from torch._ops import OpOverload", False),
        ("ok = isinstance(t, torch._ops.OpOverload)", False),
        ("op = aten._to_copy.default", False),
        ("self._cache = {}", False),
        ("x = report._payload()", False),  # convdoctor's own method
        ('"""Docstrings may say ``torch._foreach_norm``."""', False),
        ("v = torch.__version__", False),
    ],
)
def test_the_scanner_flags_private_torch_access(source: str, flagged: bool) -> None:
    assert bool(_violations(source, {"_payload", "_cache"})) is flagged
