"""Static INT8 post-training quantization of convolutions and linears: answers ``QUANTIZATION_DROP``
(re-quantize with more or better calibration data, or keep the worst layers in float) and
``QUANTIZATION_PARTIAL`` (a ``quantize_dynamic`` model whose convolutions still run in fp32).

The flow is torchao's PT2E flow, the live API in torch 2.14 (the eager and FX flows of
``torch.ao.quantization`` are deprecated):

1. ``torch.export`` a copy of the model in eval mode, batch dimension dynamic (strict
   export first: see ``_pt2e_graph.export_for_quantization``);
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

Only after step 5 is the model fast; :class:`QuantResult` records per layer which kernel
it ended up in, so nothing is claimed that the lowered graph does not show.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._guard import preserve_model_state
from ..errors import CaptureError, UsageError, one_line
from ._pt2e_graph import (
    converted_layers,
    drop_unused_attrs,
    export_for_quantization,
    export_model,
    lower_x86,
    lowered_ops,
    module_paths,
)

__all__ = ["BACKENDS", "QuantResult", "QuantizedLayer", "calibration_batches", "load_int8", "quantize_int8"]

log = logging.getLogger(__name__)

#: Backends quantize_int8 can target (the quantizer and the lowering must both exist).
BACKENDS = ("x86",)

#: The torchao release this module is written and tested against (the ``quant`` extra).
TORCHAO_PIN = "0.18.0"

#: Calibration batches are cut to this size when a single tensor is given.
DEFAULT_CALIBRATION_BATCH = 32


@dataclass(frozen=True)
class QuantizedLayer:
    """What became of one weighted layer (or BatchNorm) of the input model.

    Attributes:
        name: module path in the input model.
        type: its class name.
        status: ``"int8"`` (int8 weights), ``"folded"`` (BatchNorm folded into the conv
            before it), or ``"float"`` (left in floating point).
        kernel: the op that runs it after lowering (``"onednn.qconv_pointwise"``...), or
            ``""`` when not lowered or folded.
        reason: why it is not int8 compute, ``""`` when it is.
    """

    name: str
    type: str
    status: str
    kernel: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        """JSON-ready row."""
        return {"name": self.name, "type": self.type, "status": self.status, "kernel": self.kernel,
                "reason": self.reason}


@dataclass(frozen=True)
class QuantResult:
    """An INT8 model and the record of what was quantized.

    Attributes:
        model: the model to run: lowered to oneDNN int8 kernels when ``lowered``, else the
            reference model. A ``torch.fx.GraphModule``; call it like the original.
        reference: the converted (reference) model: int8 weight tensors, numerics of the
            int8 model, fp32 compute; portable, and what :meth:`save` writes.
        layers: one row per conv/linear/BatchNorm of the input model, in model order.
        int8_ops: op -> count of int8 kernels in the lowered graph.
        float_ops: op -> count of ops that still compute in float in the lowered graph
            (shape-only ops such as ``view`` included).
        backend: the backend quantized for.
        lowered: whether ``model`` is the lowered one.
        lowering_note: why lowering was skipped or failed, ``""`` when it succeeded.
        dynamic_batch: whether the batch dimension was exported as dynamic.
        calibration_batches: batches the observers saw.
        calibration_samples: samples the observers saw.
        torchao_version: the torchao version that did the work.
    """

    model: nn.Module
    reference: nn.Module
    layers: tuple[QuantizedLayer, ...]
    int8_ops: dict[str, int]
    float_ops: dict[str, int]
    backend: str
    lowered: bool
    lowering_note: str
    dynamic_batch: bool
    calibration_batches: int
    calibration_samples: int
    torchao_version: str
    _example: tuple[torch.Tensor, ...] = field(repr=False, default=())

    @property
    def quantized(self) -> tuple[str, ...]:
        """Paths of the layers with int8 weights."""
        return tuple(r.name for r in self.layers if r.status == "int8")

    @property
    def left_float(self) -> tuple[str, ...]:
        """Paths of the weighted layers left in float (folded BatchNorms excluded)."""
        return tuple(r.name for r in self.layers if r.status == "float")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the models themselves are left out)."""
        return {
            "backend": self.backend, "lowered": self.lowered, "lowering_note": self.lowering_note,
            "dynamic_batch": self.dynamic_batch, "calibration_batches": self.calibration_batches,
            "calibration_samples": self.calibration_samples, "torchao_version": self.torchao_version,
            "layers": [r.to_dict() for r in self.layers], "int8_ops": dict(self.int8_ops),
            "float_ops": dict(self.float_ops),
        }

    def save(self, path: str | Path) -> Path:
        """Write the reference model as an exported program (``torch.export.save``, ``.pt2``).

        The file holds the int8 weights and the graph; :func:`load_int8` loads and lowers
        it on the serving machine (``torch.export.load(path).module()`` gives the reference model).

        Args:
            path: destination file.

        Returns:
            The path written.
        """
        path = Path(path)
        # the program stores its example inputs: two samples keep the file to the weights and graph
        example = tuple(t[:2] for t in self._example) if self.dynamic_batch else self._example
        program = export_model(self.reference, example, self.dynamic_batch)[0]
        torch.export.save(program, path)
        return path


def load_int8(path: str | Path, example_input: torch.Tensor, *, lower: bool = True) -> nn.Module:
    """Load a program written by :meth:`QuantResult.save` and lower it for this machine.

    The ``.pt2`` holds the reference model (int8 weights, fp32 compute); lowering turns
    it into oneDNN int8 kernels here, where it will run.

    Args:
        path: the ``.pt2`` file.
        example_input: one input batch (its non-batch dims must match the model's).
        lower: False returns the reference model as loaded.

    Returns:
        The lowered model (or the reference one), a ``torch.fx.GraphModule``.

    Raises:
        UsageError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file: {path}; write one with quantize_int8(...).save(path)")
    _import_torchao()  # registers the quantized_decomposed ops the program uses
    reference = torch.export.load(path).module()
    if not lower:
        return reference
    example = _prepare_input([example_input.detach().cpu()])
    return lower_x86(reference, example, dynamic=True)  # static programs fall back to static shapes


def _import_torchao() -> Any:
    # torchao 0.18 registers an Enum with torch's pytree on import and torch logs a
    # deprecation warning about it; it is not the user's business, so mute that one logger.
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        import torchao  # type: ignore[import-untyped]
        from torchao.quantization.pt2e import quantize_pt2e  # type: ignore[import-untyped]
    except ImportError as exc:  # optional dependency: one line that says how to get it
        raise UsageError(f"quantize_int8 needs torchao: pip install 'convdoctor[quant]' "
                         f"(torchao=={TORCHAO_PIN})") from exc
    finally:
        pytree_log.setLevel(level)
    return torchao, quantize_pt2e


def _as_batch(item: Any) -> torch.Tensor:
    if isinstance(item, (tuple, list)) and item:
        item = item[0]  # (inputs, targets) pairs from a DataLoader: the inputs
    if not isinstance(item, torch.Tensor) or not item.is_floating_point():
        raise UsageError(f"calibration batches must be float tensors or (inputs, targets) pairs, "
                         f"got {type(item).__name__}")
    # clone: a view (a slice of a data set) would keep, and save with the model, its whole storage
    return item.detach().cpu().clone()


def calibration_batches(calibration: Any, batch_size: int = DEFAULT_CALIBRATION_BATCH,
                        max_batches: int | None = None) -> list[torch.Tensor]:
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
        items: Iterable[Any] = ([calibration[i:i + batch_size] for i in range(0, calibration.shape[0], batch_size)]
                                if calibration.dim() > 0 else [])
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


def _layer_row(path: str, module: nn.Module, weighted: dict[str, str | None], before: set[str],
               after: set[str], kernels: dict[str, str], lowered: bool) -> QuantizedLayer | None:
    kind = type(module).__name__
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if path in after:
            return QuantizedLayer(path, kind, "float", reason="no conv before it to fold into: runs in fp32")
        if path in before:
            return QuantizedLayer(path, kind, "folded", reason="folded into the conv before it")
        return QuantizedLayer(path, kind, "float", reason="not called in the exported forward")
    if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return None
    if path not in weighted:
        return QuantizedLayer(path, kind, "float", reason="not called in the exported forward")
    scale = weighted[path]
    if scale is None:
        return QuantizedLayer(path, kind, "float", reason="not annotated by the x86 quantizer: runs in fp32")
    kernel = kernels.get(scale, "")
    reason = "" if kernel or not lowered else "int8 weights but no int8 kernel after lowering: fp32 compute"
    return QuantizedLayer(path, kind, "int8", kernel=kernel, reason=reason)


def _short(exc: BaseException, limit: int = 160) -> str:
    text = one_line(exc)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _calibrate(prepared: nn.Module, batches: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for batch in batches:
            try:
                prepared(batch)
            except Exception as exc:
                raise CaptureError(f"calibration batch of shape {tuple(batch.shape)} failed in the exported "
                                   f"model ({_short(exc)}); pass batches shaped like the model's input") from exc


def _try_lower(reference: nn.Module, example: tuple[torch.Tensor, ...], dynamic: bool,
               lower: bool) -> tuple[nn.Module | None, str]:
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


def quantize_int8(model: nn.Module, calibration: Any, backend: str = "x86", *,
                  batch_size: int = DEFAULT_CALIBRATION_BATCH, max_batches: int | None = None,
                  lower: bool = True) -> QuantResult:
    """Static post-training INT8 quantization of the convolutions and linears (PT2E, torchao).

    Answers ``QUANTIZATION_PARTIAL`` (Linear-only ``quantize_dynamic`` leaves the convs in
    fp32; this quantizes them) and, re-run with more representative calibration data,
    ``QUANTIZATION_DROP``. The input model is never changed: a CPU copy in eval mode is
    exported and quantized. Check the result with ``convdoctor.audit._int8.compare_int8``.

    Args:
        model: a module ``torch.export`` can trace, taking one tensor input.
        calibration: representative inputs: an ``(N, ...)`` tensor or an iterable of batches
            or ``(inputs, targets)`` pairs; a few hundred samples are usually enough.
        backend: ``"x86"`` (the only one whose lowering exists for CPU in torchao today).
        batch_size: chunk size when ``calibration`` is one tensor.
        max_batches: use at most this many calibration batches.
        lower: lower to oneDNN int8 kernels (small and fast); False returns the reference model.

    Returns:
        The quantized model and the per-layer record.

    Raises:
        UsageError: unknown backend, torchao missing, or empty/invalid calibration data.
        CaptureError: the model cannot be exported or does not run on the calibration data.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    torchao, qpt2e = _import_torchao()
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq  # type: ignore[import-untyped]

    batches = calibration_batches(calibration, batch_size, max_batches)
    with preserve_model_state(model):
        work = copy.deepcopy(model).cpu().eval()
    example = _prepare_input(batches)
    try:
        program, dynamic = export_for_quantization(work, example)
    except Exception as exc:
        raise CaptureError(f"torch.export cannot trace the model ({_short(exc)}); INT8 via PT2E needs an "
                           f"exportable model: see the audit's EXPORT_FAILED finding") from exc
    if not dynamic:  # static shapes: every calibration batch must match the example's batch size
        n = example[0].shape[0]
        data = torch.cat(batches)
        batches = [data[i:i + n] for i in range(0, data.shape[0] - n + 1, n)] or [example[0]]
    exported = program.module()
    before = module_paths(exported)
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = qpt2e.prepare_pt2e(exported, quantizer)
    _calibrate(prepared, batches)
    reference = qpt2e.convert_pt2e(prepared)
    drop_unused_attrs(reference)
    lowered, note = _try_lower(reference, example, dynamic, lower)
    weighted, after = converted_layers(reference)
    kernels, int8_ops, float_ops = lowered_ops(lowered)
    rows = (_layer_row(p, m, weighted, before, after, kernels, lowered is not None) for p, m in work.named_modules())
    return QuantResult(
        model=lowered if lowered is not None else reference, reference=reference,
        layers=tuple(r for r in rows if r is not None), int8_ops=dict(int8_ops), float_ops=dict(float_ops),
        backend=backend, lowered=lowered is not None, lowering_note=note, dynamic_batch=dynamic,
        calibration_batches=len(batches), calibration_samples=sum(int(b.shape[0]) for b in batches),
        torchao_version=str(torchao.__version__), _example=example,
    )
