"""INT8 on CPU: the digits ResNet of the acceptance test, quantize_int8 vs quantize_dynamic.

Trains ``tests/quant/digits_resnet.DigitsResNet`` on digits upsampled to 32x32, quantizes
it with ``convdoctor.fix.quantize_int8`` (torchao PT2E, x86 lowering) and with
``torch.ao.quantization.quantize_dynamic(model, {nn.Linear})``, and reports test accuracy,
bytes on disk (``torch.save`` of the state_dict, and ``.pt2`` programs) and median latency
at batch 1 and 32 (``compare_int8``: torch.utils.benchmark via convdoctor.bench, one call
per sample). ``--resnet18`` adds torchvision resnet18 at 224x224 (random weights, random
calibration: latency and size only). Other processes on the machine move the latencies:
the load average is printed with them.

Run: ``.venv/bin/python benchmarks/quant_int8.py [--threads 2] [--resnet18]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.benchmark.utils.common import set_torch_threads

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convdoctor.audit._int8 import compare_int8, dynamic_quant_coverage
from convdoctor.fix import quantize_int8
from tests.quant.digits_resnet import digits32, trained_resnet


def _pt2_bytes(model: nn.Module, x: torch.Tensor) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt2"
        torch.export.save(torch.export.export(model, (x,)), path)
        return os.path.getsize(path)


def _lat(m: dict) -> str:
    return " | ".join(f"{r['fp32_ms']:.2f} / {r['int8_ms']:.2f} ({r['ratio']:.2f}x)" for r in m["latency"].values())


def digits_rows(threads: int, min_run_time: float) -> list[str]:
    """Markdown rows for the digits ResNet."""
    split = digits32()
    t0 = time.perf_counter()
    with set_torch_threads(1):  # one thread: the same model as the tests train (conftest runs 1 thread)
        model = trained_resnet(split, epochs=6)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = quantize_int8(model, split.x_train[:256])
    quant_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dyn = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    rows = [(f"digits ResNet: {sum(p.numel() for p in model.parameters()):,} params, trained in {train_s:.1f} s, "
             f"quantize_int8 took {quant_s:.1f} s"), "",
            ("| model | test accuracy | flips | max abs logit error | state_dict bytes (ratio) | "
             "p50 ms fp32 / int8, batch 1 | batch 32 |"), "|---|---:|---:|---:|---:|---:|---:|"]
    for name, qm in (("quantize_int8 (PT2E, lowered)", q.model), ("quantize_dynamic {Linear}", dyn)):
        m = compare_int8(model, qm, split.x_test, split.y_test, threads=threads, min_run_time=min_run_time)
        rows.append(f"| {name} | {100 * m['accuracy_fp32']:.2f}% -> {100 * m['accuracy_int8']:.2f}% | {m['flips']} | "
                    f"{m['max_abs_error']:.3f} | {m['size_fp32_bytes']:,} -> {m['size_int8_bytes']:,} "
                    f"({m['size_ratio']:.3f}) | {_lat(m)} |")
    cov = dynamic_quant_coverage(dyn, "1x1x32x32")
    x = split.x_test[:2]
    with tempfile.TemporaryDirectory() as tmp:
        int8_pt2 = os.path.getsize(q.save(Path(tmp) / "q.pt2"))
    rows += ["", (f"quantize_dynamic: {100 * cov['fp32_mac_fraction']:.3f}% of MACs still fp32 "
                  f"({cov['fp32_macs']:,} fp32, {cov['int8_macs']:,} int8 per sample)."),
             f".pt2 programs: fp32 {_pt2_bytes(model, x):,} bytes, int8 (QuantResult.save) {int8_pt2:,} bytes."]
    return rows


def resnet18_rows(threads: int, min_run_time: float) -> list[str]:
    """Markdown rows for torchvision resnet18 (random weights)."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    calib = torch.rand(32, 3, 224, 224)
    t0 = time.perf_counter()
    q = quantize_int8(model, calib, batch_size=8)
    quant_s = time.perf_counter() - t0
    m = compare_int8(model, q.model, calib[:8], threads=threads, min_run_time=min_run_time)
    return [(f"resnet18 224x224 (random weights; quantize_int8 took {quant_s:.1f} s): state_dict "
             f"{m['size_fp32_bytes']:,} -> {m['size_int8_bytes']:,} bytes ({m['size_ratio']:.3f}); "
             f"p50 ms fp32 / int8 at batch 1 | 32: {_lat(m)}")]


def main() -> None:
    """Parse arguments, measure, print markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-run-time", type=float, default=2.0)
    parser.add_argument("--resnet18", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [f"threads {args.threads}, load average before: {os.getloadavg()[0]:.2f}, torch {torch.__version__}", ""]
    lines += digits_rows(args.threads, args.min_run_time)
    if args.resnet18:
        lines += ["", *resnet18_rows(args.threads, args.min_run_time)]
    lines.append(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
