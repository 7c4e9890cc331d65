"""Serving a PT2E int8 program at full speed on x86: AOTInductor with freezing, cached on disk.

The lowered graph of :func:`~convdoctor.quant.quantize_int8` (oneDNN int8 kernels called
one by one from a ``torch.fx.GraphModule``) runs every convolution in int8 but leaves the
glue to eager PyTorch: a quantize and a dequantize around each max pool, average pool and
flatten, and the dispatcher's per-op cost between kernels. On a small network at batch 1
that glue is most of the time. Inductor with ``freezing`` runs the x86 fusion passes on the
reference program (the weights become constants, prepacked for the real activation shape)
and generates C++ for what is left.

Why AOTInductor and not ``torch.compile``: both run the same passes and call the same oneDNN
kernels, but a ``torch.compile``'d call still goes through Dynamo's guard check and the
AOTAutograd wrappers in Python, about 0.09 ms a call here; an AOTInductor package is a
shared library called through one C++ runner. On the digits ResNet at batch 1 (2 threads,
one process) that was 0.41 ms against 0.50 ms for the same kernels under ``torch.compile``
and 0.49 ms for torch.ao's FX int8. And a package is a file: it is what the cache keeps.

**Compilation and its cache.** Each input shape is compiled once (seconds to a minute) at
its first call; shapes are static on purpose (with a dynamic batch the x86 pass cannot see
the activation shape and prepacks every conv weight for any shape, about 1 ms per conv per
call). The package is written to :func:`cache_dir` under a key made of everything the
generated code depends on: the program's graph and every tensor byte in it, the input shape,
the torch and torchao versions, the CPU's instruction set and the settings below. A later
call with the same key, in this process or another, loads it in milliseconds instead of
compiling. ``CONVDOCTOR_CACHE_DIR`` moves the cache; ``CONVDOCTOR_CACHE_DIR=off`` compiles
into a temporary folder that is removed after loading.

**A package is code, so the cache is trusted no further than it is checked**
(:class:`convdoctor._cache.Store`): the folder must be yours and not writable by others (else
a private folder of this run is used, with a warning); each package's SHA-256 is recorded
when it is written, and a package is loaded only from a private copy of bytes that match
that record. A package with no record (planted), another digest (swapped, truncated) or a
link is never loaded: a warning names it and why, and it is compiled again and replaced.

:class:`CompiledInt8` never fails where the lowered graph works: when compiling fails (no
C++ compiler, a torch API that moved) or more than :data:`MAX_COMPILED_SHAPES` shapes
arrive, the call runs on the lowered graph and :attr:`CompiledInt8.note` says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._cache import CACHE_ENV, Store
from .._compat import INDUCTOR_LOGGER, aoti_compile, aoti_load
from .._native import capture_native
from ..errors import one_line

__all__ = [
    "CACHE_ENV",
    "INDUCTOR_SETTINGS",
    "MAX_COMPILED_SHAPES",
    "CompileRecord",
    "CompiledInt8",
    "cache_dir",
    "program_digest",
]

log = logging.getLogger(__name__)

#: Inductor settings for int8 serving. ``freezing`` turns weights into constants so the
#: int8 fusion passes run (AOTInductor always calls its kernels from generated C++).
INDUCTOR_SETTINGS: dict[str, Any] = {"freezing": True}

#: Distinct input shapes compiled per model; further shapes run on the lowered graph
#: (int8 too), so a caller feeding every batch size does not compile without end.
MAX_COMPILED_SHAPES = 8


#: The cache store of compiled packages (``int8/`` in the cache folder).
STORE = "int8"


def cache_dir() -> Path | None:
    """Where compiled int8 packages are kept: ``int8/`` in convdoctor's cache folder
    (``$CONVDOCTOR_CACHE_DIR``, else ``~/.cache/convdoctor``), or in this run's private folder when
    that one is not trusted (created, with a warning, here); None when the cache is off."""
    store = Store.open(STORE)
    return None if store is None else store.folder


@dataclass(frozen=True)
class CompileRecord:
    """How one input shape came to be served.

    Attributes:
        shape: the input shapes, one tuple per tensor argument.
        seconds: wall time to export and compile, or to load the cached package.
        cached: True when the package came from the cache instead of a compilation.
        package: the package's path in the cache ("" when the cache is off).
    """

    shape: tuple[tuple[int, ...], ...]
    seconds: float
    cached: bool
    package: str


class _DropLogs(logging.Filter):
    """Drops every record: torch's compile-time chatter ("No CUDA runtime is found" from
    cpp_extension, inductor's notes) says nothing about the user's model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


#: Loggers that speak while Inductor compiles on a CPU machine.
_NOISY_LOGGERS = ("torch.utils.cpp_extension", INDUCTOR_LOGGER, "torch.export")


@contextlib.contextmanager
def _quiet_compile() -> Iterator[None]:
    """torch's warnings, logs and compiler output held back while exporting and compiling."""
    drop = _DropLogs()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings(), capture_native("inductor int8 compile"):
            warnings.simplefilter("ignore")  # e.g. mkldnn_lowerings' copy-construct UserWarning
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


class _ServeState:
    """What a :class:`CompiledInt8` learnt while serving: a runner per shape, why it fell back.

    A plain object, not module attributes: ``preserve_model_state`` (which every measuring
    call runs the model under) restores module attributes and the containers in them, and
    would make the model forget what it compiled, or retry a compilation that failed.
    """

    def __init__(self) -> None:
        self.runners: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self.records: list[CompileRecord] = []
        self.note = ""
        self.digest: str | None = None


def _shape_key(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((tuple(a.shape), a.dtype, a.device) if isinstance(a, torch.Tensor) else type(a) for a in args)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().cpu().contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).numpy()) if flat.numel() else b""


def program_digest(reference: nn.Module) -> str:
    """SHA-256 of what the generated code depends on in ``reference``: its code and every tensor in it.

    Tensors are found as parameters, buffers and plain tensor attributes (a ``get_attr`` can
    read any of them); ``convert_pt2e`` writes activation scales into the code as literals.
    """
    h = hashlib.sha256(str(getattr(reference, "code", repr(reference))).encode())
    seen: set[str] = set()
    for prefix, module in reference.named_modules():
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        tensors += [(k, v) for k, v in vars(module).items() if isinstance(v, torch.Tensor)]
        for name, t in tensors:
            key = f"{prefix}.{name}"
            if key in seen:
                continue
            seen.add(key)
            h.update(f"{key}:{t.dtype}:{tuple(t.shape)}:".encode())
            h.update(_tensor_bytes(t))
    return h.hexdigest()


def _environment() -> str:
    from ._torchao import import_torchao

    torchao = import_torchao()[0]
    capability = torch.backends.cpu.get_cpu_capability()
    return (
        f"torch {torch.__version__}; torchao {torchao.__version__}; {platform.machine()} {capability}; "
        f"{sorted(INDUCTOR_SETTINGS.items())}"
    )


def _package_name(digest: str, key: tuple[Any, ...]) -> str:
    return hashlib.sha256(f"{digest}|{key}|{_environment()}".encode()).hexdigest()[:32] + ".pt2"


class CompiledInt8(nn.Module):
    """The reference int8 program compiled by AOTInductor, one package per input shape.

    Its ``state_dict`` is the reference model's (int8 weights, scales, zero points, fp32
    biases): what :meth:`~convdoctor.quant.QuantResult.save` ships. Inference only: an int8
    program has no gradients to give.

    Attributes:
        reference: the converted PT2E model (int8 weights, fp32 compute).
    """

    def __init__(self, reference: nn.Module, lowered: nn.Module) -> None:
        super().__init__()
        for m in reference.modules():  # ours, never the user's: inference flags for export
            m.training = False
        self.reference = reference
        # Not submodules: their prepacked copies of the weights would count twice in state_dict.
        self.__dict__["_lowered"] = lowered
        self.__dict__["_state"] = _ServeState()

    @property
    def lowered(self) -> nn.Module:
        """The lowered graph that serves any shape without compiling."""
        lowered: nn.Module = self.__dict__["_lowered"]
        return lowered

    @property
    def compiled_shapes(self) -> int:
        """Input shapes compiled (or loaded from the cache) so far."""
        return len(self.__dict__["_state"].runners)

    @property
    def records(self) -> tuple[CompileRecord, ...]:
        """One :class:`CompileRecord` per shape served compiled, in the order they arrived."""
        return tuple(self.__dict__["_state"].records)

    @property
    def note(self) -> str:
        """Why a call ran on the lowered graph instead, ``""`` while none did."""
        note: str = self.__dict__["_state"].note
        return note

    def forward(self, *args: Any) -> Any:
        """Run the compiled program (compiling on a new shape), or the lowered graph when it cannot."""
        state = self.__dict__["_state"]
        # the package was compiled for contiguous inputs and reads them as such
        args = tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)
        runner = state.runners.get(_shape_key(args))
        if runner is not None:
            return runner(*args)
        with torch.no_grad():
            if state.note or len(state.runners) >= MAX_COMPILED_SHAPES:
                return self.lowered(*args)
            return self._compile_and_run(_shape_key(args), args)

    def _compile_and_run(self, key: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
        state = self.__dict__["_state"]
        start = time.perf_counter()
        try:
            with contextlib.ExitStack() as stack:
                # the cache's checks run outside the quiet block: a refused package is a visible warning
                store = Store.open(STORE)
                name = None if store is None else _package_name(self._digest(), key)
                copy = None if store is None or name is None else stack.enter_context(store.verified(name))
                with _quiet_compile():
                    runner, package, cached = self._runner(args, store, name, copy)
                    out = runner(*args)
        except Exception as exc:  # noqa: BLE001 - no C++ compiler, an inductor change...: the lowered graph is int8 too
            out = self.lowered(*args)  # the input's own fault raises here, with its own message
            # a full disk or an unreadable cache folder is not the compiler's fault: say which failed
            what = (
                "the int8 package could not be written or read"
                if isinstance(exc, OSError)
                else "Inductor compilation failed"
            )
            state.note = f"{what} ({one_line(exc)[:160]}); running the lowered graph"
            log.info("%s", state.note)
            return out
        shape = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        state.records.append(CompileRecord(shape, time.perf_counter() - start, cached, package))
        state.runners[key] = runner
        return out

    def _digest(self) -> str:
        state = self.__dict__["_state"]
        if state.digest is None:
            state.digest = program_digest(self.reference)
        digest: str = state.digest
        return digest

    def _runner(
        self, args: tuple[Any, ...], store: Store | None, name: str | None, copy: Path | None
    ) -> tuple[Callable[..., Any], str, bool]:
        """The package for this shape: ``copy`` (verified bytes of the cached one) when given,
        else compiled now (and stored, with its digest, when the cache is on)."""
        if store is None or name is None:
            with tempfile.TemporaryDirectory(prefix="convdoctor-int8-") as tmp:
                return aoti_load(self._compile(args, str(Path(tmp) / "int8.pt2"))), "", False
        path = store.path(name)
        if copy is not None:
            try:
                return aoti_load(str(copy)), str(path), True
            except Exception as exc:  # noqa: BLE001 - verified bytes this torch cannot load: compile again
                log.info("cached int8 package %s does not load (%s): compiling again", path, one_line(exc)[:160])
        partial = store.folder / f".{os.getpid()}.partial.{name}"  # AOTInductor wants a .pt2 name
        try:
            runner = aoti_load(self._compile(args, str(partial)))  # loaded from what we just wrote
            store.put(name, partial)
        finally:
            partial.unlink(missing_ok=True)
        return runner, str(path), False

    def _compile(self, args: tuple[Any, ...], path: str) -> str:
        program = torch.export.export(self.reference, args)  # static shapes: see the module docstring
        return aoti_compile(program, path, INDUCTOR_SETTINGS)
