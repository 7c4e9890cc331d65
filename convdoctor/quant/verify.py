"""After quantizing, measure the int8 model against fp32 on a batch the observers did not see.

Three models run on the held-out batch: the fp32 original, the int8 *reference* (int8 weights
and activation grids, computed in fp32: what the quantization itself costs), and the model
that will serve (oneDNN's int8 kernels: what this CPU adds). The two gaps name the cause:

- kernels vs reference: the int8 arithmetic of this CPU loses what the reference keeps. The
  known case is u8 x s8 pair sums saturating int16 on a CPU without VNNI; :mod:`.isa`
  prevents it, and this check catches the cases the probe did not predict.
- reference vs fp32: the int8 grids themselves are too coarse for some activation (an
  outlier channel, calibration data that does not look like the inputs).

Only the verdict is a threshold; the numbers are kept in the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._compat import tree_flatten
from .findings import MAX_DISAGREEMENT, MIN_FLIPS

__all__ = ["MAX_RELATIVE_ERROR", "Verification", "verify_int8"]

#: Relative output error (L2 norm of int8 - fp32 over the L2 norm of fp32) above which the int8
#: model counts as poor. Per-tensor 8-bit activations give a few percent on CNNs; a
#: saturating kernel gave 30-50% in our measurements, so 10% separates the two with margin.
MAX_RELATIVE_ERROR = 0.10


def _flat(out: Any) -> torch.Tensor:
    leaves = [t.detach().float().reshape(t.shape[0], -1) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    return torch.cat(leaves, dim=1) if leaves else torch.zeros(0, 0)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    norm = float(b.norm())
    return float((a - b).norm()) / norm if norm > 0 else float((a - b).norm())


@dataclass(frozen=True)
class Verification:
    """The int8 model against fp32 on held-out samples.

    Attributes:
        samples: held-out samples measured.
        held_out: False when calibration had one batch only, so it was measured on that batch.
        relative_error: L2 error of the serving int8 model against fp32, relative to fp32's norm.
        kernel_error: L2 error of the serving model against the int8 reference, relative (the CPU's share).
        reference_error: L2 error of the int8 reference against fp32, relative (the quantization's share).
        flips: samples whose top-1 class changed (2-D outputs with more than one class), else None.
        top1_agreement: fraction of samples with the same top-1 class, else None.
        poor: the verdict (see :data:`MAX_RELATIVE_ERROR` and the audit's flip thresholds).
    """

    samples: int
    held_out: bool
    relative_error: float
    kernel_error: float
    reference_error: float
    flips: int | None
    top1_agreement: float | None
    poor: bool

    @property
    def likely_cause(self) -> str:
        """Which gap dominates, in words (``""`` when the model is not poor)."""
        if not self.poor:
            return ""
        if self.kernel_error >= self.reference_error:
            return (
                "the int8 kernels disagree with the int8 reference: this CPU's integer arithmetic "
                "loses precision (accumulation saturating without VNNI)"
            )
        return (
            "the int8 grids are too coarse for some activations (an outlier channel or "
            "calibration data unlike the inputs)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "samples": self.samples,
            "held_out": self.held_out,
            "relative_error": self.relative_error,
            "kernel_error": self.kernel_error,
            "reference_error": self.reference_error,
            "flips": self.flips,
            "top1_agreement": self.top1_agreement,
            "poor": self.poor,
            "likely_cause": self.likely_cause,
        }


def verify_int8(
    fp32: nn.Module, reference: nn.Module, serving: nn.Module, batch: torch.Tensor, held_out: bool
) -> Verification:
    """Measure ``serving`` (and ``reference``) against ``fp32`` on ``batch``.

    Args:
        fp32: the float model in eval mode (a copy: it runs).
        reference: the converted int8 reference model.
        serving: the model that will serve (the lowered graph, or the reference when not lowered).
        batch: inputs the observers did not see, where possible.
        held_out: whether ``batch`` was held out of calibration.

    Returns:
        The measurements and the verdict.
    """
    with torch.no_grad():
        raw = fp32(batch)
        f, r, s = _flat(raw), _flat(reference(batch)), _flat(serving(batch))
    flips = agreement = None
    # top-1 only for class scores: one (N, C) tensor; a feature map's argmax is no prediction
    if isinstance(raw, torch.Tensor) and raw.dim() == 2 and raw.shape[1] > 1 and f.shape == s.shape:
        changed = f.argmax(1) != s.argmax(1)
        flips, agreement = int(changed.sum()), 1.0 - float(changed.float().mean())
    rel = _relative(s, f)
    poor = rel > MAX_RELATIVE_ERROR or (
        flips is not None and agreement is not None and flips >= MIN_FLIPS and 1.0 - agreement > MAX_DISAGREEMENT
    )
    return Verification(
        samples=int(batch.shape[0]),
        held_out=held_out,
        relative_error=rel,
        kernel_error=_relative(s, r),
        reference_error=_relative(r, f),
        flips=flips,
        top1_agreement=agreement,
        poor=poor,
    )
