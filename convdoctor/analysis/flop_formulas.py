"""The MAC formulas on shapes, each with its derivation: unit-testable without a model.

The rules of :mod:`.flops` unwrap an op's tensors and call these; tests check them against
hand arithmetic and published tables (``tests/analysis/test_flop_rules.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def prod(xs: Sequence[int]) -> int:
    """The product of a shape's dims, as a Python int."""
    return math.prod(int(x) for x in xs)


def conv_macs(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int], transposed: bool) -> int:
    """MACs of an N-d convolution.

    Forward: every output element of every output channel accumulates ``Cin/groups * prod(k)``
    products, and the weight holds ``Cout * Cin/groups * prod(k)`` elements, so
    ``MACs = N * prod(out_spatial) * weight.numel()``. Transposed: every *input* element
    scatters into ``Cout/groups * prod(k)`` outputs, so ``N * prod(in_spatial) * weight.numel()``.
    """
    spatial = x_shape[2:] if transposed else out_shape[2:]
    return int(x_shape[0]) * prod(spatial) * prod(w_shape)


def mm_macs(a_shape: Sequence[int], b_shape: Sequence[int]) -> int:
    """``[n, k] @ [k, m]``: ``n * k * m`` MACs."""
    return int(a_shape[0]) * int(a_shape[1]) * int(b_shape[1])


def bmm_macs(a_shape: Sequence[int], b_shape: Sequence[int]) -> int:
    """``[b, n, k] @ [b, k, m]``: ``b * n * k * m`` MACs."""
    return int(a_shape[0]) * int(a_shape[1]) * int(a_shape[2]) * int(b_shape[2])


def attention_macs(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """Scaled dot-product attention: ``Q K^T`` then ``softmax(.) V``.

    ``[..., L, E] x [..., S, E]`` gives ``batch * L * S * E`` MACs, then ``[..., L, S] x
    [..., S, Ev]`` gives ``batch * L * S * Ev``. ``batch`` is the product of leading dims.
    """
    batch = prod(q_shape[:-2])
    length, e = int(q_shape[-2]), int(q_shape[-1])
    s, ev = int(k_shape[-2]), int(v_shape[-1])
    return batch * length * s * (e + ev)


def adaptive_pool_reads(in_size: Sequence[int], out_size: Sequence[int]) -> int:
    """Input elements read per channel by adaptive pooling (windows may overlap).

    Window ``i`` on an axis spans ``[floor(i*In/Out), ceil((i+1)*In/Out))``.
    """
    total = 1
    for n_in, n_out in zip(in_size, out_size):
        total *= sum(-(-(i + 1) * n_in // n_out) - (i * n_in // n_out) for i in range(n_out))
    return total
