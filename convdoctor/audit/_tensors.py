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


#: Dict keys (and namedtuple/attribute names) that by convention hold the class scores:
#: Hugging Face ``ModelOutput.logits``, a torchvision-style ``{"out": ...}``.
SCORE_KEYS = ("logits", "out")

Key = str | int


@dataclass(frozen=True)
class Scores:
    """Where the ``(N, classes)`` scores sit in a model's output: a path of keys and indices."""

    path: tuple[Key, ...] = ()

    def describe(self) -> str:
        """``output``, ``output['logits']``, ``output[0]``."""
        return "output" + "".join(f"[{k!r}]" for k in self.path)

    def __call__(self, out: Any) -> torch.Tensor | None:
        """The scores inside ``out`` (None when the path or the shape no longer fits)."""
        for k in self.path:
            try:
                out = _child(out, k)
            except (KeyError, IndexError, AttributeError, TypeError):
                return None
        return logits(out)


def _child(out: Any, key: Key) -> Any:
    if isinstance(out, dict) or isinstance(key, int):
        return out[key]
    return getattr(out, key)


def _children(out: Any) -> list[tuple[Key, Any]]:
    if isinstance(out, dict):
        return list(out.items())
    if isinstance(out, (list, tuple)):
        return list(enumerate(out))
    return []


def _candidates(out: Any, path: tuple[Key, ...] = ()) -> list[tuple[Key, ...]]:
    """Paths of every 2-D floating leaf of a nested output."""
    if logits(out) is not None:
        return [path]
    return [p for k, v in _children(out) for p in _candidates(v, (*path, k))]


def find_scores(out: Any, key: Key | None = None) -> tuple[Scores | None, str]:
    """Locate the class scores in an output; ``(None, reason)`` when there is no single answer.

    Order: ``key`` when the user names one (a dict key, a tuple index or an attribute);
    the output itself when it is ``(N, C)``; a conventional name (:data:`SCORE_KEYS`) at
    the top level; the one 2-D floating tensor among the leaves. Several candidates
    without a name to choose by are ambiguous: guessing would make the accuracy table
    describe the wrong head.
    """
    if key is not None:
        found = Scores((key,))
        if found(out) is None:
            return None, f"{found.describe()} is not (N, classes) scores (the output is {structure(out)})"
        return found, ""
    if logits(out) is not None:
        return Scores(), ""
    for name in SCORE_KEYS:
        found = Scores((name,))
        if (isinstance(out, dict) and name in out or hasattr(out, name)) and found(out) is not None:
            return found, ""
    paths = _candidates(out)
    if len(paths) == 1:
        return Scores(paths[0]), ""
    if not paths:
        return None, f"no (N, classes) tensor in the output ({structure(out)})"
    named = ", ".join(Scores(p).describe() for p in paths[:4])
    return None, f"several (N, C) tensors could be the class scores ({named}); name one with scores="


def _round(v: float) -> float:
    if not math.isfinite(v) or v == 0.0:
        return v
    return float(f"{v:.4g}")
