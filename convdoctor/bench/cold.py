"""Cold start: the first inference in a fresh process, model load included.

:func:`cold_start` runs ``python -m convdoctor.bench.cold`` in a subprocess. The child
imports torch and convdoctor, builds the model from its MODEL spec with
:func:`convdoctor.capture.load.load_model` (and the checkpoint, if any, with
``weights_only=True``), moves it to the device and dtype, and times its first and second
inference under ``torch.inference_mode`` with the same thread count as the warm run. It
writes one JSON object to a file the parent names (never to stdout: the library does
not print); the parent also times the whole process.

``cold_start_ms = load_ms + first_inference_ms``: what a freshly started replica spends
between "process is up" and "first answer". ``import_ms`` (interpreter start to the
child's ``main``: Python, torch and convdoctor imports) and ``process_ms`` (the parent's
view, teardown included) are reported beside it. The OS page cache is not dropped, so
files read recently load faster than after a reboot.

A plain ``nn.Module`` object cannot be rebuilt in another process without pickling its
class, which a fresh process may not be able to import: its cold start is reported as
absent, with the reason, rather than guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Seconds a cold-start subprocess may take before it is abandoned.
COLD_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ColdStart:
    """Cold-start figures, or the reason they are absent.

    Attributes:
        cold_start_ms: ``load_ms + first_inference_ms``; None when not measured.
        phases: ``import_ms``, ``load_ms``, ``first_inference_ms``, ``second_inference_ms``, ``process_ms``.
        reason: why ``cold_start_ms`` is None.
    """

    cold_start_ms: float | None
    phases: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


def _command(
    spec: str,
    shape: Sequence[int],
    device: str,
    threads: int,
    dtype: str,
    weights: str | None,
    out: Path,
    trusted: bool = False,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "convdoctor.bench.cold",
        "--spec",
        spec,
        "--out",
        str(out),
        "--input",
        "x".join(str(d) for d in shape),
        "--device",
        device,
        "--threads",
        str(threads),
        "--dtype",
        dtype,
        "--t0",
        repr(time.time()),
    ]
    if weights is not None:
        cmd += ["--weights", str(weights)]
    if trusted:
        cmd.append("--trusted")
    return cmd


def _env() -> dict[str, str]:
    """The parent's environment, with this convdoctor first on the path."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def cold_start(
    spec: str,
    shape: Sequence[int],
    *,
    device: str = "cpu",
    threads: int = 1,
    dtype: str = "float32",
    weights: str | None = None,
    timeout: float = COLD_TIMEOUT_S,
    trusted: bool = False,
) -> ColdStart:
    """Measure the cold start of a MODEL spec in a fresh Python process.

    Args:
        spec: MODEL spec (``torchvision:NAME``, ``pkg.module:factory``, ``file.py:factory``, ``.pt``).
        shape: input shape, batch included.
        device: ``"cpu"`` or ``"cuda"``.
        threads: intra-op threads for the child.
        dtype: dtype name (``float32``, ``float16``, ``bfloat16``).
        weights: optional state_dict checkpoint to load (``weights_only=True``).
        timeout: seconds before the child is abandoned.
        trusted: the child loads a ``.pt``/``.pt2`` spec without vetting it (as the parent did).

    Returns:
        The figures; on any failure ``cold_start_ms`` is None and ``reason`` says why.
    """
    with tempfile.TemporaryDirectory(prefix="convdoctor-cold-") as tmp:
        out = Path(tmp) / "cold.json"
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                _command(spec, shape, device, threads, dtype, weights, out, trusted),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_env(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return ColdStart(None, reason=f"the cold-start process ran over {timeout:.0f} s")
        except OSError as exc:
            return ColdStart(None, reason=f"cannot start a Python subprocess: {exc}")
        process_ms = (time.perf_counter() - start) * 1e3
        result = _parse(out)
    if proc.returncode != 0 or result is None or "error" in result:
        detail = (result or {}).get("error") or _last_line(proc.stderr) or f"exit code {proc.returncode}"
        return ColdStart(None, reason=f"cold-start process failed: {detail}")
    phases = {k: float(v) for k, v in result.items()}
    phases["process_ms"] = process_ms
    return ColdStart(phases["load_ms"] + phases["first_inference_ms"], phases)


def _parse(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ---- the child -----------------------------------------------------------------------
def _child(args: argparse.Namespace) -> dict[str, float]:
    """Load, then time the first and second inference. Runs in the fresh process."""
    import torch

    from ..capture.inputs import make_input, parse_input_spec
    from ..capture.load import load_model, load_weights

    entered = time.time()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    shape = parse_input_spec(args.input)
    assert shape is not None
    t0 = time.perf_counter()
    loaded = load_model(args.spec, trusted=args.trusted)
    if args.weights:
        loaded = load_weights(loaded, args.weights)
    model = loaded.module.eval().to(device=device, dtype=dtype)
    x = make_input(shape, device=device, dtype=dtype)
    sync()
    t1 = time.perf_counter()
    times = []
    with torch.inference_mode():
        for _ in range(2):
            start = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - start)
    return {
        "import_ms": (entered - args.t0) * 1e3,
        "load_ms": (t1 - t0) * 1e3,
        "first_inference_ms": times[0] * 1e3,
        "second_inference_ms": times[1] * 1e3,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the cold-start child: writes one JSON object to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m convdoctor.bench.cold")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--trusted", action="store_true")
    parser.add_argument("--t0", type=float, default=time.time())
    args = parser.parse_args(argv)
    try:
        result: dict[str, Any] = _child(args)
    except Exception as exc:  # the parent turns this into a reason, never a traceback
        from ..errors import one_line

        result = {"error": one_line(exc)}
    Path(args.out).write_text(json.dumps(result))
    return 0 if "error" not in result else 3


if __name__ == "__main__":
    sys.exit(main())
