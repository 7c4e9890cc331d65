"""Which int8 path oneDNN takes on this CPU, measured rather than looked up.

oneDNN multiplies u8 activations by s8 weights. With VNNI (``vpdpbusd``, AVX-512 VNNI or
AVX-VNNI) and AMX, each product is summed straight into int32. Without VNNI (AVX2 before
Alder Lake, Skylake's AVX-512), the kernels use ``vpmaddubsw``, which adds *pairs* of products
into int16 and saturates: a pair like 255 x 127 + 255 x 127 = 64,770 does not fit in 32,767. On
such a CPU, activations that use the full u8 range lose accuracy without any warning.
Quantizing activations to 7 bits (``reduce_range=True``, 0..127) keeps every pair sum below
127 x 128 x 2 = 32,512, so the kernel is exact again, and so does quantizing weights to 7 bits
(255 x 64 x 2 = 32,640); :mod:`.bits` chooses, layer by layer, which one is worth its coarser grid.

The cap that ``ONEDNN_MAX_CPU_ISA`` sets is honoured only by oneDNN itself, and torch 2.14 no
longer reports VNNI. So :func:`int8_path` asks the kernel: it runs one 3x3 int8 convolution
on saturating values (255 everywhere, weights 127) and compares the output with the exact
int32 sum. That measurement decides. oneDNN's verbose line names the kernel that ran, for the
report. oneDNN reads its ISA cap once per process, so the answer is cached for the process.
"""

from __future__ import annotations

import functools
import json
import logging
import platform
from dataclasses import dataclass

import torch

from .._native import capture_native
from ..errors import UsageError, one_line
from .bits import grids_by_layer

__all__ = ["Int8Path", "SavedOrigin", "UnsupportedHardware", "activation_bits", "int8_path", "warn_if_saturates"]

log = logging.getLogger(__name__)

#: Machine names of the x86-64 CPUs the x86 PT2E path (oneDNN int8 kernels) runs on.
X86_MACHINES = ("x86_64", "amd64", "i686", "i386", "x86")
#: Probe size: 16 input channels make 8 u8 x s8 pairs per tap, so every pair saturates.
_CHANNELS = 16
_U8_MAX, _S8_MAX = 255, 127


class UnsupportedHardware(UsageError):
    """The int8 path cannot run on this machine: a non-x86 CPU, or a torch built without oneDNN."""


@dataclass(frozen=True)
class Int8Path:
    """The int8 kernel path on this CPU, as oneDNN runs it.

    Attributes:
        kernel: oneDNN's implementation name for a u8 x s8 conv (``"brg_conv_fwd:avx512_core_vnni"``,
            ``"jit_uni_int8:avx2"``), or ``"unknown"`` when oneDNN's verbose output could not be read.
        isa: the ISA part of ``kernel`` (``"avx512_core_vnni"``, ``"avx2"``), or ``"unknown"``.
        saturates: whether the probe convolution lost precision on full-range u8 inputs (measured).
        exact_ratio: the probe's output divided by the exact int32 sum (1.0 when exact).
        reduce_range: whether activations may need 7 bits here (follows ``saturates``); which
            layers take them is measured per layer by :func:`convdoctor.quant.quantize_int8`.
    """

    kernel: str
    isa: str
    saturates: bool
    exact_ratio: float
    reduce_range: bool

    @property
    def description(self) -> str:
        """One line for reports: the path and why its settings follow."""
        name = self.isa.upper() if self.isa != "unknown" else "this CPU"
        if self.saturates:
            return (
                f"{name} without VNNI: 7-bit activations or weights where a layer measures closer to fp32 with them "
                f"(u8 x s8 pair sums saturate int16 here: a full-range probe came out at "
                f"{self.exact_ratio:.3f} of the exact sum)"
            )
        return f"{name}: 8-bit activations (int8 products summed exactly into int32)"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready record."""
        return {
            "kernel": self.kernel,
            "isa": self.isa,
            "saturates": self.saturates,
            "exact_ratio": self.exact_ratio,
            "reduce_range": self.reduce_range,
            "description": self.description,
        }


@dataclass(frozen=True)
class SavedOrigin:
    """Where a saved int8 program was quantized, read from its ``convdoctor.json`` entry.

    Attributes:
        saturates: whether the int8 kernels it was quantized on saturate (no VNNI), None if not recorded.
        grids_measured: whether its grids were chosen per layer by running those kernels (:mod:`.bits`).
        kernel: the oneDNN kernel it was quantized on, ``"unknown"`` if not recorded.
    """

    saturates: bool | None
    grids_measured: bool
    kernel: str

    @classmethod
    def parse(cls, text: str) -> SavedOrigin | None:
        """The record in an entry's text; None for an empty or malformed one (the file is not trusted)."""
        try:
            data = json.loads(text)
        except ValueError:  # "" included: the file has no record
            return None
        path = data.get("int8_path") if isinstance(data, dict) else []
        if path is None:
            path = {}  # quantized where the int8 path was not measured
        if not isinstance(data, dict) or not isinstance(path, dict):
            return None
        saturates, kernel = path.get("saturates"), path.get("kernel")
        return cls(
            saturates=saturates if isinstance(saturates, bool) else None,
            grids_measured=data.get("grids_measured") is True,
            kernel=kernel[:80] if isinstance(kernel, str) else "unknown",
        )


def _probe_conv() -> tuple[float, float]:
    """Run the probe convolution: (its output, the exact int32 sum)."""
    x = torch.full((1, _CHANNELS, 3, 3), _U8_MAX, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    w = torch.full((_CHANNELS, _CHANNELS, 3, 3), _S8_MAX, dtype=torch.int8)
    w_scale = torch.ones(_CHANNELS)
    w_zp = torch.zeros(_CHANNELS, dtype=torch.int64)
    unit = [1, 1]
    packed = torch.ops.onednn.qconv_prepack(w, w_scale, 1.0, 0, unit, [0, 0], unit, 1, list(x.shape))
    y = torch.ops.onednn.qconv_pointwise(
        x, 1.0, 0, packed, w_scale, w_zp, None, unit, [0, 0], unit, 1, 1.0, 0, torch.float32, "none", [], ""
    )
    return float(y.flatten()[0]), float(_U8_MAX * _S8_MAX * _CHANNELS * 9)


def _kernel_name(verbose: str) -> str:
    """The implementation field of oneDNN's int8 convolution exec line, or ``"unknown"``."""
    for line in verbose.splitlines():
        fields = line.split(",")
        # onednn_verbose,v1,primitive,exec,cpu,convolution,<impl>,forward_inference,src:u8...
        if "exec" in fields and "convolution" in fields and "src:u8" in line:
            impl = fields[fields.index("convolution") + 1]
            return impl.strip() or "unknown"
    return "unknown"


def check_x86() -> None:
    """Raise :class:`UnsupportedHardware` unless the x86 oneDNN int8 path can run here."""
    machine = platform.machine().lower()
    if machine not in X86_MACHINES:
        raise UnsupportedHardware(
            f"static INT8 uses the x86 oneDNN path, which does not run on this {machine or 'unknown'} CPU; "
            "keep the model in fp32 here, or quantize and serve it on an x86-64 machine"
        )
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        raise UnsupportedHardware(
            "this torch build has no oneDNN (mkldnn), which the x86 INT8 kernels need; install an official torch wheel"
        )


@functools.lru_cache(maxsize=1)
def int8_path() -> Int8Path:
    """Measure the int8 path of this process (cached: oneDNN fixes its ISA when it starts).

    Raises:
        UnsupportedHardware: not an x86 CPU, no oneDNN, or its int8 convolution cannot run.
    """
    check_x86()
    try:
        with capture_native("oneDNN int8 probe", own=True) as held:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):  # type: ignore[no-untyped-call]
                got, exact = _probe_conv()
    except (RuntimeError, AttributeError, NotImplementedError) as exc:
        raise UnsupportedHardware(f"oneDNN's int8 convolution does not run here ({one_line(exc)[:160]})") from exc
    kernel = _kernel_name(held.text)
    isa = kernel.split(":", 1)[1] if ":" in kernel else "unknown"
    ratio = got / exact
    # the probe's products are whole numbers well below 2**24: exact in fp32, so any shortfall is saturation
    saturates = ratio < 1.0 - 1e-6
    path = Int8Path(kernel=kernel, isa=isa, saturates=saturates, exact_ratio=ratio, reduce_range=saturates)
    log.info("int8 path: %s (kernel %s)", path.description, kernel)
    return path


def activation_bits(program: torch.nn.Module) -> int | None:
    """7 or 8: the widest unsigned activation grid a quantized program's convs and linears use; None without one.

    Read from the program's dequantize calls (:func:`convdoctor.quant.bits.grids_by_layer`), which
    is what :meth:`QuantResult.save` writes whatever CPU quantized it.
    """
    widths = [a for a, _ in grids_by_layer(program).values()]
    return max(widths) if widths else None


def warn_if_saturates(program: torch.nn.Module, source: object, origin: SavedOrigin | None = None) -> bool:
    """Warn (and return True) when an all-8-bit program will run on saturating kernels here.

    A program quantized on a VNNI/AMX CPU keeps 8-bit activations and weights on every layer;
    served on a CPU without VNNI, its u8 x s8 pair sums can saturate int16 and the int8 model
    silently loses accuracy. A program whose grids were measured layer by layer on saturating
    kernels (:mod:`.bits`; ``origin``, the file's record) is not warned about, even where every
    layer measured best at 8 bits; nor is one with some 7-bit grid (quantized for saturating kernels).

    Args:
        program: the loaded reference program.
        source: what to call it in the warning (its path).
        origin: the file's origin record (:func:`~convdoctor.quant.result.saved_origin`), None without one.
    """
    if origin is not None and origin.saturates and origin.grids_measured:
        return False  # every grid was chosen by running kernels that saturate as these do
    grids = set(grids_by_layer(program).values())
    if grids != {(8, 8)}:  # no int8 layer, or some 7-bit grid
        return False
    try:
        path = int8_path()
    except UnsupportedHardware:
        return False  # lowering will say why it cannot run
    if not path.saturates:
        return False
    log.warning(
        "%s has 8-bit activations on every layer, but this CPU's int8 kernels (%s) saturate them (measured %.2f of the exact "
        "sum): its outputs may be wrong here; quantize it again on this machine (convdoctor picks 7-bit "
        "activations where they measure better) or with quantize_int8(..., reduce_range=True) for every CPU",
        source,
        path.description,
        path.exact_ratio,
    )
    return True
