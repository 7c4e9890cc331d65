"""A stand-in for the user's module tree that a capture run may write into.

Models write into themselves while they run: YOLO's ``Detect`` head keeps ``anchors``,
``strides`` and ``shape`` from its first forward, anchor generators and positional
encodings memoise grids keyed by shape, old-style weight norm sets ``self.weight`` in a
pre-hook. A meta-tensor run of the user's own objects would leave meta tensors in those
attributes and break the model for good; restoring them afterwards is not enough for a
module that creates an attribute lazily from inside another object.

So the capture never runs the user's objects. :func:`shadow` builds, for every module in
the tree, a new object of the same class whose ``__dict__`` is a copy: the same
parameters, buffers and attribute values, but new containers (``_parameters``,
``_modules``, the hook dicts, any dict/list/set attribute), child modules replaced by
their shadows wherever they are referenced (``_modules``, plain attributes, lists),
methods bound to a module rebound to its shadow, and plain tensor attributes copied
(a write in place lands on the copy). Whatever the run assigns, inserts or writes lands
on the shadow, which is dropped afterwards.

Known limits: TorchScript modules keep their attributes in C++ and are shared as they are
(they always run for real, and only their Python wrapper could be copied); objects of
other classes held in attributes (a tokenizer, a custom cache class) are shared.
"""

from __future__ import annotations

import copy
import types
from collections import OrderedDict, defaultdict
from typing import Any

import torch
from torch import nn

#: Builtin containers rebuilt in the shadow; anything else is shared as is.
_CONTAINERS = (dict, OrderedDict, defaultdict, list, set)


def shadow(model: nn.Module, *, copy_buffers: bool = False) -> nn.Module:
    """A copy of the module tree that shares every weight and value but none of the containers.

    Args:
        model: the user's module (never written to).
        copy_buffers: copy the buffers too (a real run that updates running statistics
            updates the copies); parameters are always shared.

    Returns:
        The shadow of ``model``; ``named_modules()``, ``named_parameters()`` and
        ``named_buffers()`` give the same names and the same tensor objects.
    """
    if isinstance(model, torch.jit.ScriptModule):
        return model
    weights = {id(t) for t in model.parameters()}
    if not copy_buffers:
        weights |= {id(t) for t in model.buffers()}
    memo: dict[int, Any] = {}
    for m in model.modules():
        if not isinstance(m, torch.jit.ScriptModule):
            # object.__new__: a class's own __new__ may hand back another class (fx's GraphModule
            # makes a fresh subclass per instance, and the compiled forward lives on the original's)
            memo[id(m)] = object.__new__(type(m))
    for m in model.modules():
        twin = memo.get(id(m))
        if twin is not None:
            twin.__dict__.update({k: _rewire(v, memo, weights) for k, v in vars(m).items()})
    return memo[id(model)]  # type: ignore[no-any-return]


def _rewire(value: Any, memo: dict[int, Any], weights: set[int]) -> Any:
    """The shadow's version of one attribute value (``memo`` keeps shared objects shared)."""
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, torch.Tensor):
        if id(value) in weights or value.device.type == "meta":
            return value  # weights are swapped by functional_call; meta tensors hold no data to write
        memo[id(value)] = copy_tensor(value)
        return memo[id(value)]
    if isinstance(value, types.MethodType) and id(value.__self__) in memo:
        return types.MethodType(value.__func__, memo[id(value.__self__)])
    if type(value) in _CONTAINERS:
        new = copy.copy(value)
        memo[id(value)] = new
        if isinstance(new, dict):
            for k in new:
                new[k] = _rewire(new[k], memo, weights)
        elif isinstance(new, list):
            new[:] = [_rewire(v, memo, weights) for v in new]
        return new
    if type(value) is tuple:
        return tuple(_rewire(v, memo, weights) for v in value)
    return value


def copy_tensor(t: torch.Tensor) -> torch.Tensor:
    """A copy of a plain tensor attribute that keeps its class, or the tensor itself if it cannot be copied."""
    try:
        with torch.no_grad():
            return t.clone()
    except (RuntimeError, NotImplementedError, TypeError):
        return t
