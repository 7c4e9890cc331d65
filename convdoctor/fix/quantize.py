"""Static INT8 as a remedy: answers ``QUANTIZATION_DROP`` (re-quantize with more or better
calibration data, or keep the worst layers in float) and ``QUANTIZATION_PARTIAL`` (a
``quantize_dynamic`` model whose convolutions still run in fp32).

The implementation lives in :mod:`convdoctor.quant`, shared with the audit's
``quantization`` check; this module is its name among the remedies.
"""

from ..quant import QuantizedLayer, QuantResult, calibration_batches, load_int8, quantize_int8

__all__ = ["QuantResult", "QuantizedLayer", "calibration_batches", "load_int8", "quantize_int8"]
