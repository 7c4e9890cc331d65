"""``bench`` and ``compare``: latency the way production sees it.

Per model and batch size: warm p50/p90/p99 from one-call samples after a warm-up that is
reported apart (:mod:`.timing`), throughput, cold start in a fresh process (:mod:`.cold`),
peak memory and per-module time (:mod:`.profile`), MACs and arithmetic intensity from the
captured graph (:mod:`._costs`), labelled compute- or memory-bound against this machine's
measured peaks (:mod:`.probe`). Every run happens in eval mode under
``torch.inference_mode`` inside :func:`~convdoctor._guard.preserve_model_state`: the
user's model, its flags, hooks and the thread count are as they were afterwards.

Where each part lives: :mod:`.run` (``bench``, ``compare``: validate, load, one row per
model and batch), :mod:`.row` (one row: timing, profile, costs, cold start, per-layer
labels), :mod:`.target` (the model and its call at each batch size), :mod:`._options`
(argument validation, :class:`BenchOptions`), :mod:`._findings` (BENCH_NOISY,
COLD_START_SLOW, MACS_NOT_LATENCY), :mod:`._benchmark` (the quiet ``torch.utils.benchmark``
import every module here relies on).
"""

from __future__ import annotations

from . import _benchmark  # noqa: F401  (first: imports torch.utils.benchmark quietly)
from ._options import BenchOptions, Device, Dtype
from .probe import MachinePeaks, machine_peaks
from .run import bench, compare
from .timing import BenchResult

__all__ = ["BenchOptions", "BenchResult", "Device", "Dtype", "MachinePeaks", "bench", "compare", "machine_peaks"]
