"""INT8 in one place: quantize (PT2E, torchao), serve fast on x86 (Inductor), and measure.

- :func:`quantize_int8` -> :class:`QuantResult` (the model to run, the reference program,
  the per-layer record); :func:`load_int8` brings a saved program back on the serving machine.
- :func:`compare_int8`: agreement, accuracy, bytes on disk and latency of an int8 model
  against its fp32 original, the one comparison the audit, the demo and the benchmark use.
- :func:`int8_path`: which int8 kernels this CPU runs (VNNI, AMX, or saturating AVX2/AVX-512
  without VNNI), measured; :func:`quantize_int8` picks 7-bit activations from it.
- :func:`dynamic_quant_coverage`: how much of a ``quantize_dynamic`` model still runs in fp32.
- :func:`quantization_metrics` and :func:`quantization_findings`: what the audit's
  ``quantization`` check runs, and its thresholds.

``convdoctor.fix`` re-exports :func:`quantize_int8` as a remedy. torchao is imported only
when quantizing or loading, never with this package.
"""

from .compare import compare_int8, serialized_bytes
from .coverage import dynamic_quant_coverage, has_quantized_layers
from .findings import (
    MAX_ACCURACY_DROP_POINTS,
    MAX_DISAGREEMENT,
    MAX_FP32_MAC_FRACTION,
    MIN_FLIPS,
    quantization_findings,
    quantization_metrics,
)
from .isa import Int8Path, UnsupportedHardware, int8_path
from .pt2e import BACKENDS, calibration_batches, quantize_int8
from .result import QuantizedLayer, QuantResult, load_int8
from .serve import CompiledInt8

__all__ = [
    "BACKENDS",
    "MAX_ACCURACY_DROP_POINTS",
    "MAX_DISAGREEMENT",
    "MAX_FP32_MAC_FRACTION",
    "MIN_FLIPS",
    "CompiledInt8",
    "Int8Path",
    "QuantResult",
    "QuantizedLayer",
    "calibration_batches",
    "compare_int8",
    "dynamic_quant_coverage",
    "has_quantized_layers",
    "int8_path",
    "load_int8",
    "quantization_findings",
    "quantization_metrics",
    "quantize_int8",
    "serialized_bytes",
    "UnsupportedHardware",
]
