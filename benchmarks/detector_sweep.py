"""Every torchvision detector through inspect, rf (one field per FPN level) and bench, by hand.

CI covers seven detectors in ``tests/capture/test_detectors.py`` and ``tests/rf/test_pyramid.py``;
building and capturing all twelve (two-stage heads on 1000 proposals) costs minutes on two
cores, so the whole family is checked here and the table kept in docs/inspect.md.

For each builder in ``torchvision.models.detection`` (random weights, ``weights_backbone=None``):
- inspect from Python with ``example_input=([img],)``: params against ``sum(p.numel())`` and
  MACs against ``FlopCounterMode`` on a real forward of the same image list (both exact);
- rf from Python: the pyramid levels (size and jump of each, first row of each level);
- bench from Python on the same image list (p50, one short run: a smoke check, not a figure);
- rf from the CLI on the MODEL spec with ``--input 3xHxW --object-size 64 --json``.

Run by hand: ``.venv/bin/python benchmarks/detector_sweep.py`` (about 15 minutes here).
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import torch
import torchvision.models.detection as detection
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

import convdoctor
from convdoctor.cli import main

BUILDERS = sorted(
    n
    for n, f in vars(detection).items()
    if callable(f) and not n.startswith("_") and n.endswith(("_fpn", "_fpn_v2", "_vgg16", "_large"))
)


def _setup(name: str) -> tuple[int, dict[str, Any]]:
    """Input size and builder keywords: small images, and few detections for the mask/keypoint heads."""
    size = 320 if "320" in name else 300 if "ssd300" in name else 224
    kw: dict[str, Any] = {} if "ssd" in name or "320" in name else {"min_size": size, "max_size": size}
    if "keypoint" in name or "mask" in name:
        kw["box_detections_per_img"] = 10
    return size, kw


def sweep_one(name: str) -> dict[str, Any]:
    """One detector through the four paths; returns the row of the table."""
    start = time.perf_counter()
    size, kw = _setup(name)
    torch.manual_seed(0)
    model = getattr(detection, name)(weights=None, weights_backbone=None, **kw).eval()
    img = torch.rand(3, size, size, generator=torch.Generator().manual_seed(2))
    report = convdoctor.inspect(model, example_input=([img],))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        copy.deepcopy(model)([img])
    rf = convdoctor.receptive_field(model, example_input=([img],), object_size=64)
    bench = convdoctor.bench(model, example_input=([img],)).to_dict()["results"][0]
    query = "&".join(f"{k}={v}" for k, v in kw.items())
    spec = f"torchvision:{name}" + (f"?{query}" if query else "")
    cli = CliRunner().invoke(main, ["rf", spec, "--input", f"3x{size}x{size}", "--object-size", "64", "--json"])
    return {
        "model": name,
        "size": size,
        "params_exact": report.totals["params"] == sum(p.numel() for p in model.parameters()),
        "macs_exact": report.totals["macs"] == int(counter.get_total_flops()) // 2,
        "gmacs": report.totals["macs"] / 1e9,
        "levels": [(lv.size[0], lv.jump[0]) for lv in rf.levels],
        "cli_levels": len(json.loads(cli.stdout)["levels"]) if cli.exit_code == 0 else f"exit {cli.exit_code}",
        "bench_p50_ms": bench["p50_ms"],
        "seconds": time.perf_counter() - start,
    }


def main_() -> None:
    """Print the markdown table, one detector a row."""
    print("| detector | input | params exact | MACs exact | GMACs | levels (field/stride) | CLI levels |")
    print("|---|---|---|---|---|---|---|")
    for name in BUILDERS:
        r = sweep_one(name)
        levels = ", ".join(f"{s}/{j}" for s, j in r["levels"])
        print(
            f"| {r['model']} | {r['size']} | {r['params_exact']} | {r['macs_exact']} | {r['gmacs']:.2f} "
            f"| {levels} | {r['cli_levels']} |",
            flush=True,
        )


if __name__ == "__main__":
    main_()
