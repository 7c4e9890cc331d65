"""The whole demo story on the digits, as data: design, training, hand-off, INT8, serving.

``run_story()`` returns every report; the CLI prints the summary and writes the HTML page.
Each stage is real: a model trained for seconds, monitored runs, an audit of the
BatchNorm-in-training-mode incident, static INT8 measured on disk and in time, a bench.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import time
from collections.abc import Callable
from typing import Any

import torch

from .._native import capture_native
from ..results.base import ReportBase
from ..results.check import Report
from ..results.demo import Story
from .digits import DIGITS_SHAPE, Split, load_digits_split, train_digits

__all__ = ["Story", "run_story"]

#: Batch sizes of the incident table, on shuffled test digits: one request at a time, a small
#: batch, and a large shuffled batch (what an offline evaluation loop sends).
INCIDENT_BATCHES = (1, 8, 64)
#: Batches that hold one class each: a queue fed by one camera, one customer, one time of day
#: sends neighbouring requests that look alike, and train-mode BN normalises the class away.
ONE_CLASS_BATCH = 32

#: The INT8 stage quantizes two CNNs: the demo's own (width 16, 14k parameters, 0.45M MACs
#: per digit) and one 4x wider (224k parameters, 7M MACs) trained for ``INT8_WIDE_EPOCHS``.
#: int8 kernels save arithmetic but add per-layer work (quantizing activations, dequantizing
#: outputs) that does not shrink with the model: the pair shows where each side wins.
INT8_WIDE_WIDTH = 64
INT8_WIDE_EPOCHS = 2
INT8_BATCHES = (1, 64)
#: Calibration samples (training digits) and seconds of timing per model and batch size.
INT8_CALIBRATION = 256
INT8_MIN_RUN_TIME = 0.3


def _timed(seconds: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    """Run one stage, timed; what third-party code prints meanwhile is held (``-v`` shows it)."""
    start = time.perf_counter()
    try:
        with capture_native(f"demo stage {name}"):
            return fn()
    finally:
        seconds[name] = time.perf_counter() - start


def _int8_one(model: torch.nn.Module, split: Split) -> dict[str, Any]:
    """Static INT8 of one trained model, measured the way the audit's ``quantization`` check does."""
    from ..inspect import inspect
    from ..quant import compare_int8, quantize_int8

    start = time.perf_counter()
    # the path the audit's ``quantization`` check takes: quantize_int8's default, compiled by
    # AOTInductor on the first call at each batch size, or loaded from the package cache
    # (reported apart from the warm timings)
    result = quantize_int8(model, split.x_train[:INT8_CALIBRATION])
    quantize_s = time.perf_counter() - start
    metrics = compare_int8(
        model, result.model, split.x_test, split.y_test, batch_sizes=INT8_BATCHES, min_run_time=INT8_MIN_RUN_TIME
    )
    totals = inspect(model, (1, *DIGITS_SHAPE)).totals
    return metrics | {
        "params": int(totals["params"]),
        "macs": int(totals["macs"]),
        "quantize_seconds": quantize_s,
        "lowered": result.lowered,
        "compiled": result.compiled,
        "int8_path": result.path_note if result.int8_path else "",
        "packages": [
            {"batch": r.shape[0][0], "seconds": r.seconds, "cached": r.cached}
            for r in getattr(result.model, "records", ())
        ],
    }


def _int8(model: torch.nn.Module, split: Split) -> dict[str, Any]:
    """The demo's CNN and a 4x wider one, each trained, quantized to INT8 and measured."""
    if importlib.util.find_spec("torchao") is None:
        return {"skipped": "static INT8 needs torchao: pip install 'convdoctor[quant]'"}
    out = {"DigitsCNN (width 16)": _int8_one(model, split)}
    wide = train_digits(split, epochs=INT8_WIDE_EPOCHS, width=INT8_WIDE_WIDTH)
    out[f"DigitsCNN (width {INT8_WIDE_WIDTH})"] = _int8_one(wide.model, split)
    return out


def _one_class_row(broken: torch.nn.Module, split: Split) -> dict[str, Any]:
    """Accuracy when every batch holds one class only: BatchNorm as left (training) vs eval mode.

    Runs on copies; batches of ``ONE_CLASS_BATCH`` are cut within each class of the test set.
    """
    from ..audit.incident import accuracy

    current, evaluated = copy.deepcopy(broken), copy.deepcopy(broken).eval()
    correct = {"accuracy": 0.0, "eval_accuracy": 0.0}
    for label in torch.unique(split.y_test):
        x, y = split.x_test[split.y_test == label], split.y_test[split.y_test == label]
        correct["eval_accuracy"] += accuracy(evaluated, x, y, ONE_CLASS_BATCH) * len(y)
        correct["accuracy"] += accuracy(current, x, y, ONE_CLASS_BATCH) * len(y)
    n = len(split.y_test)
    return {"batches": "one class", "batch_size": ONE_CLASS_BATCH, **{k: v / n for k, v in correct.items()}}


def _incident(model: torch.nn.Module, split: Split) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model served with BatchNorm left in training mode, on the batches production sends."""
    from ..audit import incident_table

    broken = copy.deepcopy(model).train()  # BatchNorm left in training mode at inference
    table = incident_table(broken, split.x_test, split.y_test, batch_sizes=INCIDENT_BATCHES)
    rows = [{"batches": "one request" if r["batch_size"] == 1 else "shuffled", **r} for r in table["rows"]]
    table["rows"] = [*rows, _one_class_row(broken, split)]
    return broken, table


#: the digits models are tiny: one intra-op thread is fastest, and it keeps a busy machine
#: from stalling the demo in spin-waits between oversubscribed threads.
DEMO_THREADS = 1


def run_story(progress: Callable[[str], None] | None = None) -> Story:
    """Run the five stages on the digits (with ``DEMO_THREADS`` threads) and return what they found.

    Args:
        progress: called with each stage's name before it runs.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(DEMO_THREADS)
    try:
        return _story(progress)
    finally:
        torch.set_num_threads(threads)


def _story(progress: Callable[[str], None] | None) -> Story:
    from ..audit import audit
    from ..bench import bench
    from ..inspect import inspect
    from ..rf import receptive_field
    from .training import train_digits as monitored_run

    say = progress or (lambda _: None)
    seconds: dict[str, float] = {}
    split = load_digits_split()
    say("training a BatchNorm CNN on the digits")
    trained = _timed(seconds, "train", lambda: train_digits(split))
    model = trained.model  # eval mode
    shape = (1, *DIGITS_SHAPE)
    parts: dict[str, ReportBase] = {}
    say("design: inspect and receptive field")
    parts["inspect"] = _timed(seconds, "inspect", lambda: inspect(model, shape))
    parts["rf"] = _timed(seconds, "rf", lambda: receptive_field(model, shape, object_size=6))
    say("training: a healthy run and a sick one under the Monitor")
    monitors: dict[str, tuple[str, list[str]]] = {}
    for name, fault in (("healthy (lr 0.05)", None), ("sick (lr 50x too high)", "high_lr")):
        mon = _timed(seconds, f"monitor {name}", functools.partial(monitored_run, fault=fault))
        rep = mon.report(figures=True)
        parts[f"training: {name}"] = rep
        monitors[name] = (rep.summary, sorted({f.code for f in rep.findings}))
    say("hand-off: the BatchNorm incident, then the audit")
    broken, incident = _timed(seconds, "incident", lambda: _incident(model, split))
    parts["audit"] = _timed(
        seconds,
        "audit",
        lambda: audit(
            broken,
            split.x_test[:64],
            targets=split.y_test[:64],
            batch_sizes=(1, 8),
            checks="modes,batch,determinism,bn_stats",
        ),
    )
    say("INT8: static quantization of the CNN and of a 4x wider one, measured")
    int8 = _timed(seconds, "int8", lambda: _int8(model, split))
    say("serving: latency")
    parts["bench"] = _timed(
        seconds,
        "bench",
        lambda: bench(
            model,
            shape,
            batch_sizes=(1, 64),
            threads=DEMO_THREADS,
            min_run_time=0.5,
            max_run_time=3.0,
            cold_start=False,
            probe=False,
        ),
    )
    findings = tuple(f for p in parts.values() for f in p.findings)
    from ..results.base import sort_findings

    report = Report(
        model="demo: DigitsCNN on scikit-learn digits",
        findings=sort_findings(list(findings)),
        parts=parts,
        seconds=dict(seconds),
    )
    return Story(trained.test_accuracy, seconds["train"], report, incident, monitors, int8, seconds)
