"""Static INT8 post-training quantization of convolutions and linears: answers ``QUANTIZATION_DROP``
(re-quantize with more or better calibration data, or keep the worst layers in float) and
``QUANTIZATION_PARTIAL`` (a ``quantize_dynamic`` model whose convolutions still run in fp32).

The flow is torchao's PT2E flow, the live API in torch 2.14 (the eager and FX flows of
``torch.ao.quantization`` are deprecated):

1. ``torch.export`` a copy of the model in eval mode, batch dimension dynamic (strict
   export first: see ``_graph.export_for_quantization``);
2. ``prepare_pt2e`` with ``X86InductorQuantizer`` (weights int8 symmetric per output
   channel, activations uint8 affine per tensor; BatchNorm is folded into the conv);
3. calibrate: run the calibration batches through the observers;
4. ``convert_pt2e``: the *reference* model; weights are stored as int8 tensors, but each
   op still dequantizes and computes in fp32 (correct numerics, no speed-up), and the
   original fp32 weights stay attached, unused, until we delete them;
5. lower for x86: re-export, freeze, and let inductor's quantization fusion passes replace
   each ``dequantize -> conv/linear -> quantize`` pattern by a oneDNN int8 kernel
   (``onednn.qconv_pointwise``, ``onednn.qlinear_pointwise``) with prepacked int8 weights.
   This mirrors torchao's ``lower_pt2e_quantized_to_x86``, which re-exports with static
   shapes; ours keeps the batch dimension dynamic so the model serves any batch size, and
   re-prepacks conv weights for their real activation shapes (see ``repack_conv_weights``).

6. serve: compile the reference with AOTInductor and Inductor's freezing (the same fusion
   passes, plus generated C++ for the glue between kernels, called without Python in between;
   see :mod:`convdoctor.quant.serve`), at the first call with each input shape or from the
   package cache, the lowered graph as its fallback.

:class:`QuantResult` records per layer which kernel it ended up in, read from the lowered
graph, so nothing is claimed that the graph does not show.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .._compat import BatchNormBase, ConvBase
from .._guard import preserve_model_state
from ..errors import CaptureError, UsageError, one_line
from ._graph import (
    converted_layers,
    drop_unused_attrs,
    export_for_quantization,
    lower_x86,
    lowered_ops,
    module_paths,
)
from ._torchao import import_torchao
from .bits import Grid, LayerBits, grids_by_layer, measure_layer_bits, measurement_batch, narrowed
from .isa import int8_path
from .result import QuantizedLayer, QuantResult, serving_model
from .serve import CompiledInt8
from .verify import Verification, verify_int8

__all__ = ["BACKENDS", "DEFAULT_CALIBRATION_BATCH", "calibration_batches", "quantize_int8"]

log = logging.getLogger(__name__)

#: Backends quantize_int8 can target (the quantizer and the lowering must both exist).
BACKENDS = ("x86",)

#: Calibration batches are cut to this size when a single tensor is given.
DEFAULT_CALIBRATION_BATCH = 32


def _as_batch(item: Any) -> torch.Tensor:
    if isinstance(item, (tuple, list)) and item:
        item = item[0]  # (inputs, targets) pairs from a DataLoader: the inputs
    if not isinstance(item, torch.Tensor) or not item.is_floating_point():
        raise UsageError(
            f"calibration batches must be float tensors or (inputs, targets) pairs, got {type(item).__name__}"
        )
    # clone: a view (a slice of a data set) would keep, and save with the model, its whole storage
    return item.detach().cpu().clone()


def calibration_batches(
    calibration: Any, batch_size: int = DEFAULT_CALIBRATION_BATCH, max_batches: int | None = None
) -> list[torch.Tensor]:
    """Normalize calibration data to a list of CPU input batches.

    Args:
        calibration: one ``(N, ...)`` tensor (cut into ``batch_size`` chunks) or an iterable
            of tensors or ``(inputs, targets)`` pairs (a ``DataLoader``).
        batch_size: chunk size for a single tensor.
        max_batches: stop after this many batches (None: all).

    Returns:
        At least one batch.

    Raises:
        UsageError: no data, or not tensors.
    """
    if isinstance(calibration, torch.Tensor):
        items: Iterable[Any] = (
            [calibration[i : i + batch_size] for i in range(0, calibration.shape[0], batch_size)]
            if calibration.dim() > 0
            else []
        )
    elif isinstance(calibration, Iterable):
        items = calibration
    else:
        raise UsageError(f"calibration must be a tensor or an iterable of batches, got {type(calibration).__name__}")
    batches: list[torch.Tensor] = []
    for item in items:
        if max_batches is not None and len(batches) >= max_batches:
            break
        batch = _as_batch(item)
        if batch.dim() > 0 and batch.shape[0] > 0:
            batches.append(batch)
    if not batches:
        raise UsageError("calibration data is empty: pass a few hundred representative inputs")
    return batches


def _layer_row(
    path: str,
    module: nn.Module,
    weighted: dict[str, str | None],
    before: set[str],
    after: set[str],
    kernels: dict[str, str],
    lowered: bool,
    bits: dict[str, tuple[int, int]],
) -> QuantizedLayer | None:
    kind = type(module).__name__
    if isinstance(module, BatchNormBase):
        if path in after:
            return QuantizedLayer(path, kind, "float", reason="no conv before it to fold into: runs in fp32")
        if path in before:
            return QuantizedLayer(path, kind, "folded", reason="folded into the conv before it")
        return QuantizedLayer(path, kind, "float", reason="not called in the exported forward")
    if not isinstance(module, (ConvBase, nn.Linear)):
        return None
    if path not in weighted:
        return QuantizedLayer(path, kind, "float", reason="not called in the exported forward")
    scale = weighted[path]
    if scale is None:
        return QuantizedLayer(path, kind, "float", reason="not annotated by the x86 quantizer: runs in fp32")
    kernel = kernels.get(scale, "")
    reason = "" if kernel or not lowered else "int8 weights but no int8 kernel after lowering: fp32 compute"
    a_bits, w_bits = bits.get(path, (None, None))
    return QuantizedLayer(path, kind, "int8", kernel=kernel, reason=reason, activation_bits=a_bits, weight_bits=w_bits)


def _short(exc: BaseException, limit: int = 160) -> str:
    text = one_line(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _calibrate(prepared: nn.Module, batches: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for batch in batches:
            try:
                prepared(batch)
            except Exception as exc:
                raise CaptureError(
                    f"calibration batch of shape {tuple(batch.shape)} failed in the exported "
                    f"model ({_short(exc)}); pass batches shaped like the model's input"
                ) from exc


def _try_lower(
    reference: nn.Module, example: tuple[torch.Tensor, ...], dynamic: bool, lower: bool
) -> tuple[nn.Module | None, str]:
    if not lower:
        return None, "lower=False: the reference model (int8 weights, fp32 compute) is returned"
    try:
        return lower_x86(reference, example, dynamic), ""
    except Exception as exc:  # noqa: BLE001 - no oneDNN / unmatched pattern: keep the correct reference model, say why
        log.info("x86 lowering failed: %s", exc)  # the result carries the note
        return None, f"x86 lowering failed ({type(exc).__name__}): the reference model is returned"


def _prepare_input(batches: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    first = batches[0]
    # A batch of 1 would make torch.export specialise the batch dim to 1: use two samples.
    return (first if first.shape[0] >= 2 else torch.cat([first, first])[:2],)


def _hold_out(batches: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor, bool]:
    """Calibration batches, the batch that verifies the result, and whether it was held out."""
    if len(batches) >= 2:
        return batches[:-1], batches[-1], True
    return batches, batches[0], False


def _verify(
    work: nn.Module,
    reference: nn.Module,
    lowered: nn.Module | None,
    batch: torch.Tensor,
    held_out: bool,
    dynamic: bool,
    example: tuple[torch.Tensor, ...],
) -> Verification | None:
    """:func:`verify_int8` on the batch, cut to the exported batch size when that is static."""
    if not dynamic:
        n = example[0].shape[0]
        batch = batch[:n] if batch.shape[0] >= n else example[0]
    _calibrate(work, [batch])  # a held-out batch the model cannot run is the caller's error, as in calibration
    try:
        return verify_int8(work, reference, lowered if lowered is not None else reference, batch, held_out)
    except Exception as exc:  # noqa: BLE001 - an output we cannot compare: the result says it was not verified
        log.info("int8 verification skipped: %s", exc)
        return None


def _prepare(
    work: nn.Module, batches: list[torch.Tensor], example: tuple[torch.Tensor, ...], qpt2e: Any
) -> tuple[torch.fx.GraphModule, set[str], bool, list[torch.Tensor]]:
    """Export, prepare with 8-bit activations, calibrate: the calibrated model, the module paths
    export saw, whether the batch is dynamic, and the calibration batches used."""
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq  # type: ignore[import-untyped]

    try:
        program, dynamic = export_for_quantization(work, example)
    except Exception as exc:
        raise CaptureError(
            f"torch.export cannot trace the model ({_short(exc)}); INT8 via PT2E needs an "
            f"exportable model: see the audit's EXPORT_FAILED finding"
        ) from exc
    if not dynamic:  # static shapes: every calibration batch must match the example's batch size
        n = example[0].shape[0]
        data = torch.cat(batches)
        batches = [data[i : i + n] for i in range(0, data.shape[0] - n + 1, n)] or [example[0]]
    exported = program.module()
    before = module_paths(exported)
    config = xiq.get_default_x86_inductor_quantization_config(reduce_range=False)
    prepared = qpt2e.prepare_pt2e(exported, xiq.X86InductorQuantizer().set_global(config))
    _calibrate(prepared, batches)
    return prepared, before, dynamic, batches


def _reference(prepared: torch.fx.GraphModule, qpt2e: Any, grids: Mapping[str, Grid] | None) -> torch.fx.GraphModule:
    """``convert_pt2e`` of a copy with each layer's grid (None: 7-bit activations everywhere)."""
    reference: torch.fx.GraphModule = qpt2e.convert_pt2e(narrowed(prepared, grids))
    drop_unused_attrs(reference)
    return reference


def _choose_grids(
    prepared: torch.fx.GraphModule, batch: torch.Tensor
) -> tuple[dict[str, Grid] | None, tuple[LayerBits, ...]]:
    """On saturating kernels: each layer's measured grid (None: not measured, 7-bit activations everywhere)."""
    try:
        measured = measure_layer_bits(prepared, batch)
    except Exception as exc:  # noqa: BLE001 - a graph the probe cannot walk: 7 bits everywhere cannot saturate
        log.info("per-layer int8 grids not measured (%s): 7-bit activations everywhere", exc)
        return None, ()
    return {r.node: r.grid for r in measured}, measured


def _bits_label(grids: dict[str, tuple[int, int]]) -> str:
    """``"7"`` (7-bit activations everywhere), ``"8"`` (8-bit everywhere) or ``"mixed"``."""
    if grids and all(a == 7 and w == 8 for a, w in grids.values()):
        return "7"
    return "8" if all(g == (8, 8) for g in grids.values()) else "mixed"


def quantize_int8(
    model: nn.Module,
    calibration: Any,
    backend: str = "x86",
    *,
    batch_size: int = DEFAULT_CALIBRATION_BATCH,
    max_batches: int | None = None,
    lower: bool = True,
    compile: bool = True,
    reduce_range: bool | None = None,
) -> QuantResult:
    """Static post-training INT8 quantization of the convolutions and linears (PT2E, torchao).

    Answers ``QUANTIZATION_PARTIAL`` (Linear-only ``quantize_dynamic`` leaves the convs in
    fp32; this quantizes them) and, re-run with more representative calibration data,
    ``QUANTIZATION_DROP``. The input model is never changed: a CPU copy in eval mode is
    exported and quantized. Check the result with :func:`convdoctor.quant.compare_int8`.

    Args:
        model: a module ``torch.export`` can trace, taking one tensor input.
        calibration: representative inputs: an ``(N, ...)`` tensor or an iterable of batches
            or ``(inputs, targets)`` pairs; a few hundred samples are usually enough.
        backend: ``"x86"`` (the only one whose lowering exists for CPU in torchao today).
        batch_size: chunk size when ``calibration`` is one tensor.
        max_batches: use at most this many calibration batches.
        lower: lower to oneDNN int8 kernels (small and fast); False returns the reference model.
        compile: serve through AOTInductor (``result.model`` compiles at its first call with
            each input shape, seconds once, or loads the package a former compilation cached;
            then the fastest int8 on x86); False serves the lowered graph, which needs no
            compilation.
        reduce_range: quantize activations to 7 bits. None (the default) measures this CPU's
            int8 kernels (:func:`convdoctor.quant.isa.int8_path`): where u8 x s8 pair sums
            saturate (no VNNI), each layer takes the grids (8-bit, 7-bit activations or 7-bit
            weights) whose output is closest to fp32 on this CPU's kernel
            (:mod:`convdoctor.quant.bits`); elsewhere 8 bits. It retries with 7-bit activations
            everywhere when the int8 model disagrees with fp32 on the held-out batch. True or
            False forces every layer's activations, without retry.

    Returns:
        The quantized model and the per-layer record.

    The last calibration batch (when there are two or more) is held out of calibration and
    measures the result (``result.verification``).

    Raises:
        UnsupportedHardware: not an x86-64 CPU with oneDNN (a :class:`UsageError`).
        UsageError: unknown backend, torchao missing, or empty/invalid calibration data.
        CaptureError: the model cannot be exported or does not run on the calibration data.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    torchao, qpt2e = import_torchao()
    batches = calibration_batches(calibration, batch_size, max_batches)
    with preserve_model_state(model):
        work = copy.deepcopy(model).cpu().eval()
    example = _prepare_input(batches)
    path = int8_path()
    calib, check_batch, held_out = _hold_out(batches)
    prepared, before, dynamic, batches = _prepare(work, calib, example, qpt2e)
    measured: tuple[LayerBits, ...] = ()
    grids: dict[str, Grid] | None = {} if not reduce_range else None
    if reduce_range is None and path.saturates:
        grids, measured = _choose_grids(
            prepared, measurement_batch(batches, None if dynamic else int(batches[0].shape[0]))
        )
    attempts: list[dict[str, Any]] = []
    tried: list[
        tuple[float, torch.fx.GraphModule, nn.Module | None, str, Verification | None, dict[str, tuple[int, int]]]
    ] = []
    while True:
        reference = _reference(prepared, qpt2e, grids)
        lowered, note = _try_lower(reference, example, dynamic, lower)
        check = _verify(work, reference, lowered, check_batch, held_out, dynamic, example)
        bits = grids_by_layer(reference)
        label = _bits_label(bits)
        attempts.append({"activation_bits": label, **(check.to_dict() if check else {})})
        tried.append((check.relative_error if check else 0.0, reference, lowered, note, check, bits))
        if check is None or not check.poor or label == "7" or grids is None or reduce_range is not None:
            break
        log.info("int8 agreement poor with %s grids (%s): retrying with 7-bit activations", label, check.likely_cause)
        grids = None  # the safer setting before giving up: 7-bit activations cannot saturate
    # the retry is kept unless the first attempt measured closer to fp32 on the held-out batch
    _, reference, lowered, note, check, bits = min(reversed(tried), key=lambda t: t[0])
    weighted, after = converted_layers(reference)
    kernels, int8_ops, float_ops = lowered_ops(lowered)
    rows = (
        _layer_row(p, m, weighted, before, after, kernels, lowered is not None, bits) for p, m in work.named_modules()
    )
    served = serving_model(reference, lowered, compile)
    return QuantResult(
        model=served,
        reference=reference,
        lowered_graph=lowered,
        layers=tuple(r for r in rows if r is not None),
        int8_ops=dict(int8_ops),
        float_ops=dict(float_ops),
        backend=backend,
        lowered=lowered is not None,
        lowering_note=note,
        compiled=isinstance(served, CompiledInt8),
        dynamic_batch=dynamic,
        calibration_batches=len(batches),
        calibration_samples=sum(int(b.shape[0]) for b in batches),
        torchao_version=str(torchao.__version__),
        int8_path=path,
        reduce_range=_bits_label(bits) == "7",
        layer_bits=measured,
        verification=check,
        attempts=tuple(attempts),
        _example=example,
    )
