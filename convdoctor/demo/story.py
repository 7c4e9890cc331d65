"""The whole demo story on the digits, as data: design, training, hand-off, INT8, serving.

``run_story()`` returns every report; the CLI prints the summary and writes the HTML page.
Each stage is real: a model trained for seconds, monitored runs, an audit of the
BatchNorm-in-training-mode incident, static INT8 measured on disk and in time, a bench.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..results.base import ReportBase
from ..results.check import Report
from .digits import DIGITS_SHAPE, Split, load_digits_split, train_digits

#: batch sizes of the incident table: alone, a small batch, a large one.
INCIDENT_BATCHES = (1, 8, 64)


@dataclass
class Story:
    """Everything the demo measured.

    Attributes:
        test_accuracy: the trained model's accuracy in eval mode.
        train_seconds: wall time of its training.
        report: the combined report (one part per stage) for the HTML page.
        incident: accuracy by batch size with BatchNorm left in training mode.
        monitors: run name -> (summary line, finding codes).
        int8: size, accuracy and latency of the INT8 model (empty with the reason when skipped).
        seconds: stage -> wall time.
    """

    test_accuracy: float
    train_seconds: float
    report: Report
    incident: dict[str, Any]
    monitors: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    int8: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _timed(seconds: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    try:
        return fn()
    finally:
        seconds[name] = time.perf_counter() - start


def _int8(model: torch.nn.Module, split: Split) -> tuple[dict[str, Any], ReportBase | None]:
    """Static INT8 of the trained model: agreement, accuracy, bytes on disk, latency."""
    try:
        from ..audit._int8 import compare_int8
        from ..fix.quantize import quantize_int8
    except ImportError as exc:
        return {"skipped": f"{exc} (pip install 'convdoctor[quant]')"}, None
    result = quantize_int8(model, split.x_train[:256])
    metrics = compare_int8(model, result.model, split.x_test, split.y_test, batch_sizes=(1, 64), min_run_time=0.3)
    return metrics, None


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
    from ..api import inspect
    from ..audit import audit, incident_table
    from ..bench import bench
    from ..monitor.demo import train_digits as monitored_run
    from ..rf_api import receptive_field

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
        mon = _timed(seconds, f"monitor {name}", lambda fault=fault: monitored_run(fault=fault))
        rep = mon.report(figures=True)
        parts[f"training: {name}"] = rep
        monitors[name] = (rep.summary, sorted({f.code for f in rep.findings}))
    say("hand-off: the BatchNorm incident, then the audit")
    broken = copy.deepcopy(model).train()  # BatchNorm left in training mode at inference
    incident = _timed(seconds, "incident", lambda: incident_table(broken, split.x_test, split.y_test,
                                                                  batch_sizes=INCIDENT_BATCHES))
    parts["audit"] = _timed(seconds, "audit", lambda: audit(broken, split.x_test[:64], targets=split.y_test[:64],
                                                            batch_sizes=(1, 8), checks="modes,batch,determinism,bn_stats"))
    say("INT8: static quantization, measured")
    int8, _ = _timed(seconds, "int8", lambda: _int8(model, split))
    say("serving: latency")
    parts["bench"] = _timed(seconds, "bench", lambda: bench(model, shape, batch_sizes=(1, 64), threads=DEMO_THREADS,
                                                           min_run_time=0.5, max_run_time=3.0, cold_start=False,
                                                           probe=False))
    findings = tuple(f for p in parts.values() for f in p.findings)
    from ..results.base import sort_findings

    report = Report(model="demo: DigitsCNN on scikit-learn digits", findings=sort_findings(list(findings)),
                    parts=parts, seconds=dict(seconds))
    return Story(trained.test_accuracy, seconds["train"], report, incident, monitors, int8, seconds)
