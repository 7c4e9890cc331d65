"""Serving a PT2E int8 program at full speed on x86: Inductor with freezing.

The lowered graph of :func:`~convdoctor.quant.quantize_int8` (oneDNN int8 kernels called
one by one from a ``torch.fx.GraphModule``) runs every convolution in int8 but leaves the
glue to eager PyTorch: a quantize and a dequantize around each max pool, average pool and
flatten, and the dispatcher's per-op cost between kernels. On a small network at batch 1
that glue is most of the time. ``torch.compile`` with Inductor's ``freezing`` runs the same
x86 fusion passes (the weights become constants and are prepacked for the real activation
shape), then generates C++ for what is left (``cpp_wrapper``: no Python between kernels).

Compilation happens at the first call with each input shape and takes seconds to a few
minutes (``compile_first_call_s`` in the benchmark); Inductor keeps the generated code in
its on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_<user>``), so a
later process compiling the same model at the same shape mostly reads it back. Shapes are
static on purpose: with a dynamic batch the x86 pass cannot see the activation shape and
prepacks every conv weight for any shape, which costs about 1 ms per conv per call.

:class:`CompiledInt8` never fails where the lowered graph works: when compiling fails (no
C++ compiler, a torch API that moved) or more than :data:`MAX_COMPILED_SHAPES` shapes
arrive, the call runs on the lowered graph and :attr:`CompiledInt8.note` says why.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .._compat import INDUCTOR_LOGGER, inductor_config_patch
from .._native import capture_native
from ..errors import one_line

__all__ = ["INDUCTOR_SETTINGS", "MAX_COMPILED_SHAPES", "CompiledInt8"]

log = logging.getLogger(__name__)

#: Inductor settings for int8 serving. ``freezing`` turns weights into constants so the
#: int8 fusion passes run; ``cpp_wrapper`` calls the kernels from generated C++.
INDUCTOR_SETTINGS: dict[str, Any] = {"freezing": True, "cpp_wrapper": True}

#: Distinct input shapes compiled per model. torch's own limit (``recompile_limit``, 8)
#: would silently fall back to the reference model (fp32 compute); further shapes run on the
#: lowered graph instead, which is int8 too.
MAX_COMPILED_SHAPES = 8


class _DropLogs(logging.Filter):
    """Drops every record: torch's compile-time chatter ("No CUDA runtime is found" from
    cpp_extension, inductor's notes) says nothing about the user's model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


#: Loggers that speak while Inductor compiles on a CPU machine.
_NOISY_LOGGERS = ("torch.utils.cpp_extension", INDUCTOR_LOGGER)


@contextlib.contextmanager
def _quiet_compile() -> Iterator[None]:
    """Inductor settings for int8, with torch's warnings, logs and compiler output held back."""
    drop = _DropLogs()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with (
            warnings.catch_warnings(),
            capture_native("inductor int8 compile"),
            inductor_config_patch(**INDUCTOR_SETTINGS),
        ):
            warnings.simplefilter("ignore")  # e.g. mkldnn_lowerings' copy-construct UserWarning
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


class _ServeState:
    """What a :class:`CompiledInt8` learnt while serving: compiled shapes, why it fell back.

    A plain object, not module attributes: ``preserve_model_state`` (which every measuring
    call runs the model under) restores module attributes and the sets in them, and would
    make the model forget which shapes it compiled, or retry a compilation that failed.
    """

    def __init__(self) -> None:
        self.shapes: set[tuple[Any, ...]] = set()
        self.note = ""


def _guard_options() -> dict[str, Any]:
    """Guard only what can change between calls: the input tensors and grad mode.

    Dynamo's default guards also check every attribute of every module of the program on each
    call; on the digits ResNet at batch 1 that lookup took about 0.24 ms of a 2 ms call (torch
    profiler, "TorchDynamo Cache Lookup"). Nothing can change them here: the reference program
    is ours, never handed out for training, and its weights are frozen into the compiled code
    anyway. ``skip_guard_on_all_nn_modules_unsafe`` is torch's public filter for exactly this
    ("unsafe" only for models whose attributes change); torch versions without it keep the
    default guards.
    """
    skip = getattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe", None)
    return {"guard_filter_fn": skip} if skip is not None else {}


def _shape_key(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else type(a) for a in args)


class CompiledInt8(nn.Module):
    """The reference int8 program compiled by Inductor, one compilation per input shape.

    Its ``state_dict`` is the reference model's (int8 weights, scales, zero points, fp32
    biases): what :meth:`~convdoctor.quant.QuantResult.save` ships. Inference only: every
    call runs under ``torch.no_grad`` (freezing needs it, and an int8 program has no
    gradients to give).

    Attributes:
        reference: the converted PT2E model (int8 weights, fp32 compute).
        note: why a call ran on the lowered graph instead, ``""`` while none did.
    """

    def __init__(self, reference: nn.Module, lowered: nn.Module) -> None:
        super().__init__()
        for m in reference.modules():  # ours, never the user's: inference flags, so no guard recompiles
            m.training = False
        self.reference = reference
        # Not submodules: their prepacked copies of the weights would count twice in state_dict.
        self.__dict__["_lowered"] = lowered
        self.__dict__["_compiled"] = torch.compile(reference, dynamic=False, options=_guard_options())
        self.__dict__["_state"] = _ServeState()

    @property
    def lowered(self) -> nn.Module:
        """The lowered graph that serves any shape without compiling."""
        lowered: nn.Module = self.__dict__["_lowered"]
        return lowered

    @property
    def compiled_shapes(self) -> int:
        """Input shapes compiled so far."""
        return len(self.__dict__["_state"].shapes)

    @property
    def note(self) -> str:
        """Why a call ran on the lowered graph instead, ``""`` while none did."""
        note: str = self.__dict__["_state"].note
        return note

    def forward(self, *args: Any) -> Any:
        """Run the compiled program (compiling on a new shape), or the lowered graph when it cannot."""
        key = _shape_key(args)
        with torch.no_grad():
            state = self.__dict__["_state"]
            if key in state.shapes:
                return self.__dict__["_compiled"](*args)
            if state.note or len(state.shapes) >= MAX_COMPILED_SHAPES:
                return self.lowered(*args)
            return self._compile_and_run(key, args)

    def _compile_and_run(self, key: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
        try:
            with _quiet_compile():
                out = self.__dict__["_compiled"](*args)
        except Exception as exc:  # noqa: BLE001 - no C++ compiler, an inductor change...: the lowered graph is int8 too
            out = self.lowered(*args)  # the input's own fault raises here, with its own message
            self.__dict__[
                "_state"
            ].note = f"Inductor compilation failed ({one_line(exc)[:160]}); running the lowered graph"
            log.info("%s", self.note)
            return out
        self.__dict__["_state"].shapes.add(key)
        return out
