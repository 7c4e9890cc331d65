"""What :func:`~convdoctor.quant.quantize_int8` returns, and how a saved int8 program comes back.

The shipped artefact is the *reference* program (``torch.export`` format, int8 weights):
portable and small. Speed is made where it runs: :func:`load_int8` lowers it to oneDNN int8
kernels and, by default, compiles it with AOTInductor (:class:`~convdoctor.quant.serve.CompiledInt8`, packages cached on disk).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..capture.archive import load_exported
from ..errors import ConvDoctorError, UsageError, one_line
from ._graph import export_model, lower_x86
from ._torchao import import_torchao
from .bits import LayerBits
from .isa import Int8Path, SavedOrigin, warn_if_saturates
from .serve import CompiledInt8
from .verify import Verification

__all__ = ["QuantResult", "QuantizedLayer", "load_int8", "saved_origin", "serving_model"]

log = logging.getLogger(__name__)

#: The ``.pt2`` extra entry :meth:`QuantResult.save` writes: where and how the grids were chosen.
ORIGIN_ENTRY = "convdoctor.json"


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
        activation_bits: 7 or 8, the width of its input activation's uint8 grid (read from the
            converted graph), None when it is not int8.
        weight_bits: 7 or 8, the width of its int8 weight grid, None when it is not int8.
    """

    name: str
    type: str
    status: str
    kernel: str = ""
    reason: str = ""
    activation_bits: int | None = None
    weight_bits: int | None = None

    def to_dict(self) -> dict[str, str | int | None]:
        """JSON-ready row."""
        return {
            "name": self.name,
            "type": self.type,
            "status": self.status,
            "kernel": self.kernel,
            "reason": self.reason,
            "activation_bits": self.activation_bits,
            "weight_bits": self.weight_bits,
        }


@dataclass(frozen=True)
class QuantResult:
    """An INT8 model and the record of what was quantized.

    Attributes:
        model: the model to run. With ``compiled``: a :class:`CompiledInt8` (AOTInductor, one
            compilation at the first call with each input shape, or a cached package; the fastest); else the
            lowered graph when ``lowered``; else the reference model. Call it like the original.
        reference: the converted (reference) model: int8 weight tensors, numerics of the
            int8 model, fp32 compute; portable, and what :meth:`save` writes.
        lowered_graph: the reference lowered to oneDNN int8 kernels (a ``torch.fx.GraphModule``
            that serves any batch size without compiling), None when not lowered. The
            per-layer record is read from it.
        layers: one row per conv/linear/BatchNorm of the input model, in model order.
        int8_ops: op -> count of int8 kernels in the lowered graph.
        float_ops: op -> count of ops that still compute in float in the lowered graph
            (shape-only ops such as ``view`` included).
        backend: the backend quantized for.
        lowered: whether the reference was lowered to oneDNN kernels.
        lowering_note: why lowering was skipped or failed, ``""`` when it succeeded.
        compiled: whether ``model`` is compiled by AOTInductor at its first call per shape.
        dynamic_batch: whether the batch dimension was exported as dynamic.
        calibration_batches: batches the observers saw.
        calibration_samples: samples the observers saw.
        torchao_version: the torchao version that did the work.
        int8_path: the int8 kernel path this CPU runs (measured; names the ISA), None if unknown.
        reduce_range: whether every int8 layer's activations are 7-bit (see :mod:`convdoctor.quant.isa`;
            each layer's widths are in ``layers``).
        layer_bits: the per-layer measurement that chose each layer's grids on a CPU whose
            kernels saturate (:mod:`convdoctor.quant.bits`); empty where nothing was measured.
        verification: the result against fp32 on the held-out batch, None when it could not be compared.
        attempts: one verification record per quantization tried (a retry with 7-bit
            activations follows a poor 8-bit result).
    """

    model: nn.Module
    reference: nn.Module
    lowered_graph: nn.Module | None
    layers: tuple[QuantizedLayer, ...]
    int8_ops: dict[str, int]
    float_ops: dict[str, int]
    backend: str
    lowered: bool
    lowering_note: str
    compiled: bool
    dynamic_batch: bool
    calibration_batches: int
    calibration_samples: int
    torchao_version: str
    int8_path: Int8Path | None = None
    reduce_range: bool = False
    layer_bits: tuple[LayerBits, ...] = ()
    verification: Verification | None = None
    attempts: tuple[dict[str, Any], ...] = ()
    _example: tuple[torch.Tensor, ...] = field(repr=False, default=())

    @property
    def quantized(self) -> tuple[str, ...]:
        """Paths of the layers with int8 weights."""
        return tuple(r.name for r in self.layers if r.status == "int8")

    @property
    def activations(self) -> str:
        """The int8 grids in words: ``"8-bit activations"``, or how many layers took 7 bits, where, and why."""
        rows = [(r.activation_bits, r.weight_bits) for r in self.layers if r.activation_bits is not None]
        acts, weights = sum(a == 7 for a, _ in rows), sum(w == 7 for _, w in rows)
        if not rows:
            return "no int8 activations"
        if not acts and not weights:
            return "8-bit activations"
        why = " (measured closest to fp32 on this CPU's kernels)" if self.layer_bits else ""
        if acts == len(rows) and not weights:
            return f"7-bit activations on every int8 layer{why}"
        parts = [f"7-bit activations on {acts}" if acts else "", f"7-bit weights on {weights}" if weights else ""]
        return f"{', '.join(p for p in parts if p)} of {len(rows)} int8 layers{why}, 8-bit on the rest"

    @property
    def path_note(self) -> str:
        """The int8 path and, where any layer took 7 bits, how many: one line for reports."""
        if self.int8_path is None:
            return f"int8 path not measured; {self.activations}"
        path = self.int8_path.description
        plain = not self.int8_path.saturates and self.activations.startswith(("8-bit", "no int8"))
        return path if plain else f"{path}; {self.activations}"

    @property
    def left_float(self) -> tuple[str, ...]:
        """Paths of the weighted layers left in float (folded BatchNorms excluded)."""
        return tuple(r.name for r in self.layers if r.status == "float")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the models themselves are left out)."""
        return {
            "backend": self.backend,
            "lowered": self.lowered,
            "lowering_note": self.lowering_note,
            "compiled": self.compiled,
            "dynamic_batch": self.dynamic_batch,
            "calibration_batches": self.calibration_batches,
            "calibration_samples": self.calibration_samples,
            "torchao_version": self.torchao_version,
            "int8_path": self.int8_path.to_dict() if self.int8_path else None,
            "reduce_range": self.reduce_range,
            "activations": self.activations,
            "layer_bits": [r.to_dict() for r in self.layer_bits],
            "verification": self.verification.to_dict() if self.verification else None,
            "attempts": [dict(a) for a in self.attempts],
            "layers": [r.to_dict() for r in self.layers],
            "quantized": list(self.quantized),
            "left_float": list(self.left_float),
            "int8_ops": dict(self.int8_ops),
            "float_ops": dict(self.float_ops),
        }

    def save(self, path: str | Path) -> Path:
        """Write the reference model as an exported program (``torch.export.save``, ``.pt2``).

        The file holds the int8 weights and the graph; :func:`load_int8` loads, lowers and
        compiles it on the serving machine (``torch.export.load(path).module()`` gives the
        reference model). A text entry, ``convdoctor.json``, records the int8 path it was
        quantized on and whether its grids were measured there (:func:`saved_origin`), so that
        loading it on another CPU can tell whether its kernels will saturate.

        Args:
            path: destination file.

        Returns:
            The path written.
        """
        path = Path(path)
        # the program stores its example inputs: two samples keep the file to the weights and graph
        example = tuple(t[:2] for t in self._example) if self.dynamic_batch else self._example
        program = export_model(self.reference, example, self.dynamic_batch)[0]
        origin = {
            "int8_path": self.int8_path.to_dict() if self.int8_path else None,
            "grids_measured": bool(self.layer_bits),
            "torch": torch.__version__,
            "torchao": self.torchao_version,
        }
        torch.export.save(program, path, extra_files={ORIGIN_ENTRY: json.dumps(origin)})
        return path


def saved_origin(path: str | Path, *, trusted: bool = False) -> SavedOrigin | None:
    """The origin record of a program :meth:`QuantResult.save` wrote; None for a file without one (or a foreign one).

    Raises:
        ModelLoadError: the file cannot be loaded (see :func:`~convdoctor.capture.archive.load_exported`).
    """
    extra = {ORIGIN_ENTRY: ""}
    load_exported(path, trusted=trusted, extra_files=extra)
    return SavedOrigin.parse(extra[ORIGIN_ENTRY])


def serving_model(reference: nn.Module, lowered: nn.Module | None, compile: bool) -> nn.Module:
    """The fastest model available: compiled over the lowered graph, the lowered graph, or the reference."""
    if lowered is None:
        return reference
    return CompiledInt8(reference, lowered) if compile else lowered


def load_int8(
    path: str | Path, example_input: torch.Tensor, *, lower: bool = True, compile: bool = True, trusted: bool = False
) -> nn.Module:
    """Load a program written by :meth:`QuantResult.save` and make it fast on this machine.

    The ``.pt2`` holds the reference model (int8 weights, fp32 compute). Here it is lowered
    to oneDNN int8 kernels and, with ``compile``, wrapped for AOTInductor compilation at the first
    call per input shape. A lowering that fails (a torch or torchao API that moved) returns the
    reference model, correct and slow, and logs why; it never raises. A program with 8-bit
    activations (quantized on a VNNI/AMX CPU) loaded on a CPU whose int8 kernels saturate them
    (no VNNI: :mod:`convdoctor.quant.isa`) logs a warning: quantize it again there.

    Args:
        path: the ``.pt2`` file.
        example_input: one input batch (its non-batch dims must match the model's).
        lower: False returns the reference model as loaded.
        compile: False returns the lowered graph (no compilation, any batch size).
        trusted: load the file without vetting it. By default the archive is checked before
            torch reads any of it (no pickled entry, no code in its shape expressions, only
            operator calls: :func:`convdoctor.capture.archive.vet_exported`); what
            :meth:`QuantResult.save` writes always passes.

    Returns:
        A :class:`CompiledInt8`, the lowered ``torch.fx.GraphModule``, or the reference model.

    Raises:
        UsageError: the file does not exist, is not a loadable exported program, or is
            refused as untrusted (the message says why and how to opt in).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file: {path}; write one with quantize_int8(...).save(path)")
    import_torchao()  # registers the quantized_decomposed ops the program uses, and the int8 fusion passes
    extra = {ORIGIN_ENTRY: ""}
    try:
        reference = load_exported(path, trusted=trusted, extra_files=extra).module()
    except ConvDoctorError as exc:  # refused, truncated, foreign: one line, the payload never ran
        raise UsageError(
            f"cannot load {path} as an int8 program ({one_line(exc)[:240]}); "
            f"write it with quantize_int8(...).save(path) under torch {torch.__version__}"
        ) from None
    if not lower:
        return reference
    warn_if_saturates(reference, path, SavedOrigin.parse(extra[ORIGIN_ENTRY]))
    x = example_input.detach().cpu()
    example = (x if x.shape[0] >= 2 else torch.cat([x, x])[:2],)  # batch 1 would specialise the batch dim
    try:
        lowered = lower_x86(reference, example, dynamic=True)  # static programs fall back to static shapes
    except Exception as exc:  # noqa: BLE001 - same guard as quantize_int8's lowering: keep the correct model
        log.warning(
            "x86 lowering of %s failed (%s); serving the reference model (fp32 compute)",
            path,
            one_line(exc)[:160],
        )
        return reference
    return serving_model(reference, lowered, compile)
