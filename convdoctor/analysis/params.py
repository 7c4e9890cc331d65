"""Parameter counts and sizes; shared (tied) parameters are counted once."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Graph


@dataclass(frozen=True)
class ParamResult:
    """Parameter statistics.

    Attributes:
        params: unique parameters (buffers excluded).
        trainable_params: of which ``requires_grad``.
        param_bytes: bytes of the unique parameters in their own dtypes.
        buffer_bytes: bytes of buffers (running statistics and the like).
        bytes_by_dtype: parameter bytes per dtype name.
        size_as: model size (parameters only) if stored as fp32 / fp16 / int8.
        shared: names of parameters reachable under more than one name.
        per_module: module path -> unique parameters in it and below.
    """

    params: int
    trainable_params: int
    param_bytes: int
    buffer_bytes: int
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    size_as: dict[str, int] = field(default_factory=dict)
    shared: tuple[str, ...] = ()
    per_module: dict[str, int] = field(default_factory=dict)


#: bytes per element of the storage formats in ``size_as``.
STORAGE_FORMATS = {"fp32": 4, "fp16": 2, "int8": 1}


def count_params(graph: Graph) -> ParamResult:
    """Count the graph's unique parameters, per module and in total."""
    params = [p for p in graph.params if not p.is_buffer]
    by_dtype: dict[str, int] = {}
    for p in params:
        by_dtype[p.dtype] = by_dtype.get(p.dtype, 0) + p.nbytes
    total = sum(p.numel for p in params)
    per_module: dict[str, int] = {path: 0 for path in graph.modules}
    for p in params:
        owners: set[str] = set()
        for name in (p.name, *p.aliases):
            parts = name.split(".")[:-1]
            owners.update(".".join(parts[:i]) for i in range(len(parts) + 1))
        for path in owners:  # a tied parameter counts once per module that holds it
            if path in per_module:
                per_module[path] += p.numel
    return ParamResult(
        params=total,
        trainable_params=sum(p.numel for p in params if p.trainable),
        param_bytes=sum(p.nbytes for p in params),
        buffer_bytes=sum(p.nbytes for p in graph.params if p.is_buffer),
        bytes_by_dtype=by_dtype,
        size_as={k: total * v for k, v in STORAGE_FORMATS.items()},
        shared=tuple(p.name for p in params if p.aliases),
        per_module=per_module,
    )
