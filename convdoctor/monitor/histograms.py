"""Per-layer histograms of gradients and activations, kept on the device between syncs.

Bins are powers of two with a sign: a value ``x`` falls in the bin of ``floor(log2|x|)``,
clamped to ``[HIST_LO, HIST_HI]``, on its side of zero, and exact zeros have a bin of their
own. Gradients and activations span many orders of magnitude (a badly initialised net's
first-layer gradients sit at 1e-12, an exploding one's at 1e4), which linear bins over
``[min, max]`` would squash into one bar; fixed bins also need no ``min``/``max`` read back
before counting, so a histogram is a handful of elementwise kernels and one ``torch.histc``,
with no host sync. A histogram row holds the ``BINS`` counts, then the min, max, sum and sum
of squares (what TensorBoard's histogram records carry). Counts are exact: tensors are counted
in chunks of at most 2**24 elements (float32 counts are exact up to there), summed in float64.
NaN elements are not counted; +-Inf fall in the outermost bins. Under
``torch.use_deterministic_algorithms(True)`` on CUDA, where ``histc`` is refused, the counts come
from a sort of the bin offsets instead (the same numbers, still on the device).

What is recorded, on the sampled steps that are multiples of ``HIST_EVERY`` samples (every
other sync interval at ``every=1``): the gradient of every conv/linear weight, and the output of every
conv/linear layer (before its nonlinearity) in training-mode forward passes with autograd on
(a validation pass under ``torch.no_grad()`` or in eval mode is left out; several forwards in
one step, as with gradient accumulation, add up; a compiled model gets no forward hooks, so
gradient histograms only). Under DDP/FSDP2 each rank counts what it holds
(its own batch's activations, its shard of the gradients).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .hooks import HookSet
from .shard import local

#: Smallest and largest power of two with its own bin: 2**-32 (2.3e-10) to 2**16 (65536).
HIST_LO, HIST_HI = -32, 16
#: Magnitude bins per sign.
MAGNITUDES = HIST_HI - HIST_LO + 1
#: Bins: negative magnitudes (largest first), zero, positive magnitudes.
BINS = 2 * MAGNITUDES + 1
#: Columns after the counts: min, max, sum, sum of squares.
STATS = 4
#: Sampled steps between histograms (50: every other sync interval at ``every=1``). On one CPU
#: core the histograms of resnet18's 11.7M gradients and 17M activations (32x32 inputs, batch 32)
#: take about 0.35 s: 1.4% of a 1 s step every 25th step, 0.7% every 50th
#: (``benchmarks/monitor_overhead.py``, docs/monitor.md).
HIST_EVERY = 50
#: Histogram steps kept for the report and plots (the first one is always kept as well).
HIST_KEEP = 16
#: Elements counted per ``histc`` call: float32 counts are exact up to 2**24.
CHUNK = 1 << 24


def bucket_limits() -> list[float]:
    """The right edge of each bin, ascending (TensorBoard's ``bucket_limit``).

    Bin ``i`` holds the values between limit ``i - 1`` and limit ``i``: ``[2**e, 2**(e+1))`` on the
    positive side, ``(-2**(e+1), -2**e]`` on the negative side; the innermost non-zero bins also
    hold everything closer to zero, the outermost everything beyond.
    """
    neg = [-(2.0**e) for e in range(HIST_HI, HIST_LO - 1, -1)]
    pos = [2.0 ** (e + 1) for e in range(HIST_LO, HIST_HI + 1)]
    return [*neg, 0.0, *pos]


def signed_bin(v: torch.Tensor) -> torch.Tensor:
    """Each element's bin offset from the zero bin (``-MAGNITUDES..MAGNITUDES``), as float32."""
    t = v.abs().log2_().floor_().clamp_(HIST_LO, HIST_HI).sub_(HIST_LO - 1)
    return t.mul_(v.sign())


def _histc_counts(part: torch.Tensor) -> torch.Tensor:
    return torch.histc(part, bins=BINS, min=-MAGNITUDES - 0.5, max=MAGNITUDES + 0.5)


def _sorted_counts(part: torch.Tensor) -> torch.Tensor:
    """The same counts without ``histc``, whose CUDA kernel (atomic adds) is refused under
    ``torch.use_deterministic_algorithms(True)``: sort the bin offsets (integers; NaN moved out of
    range, as ``histc`` skips it) and find the half-integer bin edges in them, on the device."""
    ordered = torch.sort(torch.nan_to_num(part, nan=float(4 * MAGNITUDES))).values
    edges = torch.arange(BINS + 1, device=part.device, dtype=part.dtype) - (MAGNITUDES + 0.5)
    return torch.diff(torch.searchsorted(ordered, edges))


def _counts(part: torch.Tensor) -> torch.Tensor:
    if part.is_cuda and torch.are_deterministic_algorithms_enabled():
        return _sorted_counts(part)
    return _histc_counts(part)


@torch.no_grad()
def histogram(x: torch.Tensor) -> torch.Tensor:
    """``(BINS + STATS,)`` float64 on ``x``'s device: the bin counts, then min, max, sum, sum of squares."""
    v = x.detach().reshape(-1).float()
    counts = torch.zeros(BINS, dtype=torch.float64, device=v.device)
    for start in range(0, v.numel(), CHUNK):
        part = signed_bin(v[start : start + CHUNK])
        counts += _counts(part).double()
    if v.numel() == 0:
        return torch.cat([counts, torch.tensor([np.inf, -np.inf, 0.0, 0.0], dtype=torch.float64, device=v.device)])
    lo, hi = torch.aminmax(v)
    stats = torch.stack(
        [
            lo.double(),
            hi.double(),
            v.sum(dtype=torch.float64),
            torch.linalg.vector_norm(v, dtype=torch.float64).square(),
        ]
    )
    return torch.cat([counts, stats])


def merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two histogram rows of the same layer as one (counts and sums add; min and max combine)."""
    return torch.cat(
        [
            a[:BINS] + b[:BINS],
            torch.minimum(a[BINS : BINS + 1], b[BINS : BINS + 1]),
            torch.maximum(a[BINS + 1 : BINS + 2], b[BINS + 1 : BINS + 2]),
            a[BINS + 2 :] + b[BINS + 2 :],
        ]
    )


#: One histogram step read back: ``(step, layers, activation rows, gradient rows)``, each rows
#: array ``(len(layers), BINS + STATS)`` (a layer without data that step has all-zero counts).
HistStep = tuple[int, tuple[str, ...], np.ndarray, np.ndarray]


class HistogramProbe:
    """Records the histograms on the device and keeps the read-back ones for reports.

    Args:
        owners: weight parameter name -> (module path, module) of the conv/linear layers.
        step: returns the step being recorded (the collector's step count).
        every: the monitor's sampling period.
        enabled: False records nothing.
        activations: install the forward hooks (False for compiled models: a hook that reads the
            step count would be traced into the graph and recompile it every step).
    """

    def __init__(
        self,
        owners: dict[str, tuple[str, nn.Module]],
        step: Callable[[], int],
        every: int,
        *,
        enabled: bool = True,
        activations: bool = True,
    ) -> None:
        self._params = {path: module for _, (path, module) in owners.items()}
        self._step, self.every, self.enabled = step, every, enabled
        self.layers: list[str] = []
        self._pending: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
        self.first: HistStep | None = None
        self.kept: deque[HistStep] = deque(maxlen=HIST_KEEP)
        self._hooks = HookSet()
        if enabled and activations:
            for path, module in self._params.items():
                self._hooks.add(module.register_forward_hook(self._make(path)))

    def due(self, step: int) -> bool:
        """Whether ``step`` is a histogram step."""
        return self.enabled and step % self.every == 0 and (step // self.every) % HIST_EVERY == 0

    def _add(self, step: int, kind: str, path: str, row: torch.Tensor) -> None:
        if path not in self.layers:
            self.layers.append(path)
        rows = self._pending.setdefault(step, {"act": {}, "grad": {}})[kind]
        rows[path] = merge(rows[path], row) if path in rows else row

    def _make(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            step = self._step()
            if module.training and torch.is_grad_enabled() and isinstance(output, torch.Tensor) and self.due(step):
                self._add(step, "act", path, histogram(output))

        return hook

    def record_gradients(self, step: int) -> None:
        """On histogram steps, the histogram of every conv/linear weight's gradient."""
        if not self.due(step):
            return
        for path, module in self._params.items():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.grad is not None:
                self._add(step, "grad", path, histogram(local(weight.grad)))

    def pull(self) -> list[HistStep]:
        """Read the pending histograms back (one copy to the host) and return them, oldest first."""
        if not self._pending:
            return []
        names = tuple(self.layers)
        steps = sorted(self._pending)
        ref = next(r for s in steps for kind in self._pending[s].values() for r in kind.values())
        blank = torch.zeros(BINS + STATS, dtype=torch.float64, device=ref.device)
        rows = [self._pending[s][kind].get(name, blank) for s in steps for kind in ("act", "grad") for name in names]
        dev = rows[0].device
        host = torch.stack([r.to(dev) for r in rows]).cpu().numpy().reshape(len(steps), 2, len(names), -1)
        self._pending.clear()
        out: list[HistStep] = [(s, names, host[i, 0], host[i, 1]) for i, s in enumerate(steps)]
        for item in out:
            if self.first is None:
                self.first = item
            else:
                self.kept.append(item)
        return out

    def history(self) -> dict[str, Any]:
        """Plot data: ``limits``, then per kept step (the first included) its ``step``, ``layers``,
        and the ``act`` and ``grad`` rows (counts then min, max, sum, sum of squares)."""
        steps = ([self.first] if self.first is not None else []) + list(self.kept)
        return {
            "limits": bucket_limits(),
            "steps": [
                {"step": s, "layers": list(names), "act": act.tolist(), "grad": grad.tolist()}
                for s, names, act, grad in steps
            ],
        }

    def state_dict(self) -> dict[str, Any]:
        """The kept histograms as plain values and tensors (``weights_only`` safe)."""
        steps = ([self.first] if self.first is not None else []) + list(self.kept)
        return {
            "layers": list(self.layers),
            "has_first": self.first is not None,
            "steps": [[s, list(n), torch.from_numpy(a), torch.from_numpy(g)] for s, n, a, g in steps],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.layers = list(state["layers"])
        steps = [(int(s), tuple(n), a.numpy(), g.numpy()) for s, n, a, g in state["steps"]]
        self.first = steps[0] if state["has_first"] and steps else None
        self.kept.clear()
        self.kept.extend(steps[1:] if self.first is not None else steps)

    def remove(self) -> None:
        """Remove the forward hooks (idempotent)."""
        self._hooks.remove()
