"""The terminal summary of ``convdoctor demo``: one section per stage of the CNN's life.

Every sentence that draws a conclusion (which mode is right, where INT8 pays) is built from
the numbers measured in the run, so the text cannot disagree with its tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.table import Table
from rich.text import Text

from ..findings import Severity
from ..results.demo import Story
from .terminal import RENDERERS, _load_renderers, findings_table, to_text

#: Train-mode rows within this many points of eval mode "come close"; the others are called wrong.
_CLOSE_POINTS = 3.0


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def incident_table(story: Story) -> Table:
    """Accuracy per kind of batch: BatchNorm left in training mode vs eval mode."""
    inc = story.incident
    table = Table(title=f"Accuracy on {inc['samples']} test digits")
    for col, justify in (
        ("batches", "left"),
        ("batch size", "right"),
        ("train-mode BN", "right"),
        ("eval mode", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in inc["rows"]:
        acc = row.get("accuracy")
        table.add_row(
            row["batches"], str(row["batch_size"]), "fails" if acc is None else _pct(acc), _pct(row["eval_accuracy"])
        )
    return table


def incident_verdict(story: Story) -> str:
    """What the incident table shows, in sentences built from its rows."""
    rows = story.incident["rows"]
    evals = sorted({_pct(r["eval_accuracy"]) for r in rows})
    text = f"Eval mode scores {' / '.join(evals)} on every kind of batch. "
    measured = [r for r in rows if r.get("accuracy") is not None]
    wrong = [r for r in measured if 100 * (r["eval_accuracy"] - r["accuracy"]) > _CLOSE_POINTS]
    if wrong:
        text += (
            "Left in training mode, BatchNorm normalises each batch by its own statistics: "
            + ", ".join(
                f"{_describe(r)} score{'s' if r['batch_size'] == 1 else ''} {_pct(r['accuracy'])}" for r in wrong
            )
            + ". "
        )
    close = [r for r in measured if r not in wrong]
    if close and wrong:
        text += (
            f"Only {close[0]['batches']} batches come close ("
            + ", ".join(f"{_pct(r['accuracy'])} at {r['batch_size']}" for r in close)
            + "): that is what an offline test loop sends, so the bug passes the test set and fails in "
            "production."
        )
    return text.rstrip()


def _describe(row: dict[str, Any]) -> str:
    if row["batch_size"] == 1:
        return "a single request"
    if row["batches"] == "one class":
        return f"batches of {row['batch_size']} drawn from one class"
    return f"{row['batches']} batches of {row['batch_size']}"


def monitors_table(story: Story) -> Table:
    """The two monitored training runs side by side."""
    table = Table(title="Two training runs under convdoctor.Monitor", show_lines=True)
    table.add_column("run")
    table.add_column("end of run")
    table.add_column("verdict")
    for name, (summary, codes) in story.monitors.items():
        table.add_row(name, summary, Text(", ".join(codes) or "healthy", style="bold red" if codes else "green"))
    return table


#: int8/fp32 latency ratios this close to 1 are called even: timing noise on a shared CPU is that large.
EVEN = 0.05


def _latency(lat: dict[str, Any]) -> str:
    r = lat["ratio"]
    speed = "about even" if abs(r - 1) <= EVEN else f"{1 / r:.1f}x faster" if r < 1 else f"{r:.1f}x slower"
    return f"{lat['fp32_ms']:.2f} -> {lat['int8_ms']:.2f} ms\n{speed}"


def int8_table(int8: dict[str, Any]) -> Table:
    """Size, accuracy and latency of each quantized model, fp32 -> int8."""
    batches = sorted({b for m in int8.values() for b in m.get("latency", {})}, key=int)
    table = Table(title="Static INT8 (convdoctor.fix.quantize_int8), fp32 -> int8, one thread", show_lines=True)
    table.add_column("model", no_wrap=True)
    for col in ("params\nMACs a digit", "size on disk", "accuracy", *(f"batch {b}" for b in batches), "quantize\ntook"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, m in int8.items():
        lat = m.get("latency", {})
        table.add_row(
            name.replace(" (", "\n("),
            f"{m['params']:,}\n{m['macs'] / 1e6:.2f}M",
            f"{m['size_fp32_bytes'] / 1024:,.0f} -> {m['size_int8_bytes'] / 1024:,.0f} KiB",
            f"{_pct(m['accuracy_fp32'])} -> {_pct(m['accuracy_int8'])}",
            *(_latency(lat[b]) if b in lat else "-" for b in batches),
            f"{m['quantize_seconds']:.1f} s",
        )
    return table


def int8_verdict(int8: dict[str, Any]) -> str:
    """Where INT8 paid and where it did not, from the measured latencies."""
    pays: list[tuple[str, int, dict[str, Any], dict[str, Any]]] = []
    loses: list[tuple[str, int, dict[str, Any], dict[str, Any]]] = []
    even: list[tuple[str, int]] = []
    for name, m in int8.items():
        for b, lat in m.get("latency", {}).items():
            if abs(lat["ratio"] - 1) <= EVEN:
                even.append((name, int(b)))
            else:
                (pays if lat["ratio"] < 1 else loses).append((name, int(b), lat, m))
    text = ""
    if pays:
        name, b, lat, m = max(pays, key=lambda p: p[1] * p[3]["macs"])  # the most arithmetic a call
        text += (
            f"INT8 pays where a call does enough arithmetic: {name} at batch {b} "
            f"({b * m['macs'] / 1e6:,.0f}M MACs a call) runs {1 / lat['ratio']:.1f}x faster "
            f"and is {1 / m['size_ratio']:.1f}x smaller on disk. "
        )
    if loses:
        name, b, lat, m = min(loses, key=lambda p: p[1] * p[3]["macs"])  # the least arithmetic a call
        text += (
            f"It does not pay for tiny work: {name} at batch {b} ({b * m['macs'] / 1e6:.2f}M MACs a call, "
            f"{lat['fp32_ms']:.2f} ms in fp32) runs {lat['ratio']:.1f}x slower in int8, because every int8 layer "
            f"also quantizes its input and dequantizes its output, work that does not shrink with the model, "
            f"and {lat['fp32_ms']:.2f} ms of fp32 arithmetic leaves too little to save to cover it. "
        )
    elif not even:
        text += "INT8 was faster at every batch size measured. "
    if even:
        where = ", ".join(f"{name} at batch {b}" for name, b in even)
        text += f"It breaks even (within {EVEN:.0%}) for {where}: too little arithmetic a call to gain from int8. "
    seconds = " and ".join(f"{m['quantize_seconds']:.1f} s" for m in int8.values())
    text += (
        f"quantize_int8 (export, calibration, lowering) took {seconds}, once per model; the first call "
        "also loads torchao and torch's compiler passes. "
    )
    return text + _compile_text(int8)


def _compile_text(int8: dict[str, Any]) -> str:
    """What serving compiled cost: AOTInductor compilations, packages loaded from the cache."""
    packages = [(n, p) for n, m in int8.items() if m.get("compiled") for p in m.get("packages", ())]
    if not any(m.get("compiled") for m in int8.values()):
        return (
            "The demo serves the lowered graph (compile=False); quantize_int8's default also compiles it "
            "with AOTInductor, which removes the Python glue between the int8 kernels, for a compilation of "
            "seconds per input shape (convdoctor.quant.CompiledInt8)."
        )
    text = ""
    built = [(n, p) for n, p in packages if not p["cached"]]
    loaded = [p for _, p in packages if p["cached"]]
    if built:
        slowest = max(built, key=lambda f: f[1]["seconds"])
        text += (
            f"AOTInductor compiled the int8 models once per batch size, on their first call: "
            f"{sum(p['seconds'] for _, p in built):.1f} s in all here (at most {slowest[1]['seconds']:.1f} s, "
            f"{slowest[0]} at batch {slowest[1]['batch']}), and cached the packages, so a run on the same "
            "models loads them in milliseconds; the timings above are warm. "
        )
    if loaded:
        text += (
            f"{len(loaded)} of {len(packages)} int8 packages came from the cache an earlier run wrote, loaded in "
            f"{1e3 * sum(p['seconds'] for p in loaded):.0f} ms in all instead of compiling. "
        )
    return text + "compile=False skips compiling and serves the lowered graph, slower per call."

    return text.rstrip()


def bench_line(story: Story) -> str:
    """Warm latency and throughput of the trained CNN at each batch size."""
    rows = getattr(story.report.parts.get("bench"), "rows", ())
    return "; ".join(
        f"batch {r.batch_size}: p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
        f"{r.throughput:,.0f} samples/s ({r.threads} thread)"
        for r in rows
    )


def _inspect_body(story: Story) -> Iterable[Any]:
    _load_renderers()
    body: Callable[..., Iterable[Any]] = RENDERERS["inspect"]
    return body(story.report.parts["inspect"], depth=1)


def _int8_section(int8: dict[str, Any]) -> list[Any]:
    if "skipped" in int8:
        return [Text(f"4. INT8: skipped: {int8['skipped']}", style="bold")]
    paths = sorted({str(m.get("int8_path")) for m in int8.values() if m.get("int8_path")})
    where = [Text("int8 kernels on this CPU: " + "; ".join(paths) + ".")] if paths else []
    return [
        Text("4. INT8: the CNN and a 4x wider one, quantized and measured.", style="bold"),
        *where,
        int8_table(int8),
        Text(int8_verdict(int8)),
    ]


def render_demo(story: Story, *, width: int = 120) -> str:
    """The demo's terminal summary, stage by stage."""
    parts = story.report.parts
    audit_errors = [f for f in parts["audit"].findings if f.severity is Severity.ERROR]
    out: list[Any] = [
        Text(
            f"1. Design: DigitsCNN trained in {story.train_seconds:.1f} s, test accuracy {_pct(story.test_accuracy)}.",
            style="bold",
        ),
        *_inspect_body(story),
        Text("2. Training: a healthy run and a sick one (learning rate 50x too high).", style="bold"),
        monitors_table(story),
        Text(
            "3. Hand-off: the same trained CNN served with BatchNorm left in training mode, on the batches "
            "production sends.",
            style="bold",
        ),
        incident_table(story),
        Text(incident_verdict(story)),
        findings_table(audit_errors, title="convdoctor audit catches it"),
        *_int8_section(story.int8),
        Text("5. Serving: " + bench_line(story), style="bold"),
    ]
    return to_text(out, width=width)
