"""Shared by the benchmarks: machine facts, waiting for a quiet machine, and docs/performance.md.

Each script owns one section of docs/performance.md, between ``<!-- NAME -->`` and
``<!-- /NAME -->``; re-running a script replaces its section and leaves the other one.
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

import torch

FRAGMENT = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
HEADER = "# Performance\n"


def machine_line(threads: int) -> str:
    """One line on where the figures come from, with the load average as a contention hint."""
    from convdoctor.bench.probe import device_name

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{device_name('cpu')}, {os.cpu_count()} logical cores, {threads} intra-op threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average (1/5/15 min) {load}"
    )


def wait_quiet(max_wait_s: float = 120.0, busy_percent: float = 25.0) -> float:
    """Wait (at most ``max_wait_s``) until the whole machine's CPU use over one second is below ``busy_percent``.

    Called between measurements, while this process is idle: on a shared machine it moves
    each measurement into a quiet window instead of averaging other people's work into it.
    A burst that starts mid-measurement still shows (BENCH_NOISY, wide IQR).

    Returns:
        Seconds waited.
    """
    import psutil

    start = time.monotonic()
    while time.monotonic() - start < max_wait_s:
        if psutil.cpu_percent(interval=1.0) < busy_percent:
            break
    return time.monotonic() - start


def update_section(name: str, markdown: str, path: Path = FRAGMENT) -> None:
    """Replace (or append) the section ``name`` of docs/performance.md."""
    body = f"<!-- {name} -->\n{markdown.rstrip()}\n<!-- /{name} -->\n"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n?", re.S)
    text = pattern.sub(lambda _: body, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
