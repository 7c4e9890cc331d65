"""Time the analytic receptive field of resnet152 at 224x224 (issue target: under 1 s).

Runs in a fresh Python process: builds resnet152 on the meta device, then times
``receptive_field(model, (1, 3, 224, 224))`` end to end (meta capture + RF pass + findings)
and the RF pass alone (``analyze`` on a captured graph), each as the first call and the best
of 5 after it, with ``time.perf_counter`` and one intra-op thread. Also times the gradient
method on the same layer at an input that holds the field, for scale.

Run by hand: ``.venv/bin/python benchmarks/rf_speed.py``. Prints a markdown table and writes
it into its section of docs/performance.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from _bench_fragment import update_section  # noqa: E402  (benchmarks/ is the script dir)

CHILD = r"""
import json, time, warnings
warnings.filterwarnings("ignore")
import torch, torchvision
torch.set_num_threads(1)
from convdoctor.analysis.rf.core import analyze
from convdoctor.analysis.rf.gradient import gradient_field
from convdoctor.capture.trace import capture
from convdoctor.rf import receptive_field
with torch.device("meta"):
    model = torchvision.models.resnet152()
shape = (1, 3, 224, 224)

def timed(fn, n=5):
    t = time.perf_counter(); out = fn(); first = time.perf_counter() - t
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return out, first, min(times)

report, e2e_first, e2e_best = timed(lambda: receptive_field(model, shape))
graph = capture(model, (torch.empty(shape, device="meta"),))
_, pass_first, pass_best = timed(lambda: analyze(graph))
layer = report.layer("layer4")
t = time.perf_counter()
g = gradient_field(model, (1, 3, 1600, 32), "layer4")
grad = time.perf_counter() - t
print(json.dumps({"size": layer.size[0], "jump": layer.jump[0], "start": layer.start[0], "ops": len(graph.nodes),
                  "e2e_first": e2e_first, "e2e_best": e2e_best, "pass_first": pass_first, "pass_best": pass_best,
                  "grad": grad, "grad_size": g.size[0]}))
"""


def main() -> None:
    """Run the child, print and save the table."""
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=900, check=False)
    line = next((x for x in proc.stdout.splitlines()[::-1] if x.startswith("{")), None)
    if line is None:
        raise SystemExit(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "child failed")
    r = json.loads(line)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    text = (
        "### Receptive field: resnet152 (benchmarks/rf_speed.py)\n\n"
        f"resnet152 at 1x3x224x224 ({r['ops']} aten ops), one intra-op thread, {os.cpu_count()} logical cores, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load}:\n\n"
        "| what | first call (s) | best of 5 (s) |\n|---|---|---|\n"
        f"| `receptive_field(model, (1, 3, 224, 224))` (meta capture + RF pass + findings) | "
        f"{r['e2e_first']:.3f} | {r['e2e_best']:.3f} |\n"
        f"| RF pass alone (`analyze(graph)`) | {r['pass_first']:.3f} | {r['pass_best']:.3f} |\n"
        f'| `method="gradient"` on `layer4` at 1x3x1600x32 (float64 forward + 2 backwards) | {r["grad"]:.1f} | - |\n\n'
        f"layer4: size {r['size']}, jump {r['jump']}, start {r['start']}; gradient size {r['grad_size']}.\n"
    )
    print(text)
    update_section("rf-speed", text)


if __name__ == "__main__":
    main()
