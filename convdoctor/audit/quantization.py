"""Check ``quantization``: what static INT8 would cost this model, measured.

Runs when real samples are available (they calibrate the int8 model and score it; random
inputs would calibrate nonsense ranges), on the CPU (the x86 PT2E backend). A model that
already holds eager-quantized layers (``quantize_dynamic``) is measured for how much of its
MACs stayed fp32 instead, which needs no data.
"""

from __future__ import annotations

from ..errors import CaptureError, UsageError, one_line
from ..findings import Finding
from ..quant import UnsupportedHardware, has_quantized_layers, quantization_findings, quantization_metrics
from .context import CheckContext, CheckSkipped
from .registry import register_check

#: seconds of timing per model and batch size (the audit's other checks dominate otherwise).
QUANT_MIN_RUN_TIME = 0.3


@register_check(
    "quantization",
    summary="INT8 vs FP32: agreement, accuracy, size on disk, latency",
    codes=("QUANTIZATION_DROP", "QUANTIZATION_PARTIAL"),
    order=70,
)
def check_quantization(ctx: CheckContext) -> list[Finding]:
    """Quantize a copy with ``convdoctor.quant.quantize_int8`` and compare it with the model."""
    already = has_quantized_layers(ctx.model)
    if ctx.synthetic and not already:
        raise CheckSkipped("needs real samples to calibrate and score the int8 model (--data)")
    if ctx.device.type != "cpu":
        raise CheckSkipped("the int8 backend (x86 PT2E) runs on the CPU only")
    try:
        metrics = quantization_metrics(
            ctx.model,
            ctx.sample.cpu(),
            None if ctx.targets is None else ctx.targets.cpu(),
            batch_sizes=(1, max(ctx.batch_sizes)),
            min_run_time=QUANT_MIN_RUN_TIME,
        )
    except ImportError as exc:
        raise CheckSkipped(f"{one_line(exc)} (pip install 'convdoctor[quant]')") from exc
    except UnsupportedHardware as exc:  # an ARM CPU, a torch without oneDNN: say why, never a fp32 "int8"
        raise CheckSkipped(one_line(exc)) from exc
    except UsageError as exc:
        if not isinstance(exc.__cause__, ImportError):  # only a missing torchao is a skip
            raise
        raise CheckSkipped(one_line(exc)) from exc
    except CaptureError as exc:
        raise CheckSkipped(f"the model cannot be exported for quantization: {one_line(exc)}") from exc
    ctx.evidence.update({k: v for k, v in metrics.items() if k != "record"})
    record = metrics.get("record")
    if isinstance(record, dict):
        ctx.evidence["quantized"] = record.get("quantized")
        ctx.evidence["left_float"] = record.get("left_float")
        ctx.evidence["int8_path"] = record.get("int8_path")  # the CPU's int8 kernels, measured
        ctx.evidence["activations"] = record.get("activations")  # 7 or 8 bits, per layer where measured
        ctx.evidence["verification"] = record.get("verification")
    return quantization_findings(metrics)
