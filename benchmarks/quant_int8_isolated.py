"""INT8 on CPU, each contender in a process of its own: convdoctor's int8 against torch.ao's FX anchor.

``quant_int8.py`` times every model in one process, interleaved. That controls the load of a
shared machine, but not what the process ran before: on resnet18 at batch 1 the same oneDNN
AMX conv kernels of convdoctor's package ran up to 2x slower per conv (``ONEDNN_VERBOSE``
exec times) when ``quantize_int8`` had run before the FX anchor was built than when it ran
after, with no page faults in either case. A server runs one model in its process, so here
each measurement is a fresh process that builds one contender and times it:

- the parent builds the fp32 model (seeded; the digits ResNet is trained once) and writes its
  state_dict, the calibration batches and ``quantize_int8(...).save()`` to a work folder;
- per batch size and round, one child process per contender (fp32, FX, convdoctor; the order
  alternates between rounds) builds it (convdoctor: ``load_int8`` of the saved program, as on a
  serving machine), makes its first call (timed: for convdoctor the package compile in the
  first child, a load from the package cache in the others), warms up and times ``--calls``
  calls (median);
- **ratio** = FX median ms / convdoctor median ms over the rounds (= convdoctor's speedup over
  fp32 / FX's; >= 1: as fast as the anchor), the statistic of ``quant_int8.py``; beside it the
  median and range of the per-round ratios (FX ms / convdoctor ms of the same round: processes
  run one after another, so a load change between them moves a round's ratio).

Run: ``.venv/bin/python benchmarks/quant_int8_isolated.py [--models digits,resnet18]
[--batch-sizes 1,32] [--threads 2] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from quant_int8 import SHAPES, build, fx_anchor  # noqa: E402

from convdoctor.quant import load_int8, quantize_int8  # noqa: E402
from convdoctor.quant.serve import CACHE_ENV  # noqa: E402

CONTENDERS = ("fp32", "fx", "convdoctor")


def architecture(name: str) -> nn.Module:
    """The model with random weights, for ``load_state_dict``."""
    if name == "digits":
        from tests.quant.digits_resnet import DigitsResNet

        return DigitsResNet(24)
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


def prepare(name: str, work: Path) -> None:
    """Write the fp32 weights, the calibration batches and convdoctor's int8 program."""
    model, calib, _ = build(name)
    batches = list(calib.split(32 if name == "digits" else 8))
    torch.save(model.state_dict(), work / "fp32.pt")
    torch.save(batches, work / "calibration.pt")
    quantize_int8(model, calib, batch_size=32 if name == "digits" else 8).save(work / "int8.pt2")


def child(name: str, contender: str, batch: int, calls: int, work: Path) -> dict[str, float | bool]:
    """Build one contender, time its first call and then ``calls`` warm calls."""
    torch.manual_seed(1)
    x = torch.rand(batch, *SHAPES[name])
    model = architecture(name)
    model.load_state_dict(torch.load(work / "fp32.pt", weights_only=True))
    model.eval()
    if contender == "fx":
        model = fx_anchor(model, torch.load(work / "calibration.pt", weights_only=True))
    elif contender == "convdoctor":
        model = load_int8(work / "int8.pt2", x)
    with torch.no_grad():
        start = time.perf_counter()  # the first call: for convdoctor, a compilation or a cache load
        model(x)
        first = time.perf_counter() - start
        records = getattr(model, "records", ())
        cached = bool(records and records[-1].cached)
        for _ in range(3):
            model(x)
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            model(x)
            samples.append(time.perf_counter() - t0)
    return {"ms": 1e3 * statistics.median(samples), "first_s": first, "cached": cached}


def _run_child(name: str, contender: str, batch: int, calls: int, work: Path, threads: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", name, contender, str(batch), str(calls), str(work), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {contender} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def row(name: str, batch: int, rounds: int, calls: int, work: Path, threads: int) -> str:
    """One markdown row: medians, speedups, the paired ratio, first calls, the spread."""
    per: dict[str, list[dict[str, float]]] = {c: [] for c in CONTENDERS}
    for r in range(rounds):
        for contender in CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]:
            per[contender].append(_run_child(name, contender, batch, calls, work, threads))
    ms = {c: statistics.median(m["ms"] for m in runs) for c, runs in per.items()}
    paired = [f["ms"] / c["ms"] for f, c in zip(per["fx"], per["convdoctor"], strict=True)]
    cold = [m["first_s"] for m in per["convdoctor"] if not m["cached"]]
    warm = [m["first_s"] for m in per["convdoctor"] if m["cached"]]
    cells = " | ".join(f"{ms[c]:.2f} ({ms['fp32'] / ms[c]:.2f}x)" for c in CONTENDERS)
    spread = " / ".join(
        f"{min(m['ms'] for m in per[c]):.2f}-{max(m['ms'] for m in per[c]):.2f}" for c in ("convdoctor", "fx")
    )
    first = f"{cold[0]:.1f} s" if cold else "-"
    first += f" / {1e3 * statistics.median(warm):.0f} ms" if warm else ""
    return (
        f"| {name} | {batch} | {cells} | **{ms['fx'] / ms['convdoctor']:.2f}** | "
        f"{statistics.median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f}) "
        f"| {first} | {spread} |"
    )


def main() -> None:
    """Parse arguments (or run one child), measure, print markdown."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        name, contender, batch, calls, work, threads = sys.argv[2:8]
        torch.set_num_threads(int(threads))
        print(json.dumps(child(name, contender, int(batch), int(calls), Path(work))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,resnet18,mobilenet_v2,efficientnet_b0")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=64, help="calls per child at batch 1 (divided by the batch)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="quant-int8-isolated-")  # children inherit a cold cache
    print(f"threads {args.threads}, torch {torch.__version__}, load average before {os.getloadavg()[0]:.2f}\n")
    print(
        "| model | batch | fp32 ms | FX int8 ms (speedup) | convdoctor int8 ms (speedup) | convdoctor / FX | "
        "paired rounds: median (range) | convdoctor first call: compile / cached | spread ms, convdoctor / FX |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"quant-int8-{name}-"))
        prepare(name, work)
        for b in (int(b) for b in args.batch_sizes.split(",")):
            print(row(name, b, args.rounds, max(3, args.calls // b), work, args.threads), flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
