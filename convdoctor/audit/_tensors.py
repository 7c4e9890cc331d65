"""Flatten model outputs and measure how far two outputs are apart.

Outputs may be a tensor, or dicts, lists, tuples and namedtuples of tensors; they are
flattened in insertion order, which is also the order ``torch.export`` and the ONNX
exporter give their outputs, so flattened eager and exported outputs line up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


def leaves(out: Any) -> list[torch.Tensor]:
    """Every tensor inside a nested output, in insertion order (non-tensors dropped)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in leaves(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in leaves(v)]
    return []


def rows(out: Any, batch: int) -> list[torch.Tensor]:
    """The leaves whose first dimension is the batch (the per-sample outputs)."""
    return [t for t in leaves(out) if t.dim() >= 1 and t.shape[0] == batch]


def structure(out: Any) -> str:
    """A short description of an output's structure and shapes, for evidence."""
    if isinstance(out, torch.Tensor):
        return "x".join(str(d) for d in out.shape) or "scalar"
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k}: {structure(v)}" for k, v in out.items()) + "}"
    if isinstance(out, (list, tuple)):
        return "(" + ", ".join(structure(v) for v in out) + ")"
    return type(out).__name__


@dataclass(frozen=True)
class Diff:
    """How far an output is from a reference.

    Attributes:
        max_abs: largest absolute element difference over all leaves.
        max_rel: ``max_abs`` divided by the output's scale (so 1e-6 means "a millionth of
            the output's scale"); inf when shapes do not match.
        scale: the largest finite magnitude in either output (both count: a reference
            of zeros, e.g. a batch-mean layer on one sample, still has a scale).
    """

    max_abs: float
    max_rel: float
    scale: float

    def exceeds(self, rtol: float) -> bool:
        """Whether the difference is beyond ``rtol`` of the output's scale."""
        return self.max_rel > rtol

    def as_dict(self) -> dict[str, float]:
        """Rounded numbers for evidence."""
        return {"max_abs_diff": _round(self.max_abs), "max_rel_diff": _round(self.max_rel)}


MISMATCH = Diff(math.inf, math.inf, math.nan)


def diff(output: list[torch.Tensor], reference: list[torch.Tensor]) -> Diff:
    """Compare two flattened outputs leaf by leaf.

    Positions that are NaN in both, or the same infinity in both, count as equal; any
    other non-finite difference makes the result infinite.
    """
    if len(output) != len(reference) or any(a.shape != b.shape for a, b in zip(output, reference)):
        return MISMATCH
    max_abs, scale = 0.0, 0.0
    for a, b in zip(output, reference):
        if a.numel() == 0:
            continue
        d_max, s_max = _leaf(a.detach(), b.detach().to(a.device))
        max_abs, scale = max(max_abs, d_max), max(scale, s_max)
    if max_abs == 0.0:
        return Diff(0.0, 0.0, scale)
    return Diff(max_abs, max_abs / scale if scale > 0 else math.inf, scale)


def _leaf(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(largest |a - b|, largest finite magnitude) of one pair of tensors.

    Fast path in float32 (half precision is widened first): when the largest difference is
    finite, every element of both is finite (Inf - Inf is NaN, Inf - x is Inf). Otherwise
    the float64 path matches NaN with NaN and equal infinities.
    """
    if not a.is_floating_point() or a.element_size() < 4:
        a, b = a.float(), b.float()
    d_max = (a - b).abs().max()
    if torch.isfinite(d_max):
        return float(d_max), float(torch.maximum(a.abs().max(), b.abs().max()))
    a64, b64 = a.double(), b.double()
    same = (a64 == b64) | (torch.isnan(a64) & torch.isnan(b64))
    d = torch.nan_to_num(torch.where(same, torch.zeros_like(a64), (a64 - b64).abs()), nan=math.inf)
    finite = [t[torch.isfinite(t)] for t in (a64, b64)]
    return float(d.max()), max((float(t.abs().max()) for t in finite if t.numel()), default=0.0)


def logits(out: Any) -> torch.Tensor | None:
    """The output as ``(N, classes)`` scores when it is one 2-D tensor, else None."""
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.is_floating_point():
        return out
    return None


def _round(v: float) -> float:
    if not math.isfinite(v) or v == 0.0:
        return v
    return float(f"{v:.4g}")
