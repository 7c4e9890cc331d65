"""inspect vs torchinfo, fvcore, ptflops and thop on resnet50 at 224x224 and 2048x2048.

Each (tool, size) runs in its own fresh Python process, so peak RSS is that tool's alone:
the child builds resnet50 (random weights; convdoctor builds it on the meta device, the
peers need real weights), times the counting call with ``time.perf_counter`` (best of 3
after one warm-up, or one call when a call takes over 3 s) and reports its MACs and
``ru_maxrss``. A second table times the whole ``convdoctor inspect`` CLI process.

Run by hand: ``.venv/bin/python benchmarks/inspect_speed.py`` (needs ``pip install -e '.[bench]'``).
Prints a markdown table and writes it into its section of docs/performance.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

SIZES = (224, 2048)
TOOLS = ("convdoctor", "torchinfo", "fvcore", "ptflops", "thop")

CHILD = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
import torch, torchvision
torch.set_num_threads(2)
tool, size = sys.argv[1], int(sys.argv[2])
shape = (1, 3, size, size)

def build(meta=False):
    if meta:
        with torch.device("meta"):
            return torchvision.models.resnet50().eval()
    return torchvision.models.resnet50().eval()

if tool == "convdoctor":
    from convdoctor.inspect import inspect as inspect_model
    model = build(meta=True)
    call = lambda: inspect_model(model, shape).totals["macs"]
elif tool == "torchinfo":
    import torchinfo
    model = build()
    call = lambda: torchinfo.summary(model, input_size=shape, verbose=0).total_mult_adds
elif tool == "fvcore":
    from fvcore.nn import FlopCountAnalysis
    model = build()
    x = torch.randn(shape)
    def call():
        a = FlopCountAnalysis(model, x)
        a.unsupported_ops_warnings(False); a.uncalled_modules_warnings(False)
        return a.total()
elif tool == "ptflops":
    from ptflops import get_model_complexity_info
    model = build()
    call = lambda: get_model_complexity_info(model, shape[1:], as_strings=False, print_per_layer_stat=False, verbose=False)[0]
elif tool == "thop":
    import thop, copy
    model = build()
    x = torch.randn(shape)
    call = lambda: thop.profile(copy.deepcopy(model), inputs=(x,), verbose=False)[0]
t = time.perf_counter(); macs = call(); first = time.perf_counter() - t
times = [first]
if first < 3:
    for _ in range(3):
        t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
    best = min(times[1:])
else:
    best = first
print(json.dumps({"tool": tool, "size": size, "seconds": best, "first": first, "macs": int(macs),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(tool: str, size: int) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", CHILD, tool, str(size)], capture_output=True, text=True, timeout=900)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]
    return {"tool": tool, "size": size, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}


WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], capture_output=True, check=True)
print(json.dumps({"wall_s": time.perf_counter() - t,
                  "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def cli_process(size: int) -> dict[str, float]:
    """Whole ``convdoctor inspect`` process: wall time and peak RSS, measured by a fresh wrapper
    process whose only child is the CLI (so no earlier child's RSS leaks into the figure)."""
    cmd = [
        sys.executable,
        "-m",
        "convdoctor",
        "inspect",
        "torchvision:resnet50",
        "--input",
        f"1x3x{size}x{size}",
        "--json",
    ]
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    rows = [run_child(tool, size) for size in SIZES for tool in TOOLS]
    lines = ["| tool | input | in-call time (s) | peak RSS (MB) | MACs reported |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['tool']} | {r['size']}x{r['size']} | failed: {r['error']} | | |")
            continue
        lines.append(
            f"| {r['tool']} | {r['size']}x{r['size']} | {r['seconds']:.3f} | {r['rss_mb']:.0f} | {int(r['macs']):,} |"
        )
    lines += ["", "| `convdoctor inspect torchvision:resnet50` process | wall (s) | peak RSS (MB) |", "|---|---|---|"]
    for size in SIZES:
        c = cli_process(size)
        lines.append(f"| --input 1x3x{size}x{size} | {c['wall_s']:.2f} | {c['rss_mb']:.0f} |")
    table = "\n".join(lines)
    print(table)
    from _bench_fragment import machine_line, update_section

    update_section(
        "inspect-speed",
        f"### inspect vs the peers: resnet50 (benchmarks/inspect_speed.py)\n\nMachine: {machine_line(2)}.\n\n" + table,
    )


if __name__ == "__main__":
    main()
