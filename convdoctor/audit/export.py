"""Export parity: TorchScript, ``torch.export`` and ONNX (run in onnxruntime) against eager.

Each format exports the eval-mode model at batch ``EXPORT_BATCH`` with the batch axis
marked dynamic, runs the artefact on that batch and on a batch of a different size, and
compares both with eager mode. An artefact that only accepts its export batch size is the
classic serving bug (a ``reshape(32, -1)`` or a traced ``x.size(0)`` baked in).

onnx, onnxruntime and onnxscript are optional: without them the ONNX format is skipped
with an install hint. Exporters print progress and log warnings; both are captured here,
since the library never prints.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import one_line
from ..findings import Finding, make_finding
from ._tensors import Diff, diff, leaves
from .context import CheckContext
from .registry import register_check

#: Export batch: torch.export specialises dimensions of size 0 and 1, so export at 2.
EXPORT_BATCH = 2
#: The other batch size each artefact must accept (single requests are the common serve).
OTHER_BATCH = 1
#: Largest tolerated difference from eager, as a fraction of the output's scale.
#: onnxruntime's kernels and graph fusions differ from PyTorch's by about 1e-6 of the
#: scale on torchvision models; a wrong branch or a dropped op is off by far more.
EXPORT_RTOL = 1e-3
_INSTALL_HINT = "pip install onnx onnxruntime onnxscript (or convdoctor[export])"
_FAIL_FIX = (
    "Make forward exportable: replace Python branches on tensor values with torch.where/torch.cond, "
    "avoid .item()/.tolist() and in-place writes to inputs."
)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TORCH_DIR = Path(torch.__file__).resolve().parent

Runner = Callable[[torch.Tensor], Any]


@contextlib.contextmanager
def _quiet() -> Iterator[list[warnings.WarningMessage]]:
    """Capture stdout, stderr, warnings and log records of the exporters."""
    previous = logging.root.manager.disable
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("always")
        logging.disable(logging.WARNING)
        try:
            yield caught
        finally:
            logging.disable(previous)


def _reason(exc: BaseException) -> str:
    """The root cause in one line (the ONNX exporter wraps torch.export's error in its own)."""
    while exc.__cause__ is not None and exc.__cause__ is not exc:
        exc = exc.__cause__
    return _ANSI.sub("", one_line(exc))[:300]


def _dynamic_batch() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim.AUTO},)


def _torchscript(model: nn.Module, x: torch.Tensor, _cache: dict[str, Any]) -> tuple[Runner, list[str]]:
    """Trace; keep the TracerWarnings raised by the model's code.

    TracerWarnings from inside torch itself are shape sanity checks (``_verify_batch_size``
    in group_norm) that do not change the traced computation; they are dropped.
    """
    with _quiet() as caught:
        traced = torch.jit.trace(model, (x,), check_trace=False, strict=False)  # type: ignore[no-untyped-call]
    notes = [
        f"{str(w.message).split('. ')[0]} ({Path(w.filename).name}:{w.lineno})"
        for w in caught
        if issubclass(w.category, torch.jit.TracerWarning)  # type: ignore[attr-defined]
        and not _in_torch(w.filename)
    ]
    return traced, notes


def _in_torch(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(_TORCH_DIR)


def _torch_export(model: nn.Module, x: torch.Tensor, cache: dict[str, Any]) -> tuple[Runner, list[str]]:
    with _quiet():
        program = torch.export.export(model, (x,), dynamic_shapes=_dynamic_batch())
    cache["program"] = program  # the ONNX exporter starts from the same program: export once
    return program.module(), []


def _onnx(model: nn.Module, x: torch.Tensor, cache: dict[str, Any]) -> tuple[Runner, list[str]]:
    """Export with the current (dynamo) exporter from torch.export's program when there is one."""
    try:
        with _quiet():  # importing the exporter stack logs about CUDA on CPU-only machines
            import onnx  # noqa: F401  (the exporter needs it)
            import onnxruntime as ort
            import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"ONNX export needs onnx, onnxruntime and onnxscript: {_INSTALL_HINT}") from exc
    with _quiet():
        if "program" in cache:
            program = torch.onnx.export(cache["program"], (x,), dynamo=True, verbose=False)
        else:
            program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=_dynamic_batch(), verbose=False)
    if program is None:  # only the legacy exporter returns None
        raise RuntimeError("torch.onnx.export returned no program")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors come back as exceptions; keep onnxruntime's own log quiet
    providers = ["CPUExecutionProvider"]
    if x.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(program.model_proto.SerializeToString(), options, providers=providers)
    name = session.get_inputs()[0].name

    def run(t: torch.Tensor) -> list[torch.Tensor]:
        return [torch.from_numpy(a) for a in session.run(None, {name: t.detach().cpu().numpy()})]

    return run, []


#: format name -> exporter returning (runner, notes).
#: Exporters share a cache dict (torch.export's program feeds the ONNX exporter).
FORMATS: dict[str, Callable[[nn.Module, torch.Tensor, dict[str, Any]], tuple[Runner, list[str]]]] = {
    "torchscript": _torchscript,
    "torch_export": _torch_export,
    "onnx": _onnx,
}


def _run(runner: Runner, x: torch.Tensor, reference: Any) -> Diff:
    with torch.no_grad(), _quiet():
        out = runner(x)
    return diff(leaves(out), leaves(reference))


def _one_format(
    fmt: str, model: nn.Module, inputs: dict[int, torch.Tensor], refs: dict[int, Any], cache: dict[str, Any]
) -> tuple[dict[str, Any], list[Finding]]:
    """Export in one format, run at both batch sizes, compare; return (evidence, findings)."""
    record: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        runner, notes = FORMATS[fmt](model, inputs[EXPORT_BATCH], cache)
    except ImportError as exc:  # our own message carries the install hint
        return {"status": "skipped", "reason": str(exc)}, []
    except Exception as exc:  # any exporter error is the finding
        record.update(status="failed", reason=_reason(exc), export_s=round(time.perf_counter() - start, 2))
        return record, [
            make_finding(
                "EXPORT_FAILED",
                f"{fmt} export failed: {record['reason']}",
                evidence={"format": fmt, **record},
                fix=_FAIL_FIX,
                where=fmt,
            )
        ]
    record["export_s"] = round(time.perf_counter() - start, 2)
    findings = _compare(fmt, runner, inputs, refs, record)
    if notes:
        record["tracer_warnings"] = notes[:5]
        findings.append(
            make_finding(
                "EXPORT_FAILED",
                f"The {fmt} trace is specific to its example input ({len(notes)} TracerWarning(s), first: "
                f"{notes[0]}); other inputs may take a path the trace did not record.",
                evidence={"format": fmt, "tracer_warnings": notes[:5]},
                title="Export is input-specific",
                fix="Replace Python control flow on tensor values with tensor ops, or export with torch.export.",
                where=fmt,
            )
        )
    record.setdefault("status", "ok" if not findings else "mismatch")
    return record, findings


def _compare(
    fmt: str, runner: Runner, inputs: dict[int, torch.Tensor], refs: dict[int, Any], record: dict[str, Any]
) -> list[Finding]:
    """Run the artefact at each batch size; one finding per format at most."""
    diffs: dict[int, Diff] = {}
    for batch, x in inputs.items():
        try:
            diffs[batch] = _run(runner, x, refs[batch])
            record[f"batch_{batch}"] = diffs[batch].as_dict()
        except Exception as exc:  # the artefact rejects this input
            record[f"batch_{batch}"] = {"error": _reason(exc)}
            record["status"] = "failed" if batch == EXPORT_BATCH else "mismatch"
            if batch == EXPORT_BATCH:
                return [
                    make_finding(
                        "EXPORT_FAILED",
                        f"The {fmt} artefact fails to run: {_reason(exc)}.",
                        evidence={"format": fmt, **record},
                        fix=_FAIL_FIX,
                        where=fmt,
                    )
                ]
            record["fixed_batch"] = True
            return [
                make_finding(
                    "EXPORT_MISMATCH",
                    f"The {fmt} artefact exported at batch {EXPORT_BATCH} fails at batch {batch}: {_reason(exc)}.",
                    evidence={"format": fmt, "fixed_batch": True, "export_batch": EXPORT_BATCH, "batch": batch},
                    fix="Do not hard-code the batch size in forward (use x.shape[0] or -1 in reshape/view) and "
                    "export with a dynamic batch dimension (torch.export.Dim).",
                    where=fmt,
                )
            ]
    batch, worst = max(diffs.items(), key=lambda kv: kv[1].max_rel)
    if not worst.exceeds(EXPORT_RTOL):
        return []
    record["status"] = "mismatch"
    return [
        make_finding(
            "EXPORT_MISMATCH",
            f"The {fmt} artefact differs from eager by up to {worst.max_abs:.3g} ({worst.max_rel:.2g} of the "
            f"output's scale, tolerance {EXPORT_RTOL:g}) at batch {batch}.",
            evidence={
                "format": fmt,
                "batch": batch,
                "rtol": EXPORT_RTOL,
                **worst.as_dict(),
                "per_batch": {str(b): d.as_dict() for b, d in diffs.items()},
            },
            fix="Look for ops the exporter translates differently (custom autograd functions, in-place updates "
            "of inputs, data-dependent branches) and compare layer by layer.",
            where=fmt,
        )
    ]


@register_check(
    "export",
    summary="TorchScript, torch.export and ONNX artefacts match eager and accept another batch size",
    codes=("EXPORT_FAILED", "EXPORT_MISMATCH"),
    order=50,
)
def check_export(ctx: CheckContext) -> list[Finding]:
    """Export the eval-mode model in each format and compare it with eager at two batch sizes."""
    model = ctx.eval_model()
    inputs = {EXPORT_BATCH: ctx.take(EXPORT_BATCH), OTHER_BATCH: ctx.take(OTHER_BATCH, offset=EXPORT_BATCH)}
    refs = {EXPORT_BATCH: ctx.forward(inputs[EXPORT_BATCH], model)}
    try:
        refs[OTHER_BATCH] = ctx.forward(inputs[OTHER_BATCH], model)
    except Exception as exc:  # eager itself only runs at some batch sizes: compare at the export batch only
        ctx.evidence["other_batch_eager_error"] = one_line(exc)
        del inputs[OTHER_BATCH]
    noise = diff(leaves(ctx.forward(inputs[EXPORT_BATCH], model)), leaves(refs[EXPORT_BATCH]))
    if noise.exceeds(EXPORT_RTOL):
        ctx.skip(
            "the eval-mode model gives different outputs on two runs (see determinism): "
            "no artefact can be compared with it"
        )
    ctx.evidence.update(
        export_batch=EXPORT_BATCH,
        other_batch=OTHER_BATCH,
        rtol=EXPORT_RTOL,
        input_shape=list(inputs[EXPORT_BATCH].shape),
        mode="eval",
    )
    findings: list[Finding] = []
    formats: dict[str, Any] = {}
    cache: dict[str, Any] = {}
    for fmt in FORMATS:
        formats[fmt], found = _one_format(fmt, model, inputs, refs, cache)
        findings.extend(found)
    ctx.evidence["formats"] = formats
    return findings
