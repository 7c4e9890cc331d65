"""INT8 top-1 agreement with fp32 on trained torchvision CNNs, on this CPU and on emulated older ones.

Random-weight torchvision models cannot show agreement: mobilenet_v2's activations shrink to
1e-10 through its depth at initialisation, so fp32 and INT8 both predict one class for every
input. So each model is trained first, once, on scikit-learn's digits (grey repeated to three
channels, bilinearly upsampled to 32x32; torchvision's ``resnet18`` / ``mobilenet_v2`` with 10
classes, convdoctor's demo loop: SGD, lr 0.02, batch 32, BatchNorm recalibrated at the end).
The weights are saved (``--weights-dir``) and loaded back with ``weights_only=True``.

Then one child process per CPU setting quantizes the same weights with
``convdoctor.quant.quantize_int8`` (its defaults: the int8 path measured on that CPU, the
held-out verification, the 7-bit retry; ``compile=False``, so the lowered oneDNN graph answers,
which runs the same kernels as the served AOTInductor package) and compares top-1 with fp32:

- on the calibration batches (the 256 first training digits, in batches of 64), and
- on the held-out test digits (never seen by training or calibration).

The CPU settings are environment caps that ATen and oneDNN honour: ``native``; ``AVX2``
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``: Haswell to Coffee Lake, Zen 1-3, no
VNNI) and ``AVX512_CORE`` (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``: Skylake, no VNNI).

Run: ``.venv/bin/python benchmarks/quant_agreement.py [--models resnet18,mobilenet_v2]
[--epochs 8] [--caps native,AVX2,AVX512_CORE] [--weights-dir DIR] [--threads 2]``.

8 epochs (the default) bring both models to 93-94% test top-1, what a user quantizes (on
2026-12-07: 20-25 s of training per model, 7 minutes for the whole run on 2 cores; the weights
are kept). ``--epochs 3`` (83.7% / 90.2%) is the stress case: many test digits there are
near-ties between two classes, which any rounding can flip.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CAPS: dict[str, dict[str, str]] = {
    "native": {},
    "AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "AVX512_CORE": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}
#: Calibration: the first training digits, in batches of this size.
CALIBRATION, CALIBRATION_BATCH = 256, 64


def digits_rgb() -> Any:
    """The digits at 32x32, grey repeated to the three channels torchvision's stems take."""
    from convdoctor.demo.digits import Split
    from tests.quant.digits_resnet import digits32

    s = digits32()

    def rgb(t: torch.Tensor) -> torch.Tensor:
        return t.repeat(1, 3, 1, 1)

    return Split(rgb(s.x_train), s.y_train, rgb(s.x_test), s.y_test)


def build(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(num_classes=10)


def trained_weights(name: str, epochs: int, folder: Path) -> tuple[Path, float]:
    """Train ``name`` on the digits once; the saved state_dict's path and the seconds it took."""
    path = folder / f"{name}-digits32-e{epochs}.pt"
    if path.exists():
        return path, 0.0
    from convdoctor.demo.digits import train_digits

    start = time.perf_counter()
    result = train_digits(digits_rgb(), model=build(name), epochs=epochs, lr=0.02)
    torch.save(result.model.state_dict(), path)
    return path, time.perf_counter() - start


def _top1(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(c).argmax(1) for c in x.split(CALIBRATION_BATCH)])


def child(name: str, weights: Path) -> dict[str, Any]:
    """Quantize the trained weights on this process's CPU setting and compare with fp32."""
    from convdoctor.quant import quantize_int8

    split = digits_rgb()
    model = build(name)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    calib = split.x_train[:CALIBRATION]
    start = time.perf_counter()
    result = quantize_int8(model, list(calib.split(CALIBRATION_BATCH)), compile=False)
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "model": name,
        "int8_path": result.path_note,
        "attempts": [a["activation_bits"] for a in result.attempts],
        "quantize_s": round(seconds, 1),
    }
    for part, x, y in (("calibration", calib, split.y_train[:CALIBRATION]), ("test", split.x_test, split.y_test)):
        f, q = _top1(model, x), _top1(result.model, x)
        out[part] = {
            "samples": len(y),
            "agreement": float((f == q).float().mean()),
            "flips": int((f != q).sum()),
            "fp32_acc": float((f == y).float().mean()),
            "int8_acc": float((q == y).float().mean()),
        }
    return out


def run_child(name: str, weights: Path, cap: str, threads: int) -> dict[str, Any]:
    env = {**os.environ, **CAPS[cap], "OMP_NUM_THREADS": str(threads)}
    for key in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        if key not in CAPS[cap]:
            env.pop(key, None)
    cmd = [sys.executable, __file__, "--child", name, "--weights", str(weights), "--threads", str(threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        return {"model": name, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--caps", default="native,AVX2,AVX512_CORE")
    parser.add_argument("--weights-dir", type=Path, default=Path(tempfile.gettempdir()) / "convdoctor-agreement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.weights)))
        return
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, threads {args.threads}, load average {os.getloadavg()[0]:.2f}\n")
    print(
        "| model | CPU setting | int8 path | attempts (activation bits) | calibration agreement (flips / n) | "
        "test agreement (flips / n) | test top-1 fp32 → int8 |"
    )
    print("|---|---|---|---|---:|---:|---:|")
    for name in args.models.split(","):
        weights, trained_s = trained_weights(name, args.epochs, args.weights_dir)
        if trained_s:
            print(f"<!-- {name}: trained {args.epochs} epochs in {trained_s:.0f} s -->", flush=True)
        for cap in args.caps.split(","):
            r = run_child(name, weights, cap, args.threads)
            if "error" in r:
                print(f"| {name} | {cap} | error: {r['error']} | | | | |", flush=True)
                continue
            c, t = r["calibration"], r["test"]
            print(
                f"| {name} | {cap} | {r['int8_path']} | {r['attempts']} | "
                f"{100 * c['agreement']:.2f}% ({c['flips']} / {c['samples']}) | "
                f"{100 * t['agreement']:.2f}% ({t['flips']} / {t['samples']}) | "
                f"{100 * t['fp32_acc']:.1f}% → {100 * t['int8_acc']:.1f}% |",
                flush=True,
            )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
