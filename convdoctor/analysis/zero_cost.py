"""Ops that truly cost no arithmetic, each with the reason it is free.

Anything here is *known-zero*; anything in neither this list nor a FLOP rule is
*uncounted* and reported as such (STYLE.md: three outcomes, never two). Data movement is
free of FLOPs but not of memory traffic: the memory analysis still counts its bytes.
"""

from __future__ import annotations

from torch._ops import ops

aten = ops.aten

_VIEW = "a view: new sizes/strides over the same storage, no element is touched"
_ALLOC = "allocation or fill: memory is written, nothing is computed"
_MOVE = "data movement: elements are copied or gathered, no arithmetic"
_META = "metadata only"

#: packet name -> reason it costs zero FLOPs.
ZERO_COST: dict[str, str] = {}


def _add(reason: str, *packets: object) -> None:
    for p in packets:
        key = str(p)
        if key in ZERO_COST:
            raise ValueError(f"{key} listed twice in ZERO_COST")
        ZERO_COST[key] = reason


_add(
    _VIEW,
    aten.view,
    aten._unsafe_view,
    aten.reshape,
    aten._reshape_alias,
    aten.t,
    aten.transpose,
    aten.permute,
    aten.expand,
    aten.squeeze,
    aten.unsqueeze,
    aten.slice,
    aten.select,
    aten.split,
    aten.split_with_sizes,
    aten.unbind,
    aten.alias,
    aten.detach,
    aten.as_strided,
    aten.as_strided_,
    aten.unfold,
    aten.view_as_real,
    aten.view_as_complex,
    aten.narrow,
    aten.diagonal,
    aten.flatten,
    aten.movedim,
    aten.chunk,
    aten.tensor_split,
)
_add(
    _ALLOC,
    aten.empty,
    aten.empty_like,
    aten.empty_strided,
    aten.new_empty,
    aten.new_empty_strided,
    aten.new_zeros,
    aten.new_ones,
    aten.new_full,
    aten.zeros,
    aten.zeros_like,
    aten.ones,
    aten.ones_like,
    aten.full,
    aten.full_like,
    aten.scalar_tensor,
    aten.arange,
    aten.fill_,
    aten.fill,
    aten.zero_,
    aten.lift_fresh,
    aten.lift_fresh_copy,
    aten.linspace,
)
_add(
    _MOVE,
    aten.clone,
    aten.copy_,
    aten.copy,
    aten._to_copy,
    aten.cat,
    aten.stack,
    aten.constant_pad_nd,
    aten.reflection_pad1d,
    aten.reflection_pad2d,
    aten.replication_pad1d,
    aten.replication_pad2d,
    aten.roll,
    aten.flip,
    aten.index,
    aten.index_select,
    aten.gather,
    aten.embedding,
    aten.channel_shuffle,
    aten.pixel_shuffle,
    aten.pixel_unshuffle,
    aten.repeat,
    aten.im2col,
    aten.col2im,
    aten.tril,
    aten.triu,
    aten.upsample_nearest1d,
    aten.upsample_nearest2d,
    aten.upsample_nearest3d,
    aten._upsample_nearest_exact2d,
    aten.slice_scatter,
    aten.select_scatter,
    aten.index_put_,
    aten._index_put_impl_,
    aten.masked_scatter,
    aten.contiguous,
)
_add(
    _META,
    aten.sym_size,
    aten.sym_stride,
    aten.sym_numel,
    aten.sym_storage_offset,
    aten._local_scalar_dense,
    aten.resize_,
    aten.set_,
)
