"""Peak compute and memory bandwidth of this machine, measured once and cached.

Two short probes, timed with ``torch.utils.benchmark.Timer.blocked_autorange``; each
probe's rate comes from its *fastest* block. A peak is what the machine can do, and other
work on the machine only ever slows a block down, so the best block is the estimate that
a busy machine biases least (a median measured during someone else's job would be cached
as this machine's peak):

* **compute**: ``torch.mm`` of two ``MATMUL_N x MATMUL_N`` matrices into a preallocated
  output, ``MATMUL_N**3`` multiply-accumulates per call -> GMAC/s.
* **memory**: ``dst.copy_(src)`` of ``COPY_BYTES`` bytes, which reads ``COPY_BYTES`` and
  writes ``COPY_BYTES`` -> ``2 * COPY_BYTES`` bytes moved per call -> GB/s.

Their ratio is the roofline *ridge point* in MACs per byte: a layer whose arithmetic
intensity (MACs per byte it moves) sits below the ridge cannot reach peak compute
however fast its kernel is; it is memory-bound. Results are cached per device name,
thread count, dtype and torch version in ``peaks.json`` in convdoctor's cache folder
(``$CONVDOCTOR_CACHE_DIR``, default ``$XDG_CACHE_HOME/convdoctor`` or ``~/.cache/convdoctor``;
``CONVDOCTOR_CACHE_DIR=off`` measures every time); ``refresh=True`` measures again. The probe runs under whatever else the machine is doing: on a busy
machine the peaks are low, and the ridge point moves less than either peak.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import Timer

from .._cache import cache_root
from .timing import clock_for

log = logging.getLogger(__name__)

#: Matmul side: 1024 is large enough to reach BLAS peak on CPUs and small enough (4 MiB
#: per fp32 matrix) to keep the probe under a second.
MATMUL_N = 1024
#: Copy size: 64 MiB, well past any last-level cache, so the copy measures DRAM.
COPY_BYTES = 64 * 2**20
#: Seconds each probe samples for.
PROBE_RUN_TIME = 0.3
_CACHE_FILE = "peaks.json"


@dataclass(frozen=True)
class MachinePeaks:
    """Measured peaks of one device at one thread count and dtype.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        device_name: CPU model or GPU name.
        threads: intra-op threads the probes ran with.
        dtype: dtype name of the probes.
        gmacs_per_s: matmul rate, 1e9 multiply-accumulates per second.
        gbytes_per_s: copy bandwidth, 1e9 bytes (read + written) per second.
        torch_version: torch that measured it.
        measured_at: UTC time of the measurement, ISO 8601.
        cached: whether this value came from the cache file.
    """

    device: str
    device_name: str
    threads: int
    dtype: str
    gmacs_per_s: float
    gbytes_per_s: float
    torch_version: str
    measured_at: str
    cached: bool = False

    @property
    def ridge(self) -> float:
        """MACs per byte at which compute and bandwidth limits meet."""
        return self.gmacs_per_s / self.gbytes_per_s

    def bound(self, intensity: float) -> str:
        """``"memory-bound"`` below the ridge point, ``"compute-bound"`` at or above it."""
        return "memory-bound" if intensity < self.ridge else "compute-bound"

    def attainable_gmacs(self, intensity: float) -> float:
        """Roofline ceiling for this intensity: ``min(peak, intensity * bandwidth)``."""
        return min(self.gmacs_per_s, intensity * self.gbytes_per_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, ridge point included."""
        return {**asdict(self), "ridge_macs_per_byte": self.ridge}


def cache_dir() -> Path | None:
    """convdoctor's cache folder (``$CONVDOCTOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/convdoctor``,
    else ``~/.cache/convdoctor``); None when ``CONVDOCTOR_CACHE_DIR=off``."""
    return cache_root()


def device_name(device: str) -> str:
    """CPU model (from /proc/cpuinfo where there is one) or CUDA device name."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _key(device: str, name: str, threads: int, dtype: torch.dtype) -> str:
    return f"{device}|{name}|threads={threads}|{str(dtype).removeprefix('torch.')}|torch={torch.__version__}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    """Atomic write (temp file + rename); an unwritable cache only costs a re-measure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".peaks-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot write the peaks cache %s: %s", path, exc)


def _best_seconds(stmt: str, env: dict[str, Any], threads: int, device: str) -> float:
    """Seconds per call of the fastest block (see the module docstring for why not the median)."""
    timer = Timer(stmt=stmt, globals=env, num_threads=threads, timer=clock_for(device), label="convdoctor.probe")
    return float(min(timer.blocked_autorange(min_run_time=PROBE_RUN_TIME).times))


def probe(device: str, threads: int, dtype: torch.dtype) -> tuple[float, float]:
    """Run both probes now.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        threads: intra-op threads.
        dtype: floating dtype of the matrices and the copied buffer.

    Returns:
        ``(gmacs_per_s, gbytes_per_s)``.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(MATMUL_N, MATMUL_N, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    out = torch.empty_like(a)
    itemsize = torch.empty((), dtype=dtype).element_size()
    src = torch.ones(COPY_BYTES // itemsize, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    with torch.inference_mode():
        t_mm = _best_seconds("torch.mm(a, b, out=out)", {"a": a, "b": b, "out": out}, threads, device)
        t_copy = _best_seconds("dst.copy_(src)", {"src": src, "dst": dst}, threads, device)
    return MATMUL_N**3 / t_mm / 1e9, 2 * src.numel() * itemsize / t_copy / 1e9


def machine_peaks(
    device: str = "cpu", threads: int | None = None, dtype: torch.dtype = torch.float32, *, refresh: bool = False
) -> MachinePeaks:
    """Peaks of this machine, from the cache or measured now (and cached).

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        threads: intra-op threads (default: the current ``torch.get_num_threads()``).
        dtype: floating dtype to probe.
        refresh: ignore the cache and measure again.

    Returns:
        The peaks.
    """
    threads = threads or torch.get_num_threads()
    dev = torch.device(device).type
    name = device_name(device)
    key = _key(dev, name, threads, dtype)
    folder = cache_dir()
    path = None if folder is None else folder / _CACHE_FILE
    data = {} if path is None else _read_cache(path)
    entry = data.get(key)
    if not refresh and isinstance(entry, dict):
        try:
            return MachinePeaks(**{**entry, "cached": True})
        except TypeError:
            log.debug("ignoring a malformed cache entry for %s", key)
    gmacs, gbytes = probe(device, threads, dtype)
    peaks = MachinePeaks(
        device=dev,
        device_name=name,
        threads=threads,
        dtype=str(dtype).removeprefix("torch."),
        gmacs_per_s=gmacs,
        gbytes_per_s=gbytes,
        torch_version=torch.__version__,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    entry = asdict(peaks)
    entry.pop("cached")
    if path is not None:
        _write_cache(path, {**_read_cache(path), key: entry})
    return peaks
