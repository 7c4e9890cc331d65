"""The op graph the capture layer produces and every analysis consumes.

A *value* is one tensor produced during the forward: ``(node, out)`` where ``node`` is
an op index, or ``INPUT`` for the model's inputs. Parameters and buffers are values of
kind ``param``; Python constants are not values at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

INPUT = -1  #: the ``node`` of a model input value
PARAM = -2  #: the ``node`` of a parameter or buffer value
CONST = -3  #: a tensor created outside the graph (a captured constant)


@dataclass(frozen=True)
class TensorInfo:
    """Shape, dtype and storage of one tensor value.

    Attributes:
        shape: sizes.
        dtype: dtype name without the ``torch.`` prefix.
        itemsize: bytes per element.
        storage: storage id; views and in-place results share their base's id.
        storage_bytes: bytes of the storage it lives in (0 for a view of a value allocated earlier).
        producer: ``(node, out)`` that made the value (``node`` may be INPUT, PARAM or CONST).
        name: parameter/buffer name for PARAM values, input position for INPUT values.
    """

    shape: tuple[int, ...]
    dtype: str
    itemsize: int
    storage: int
    storage_bytes: int
    producer: tuple[int, int]
    name: str = ""

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Bytes the tensor's elements occupy."""
        return self.numel * self.itemsize


@dataclass(frozen=True)
class OpNode:
    """One dispatched aten op.

    Attributes:
        index: position in execution order.
        op: overload name, e.g. ``aten.convolution.default``.
        packet: overload packet name, e.g. ``aten.convolution``.
        module: path of the innermost module that ran it (``""`` for the root).
        module_type: class name of that module.
        args: positional arguments; tensors replaced by their :class:`TensorInfo`.
        kwargs: keyword arguments, likewise.
        inputs: every tensor argument, flattened, in order.
        outputs: every tensor result, flattened, in order.
        allocates: per output, whether it got new storage (False for views / in-place).
    """

    index: int
    op: str
    packet: str
    module: str
    module_type: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    allocates: tuple[bool, ...]

    def arg(self, position: int, name: str, default: Any = None) -> Any:
        """An argument by position, or by keyword, or the default."""
        if len(self.args) > position:
            return self.args[position]
        return self.kwargs.get(name, default)


@dataclass(frozen=True)
class ModuleCall:
    """One call of one module (a shared module called twice has two).

    Attributes:
        path: module path (``""`` for the root).
        type: class name.
        first: index of its first op (== ``last + 1`` when it ran no op).
        last: index of its last op.
        inputs: tensor arguments of the call.
        outputs: tensor results of the call.
    """

    path: str
    type: str
    first: int
    last: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass(frozen=True)
class ModuleInfo:
    """Static facts about one module of the model.

    Attributes:
        path: module path.
        type: class name.
        training: the ``training`` flag the user's model had.
        own_params: parameters registered directly on it (names relative to the model).
        attrs: hyper-parameters lints need (kernel_size, bias, ...).
    """

    path: str
    type: str
    training: bool
    own_params: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamInfo:
    """One unique parameter or buffer.

    Attributes:
        name: first name it was found under.
        shape: sizes.
        dtype: dtype name.
        numel: elements.
        nbytes: bytes.
        trainable: ``requires_grad``.
        is_buffer: a buffer (running stats) rather than a parameter.
        aliases: other names of the same tensor (tied weights).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    nbytes: int
    trainable: bool
    is_buffer: bool
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Graph:
    """A captured forward pass.

    Attributes:
        nodes: ops in execution order.
        inputs: the model's tensor inputs.
        outputs: the model's tensor outputs (flattened).
        calls: module calls in the order they finished.
        modules: every module by path.
        params: unique parameters and buffers.
        fallback_reason: why capture ran real tensors instead of meta ones (None when it did not).
    """

    nodes: tuple[OpNode, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    calls: tuple[ModuleCall, ...]
    modules: dict[str, ModuleInfo]
    params: tuple[ParamInfo, ...]
    fallback_reason: str | None = None

    def __iter__(self) -> Iterator[OpNode]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def consumers(self) -> dict[tuple[int, int], list[int]]:
        """Map each produced value ``(node, out)`` to the nodes that read it."""
        users: dict[tuple[int, int], list[int]] = {}
        for node in self.nodes:
            for t in node.inputs:
                users.setdefault(t.producer, []).append(node.index)
        return users
