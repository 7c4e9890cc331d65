"""Hold what third-party code prints while it runs, at the file-descriptor level.

Some of what torch and its exporters print never passes through Python's ``sys.stdout``:
Kineto (the profiler) writes ``USDT: ... profiler_start`` and ``ERROR: ... gpuGetDeviceCount``
from C++ straight to file descriptor 2, and torch's logging handlers hold the process's
original stderr, so ``contextlib.redirect_stderr`` misses both. :func:`capture_native`
points descriptors 1 and 2 at a temporary file for the duration of the block (and Python's
``sys.stdout``/``sys.stderr`` at a buffer, for warnings and prints when those streams are not
the descriptors), then puts them back and returns the text. The caller keeps what matters (a root cause) as evidence;
the whole text is logged at INFO on ``convdoctor.native``, which the CLI shows under ``-v``.

Limits: descriptors are per process, so output of other threads during the block is held
too (and shown under ``-v``); a nested capture adds nothing, the outermost one holds all.
Where descriptors 1 and 2 cannot be duplicated (closed, or no such thing on the platform)
the block runs uncaptured rather than failing.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["NativeOutput", "capture_native"]

log = logging.getLogger("convdoctor.native")

#: Lines of held output that :meth:`NativeOutput.summary` may quote.
_SUMMARY_CHARS = 300

_depth = threading.local()


@dataclass
class NativeOutput:
    """What third-party code wrote to descriptors 1 and 2 during a :func:`capture_native` block.

    Filled when the block ends (it is mutable for that reason only).

    Attributes:
        label: what ran (``"bench profiler"``), for the log.
        text: everything written, stdout and stderr interleaved as written; ``""`` when nothing
            was, or when this block was nested in another capture (the outer one holds it).
        captured: False when the descriptors could not be redirected.
    """

    label: str
    text: str = ""
    captured: bool = False

    @property
    def lines(self) -> list[str]:
        """The non-empty lines of :attr:`text`."""
        return [line for line in self.text.splitlines() if line.strip()]

    def summary(self) -> str:
        """The first line that reports an error (else the first line), cut to a few hundred characters."""
        lines = self.lines
        first = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
        return first if len(first) <= _SUMMARY_CHARS else first[: _SUMMARY_CHARS - 3] + "..."


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or replaced stream has nothing of ours to flush
            stream.flush()
    if sys.platform != "win32":  # C stdio buffers (printf from native code) must land before the swap
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def capture_native(label: str, *, own: bool = False) -> Iterator[NativeOutput]:
    """Redirect descriptors 1 and 2 into a temporary file while the block runs.

    Args:
        label: what runs in the block, named in the log line.
        own: hold this block's output in its own buffer even inside another capture (for a
            probe that must read what it printed); the outer capture's descriptors come back after.

    Yields:
        A :class:`NativeOutput`, filled when the block exits (also when it raises).
    """
    out = NativeOutput(label)
    outer = getattr(_depth, "value", 0)
    if outer and not own:  # the outer capture holds everything: one place, one log entry
        yield out
        return
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:
        yield out
        return
    _depth.value = 1
    python_level = io.StringIO()  # print() and warnings when sys.stdout/stderr are not the descriptors
    with tempfile.TemporaryFile(mode="w+b", prefix="convdoctor-native-") as sink:
        _flush()
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        out.captured = True
        try:
            with contextlib.redirect_stdout(python_level), contextlib.redirect_stderr(python_level):
                yield out
        finally:
            _flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            _depth.value = outer
            sink.seek(0)
            out.text = sink.read().decode("utf-8", errors="replace") + python_level.getvalue()
            if out.text.strip():
                log.info("%s printed %d line(s), held back:\n%s", label, len(out.lines), out.text.rstrip())
