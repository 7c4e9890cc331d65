"""capture_native holds what native code writes to descriptors 1 and 2, and gives it back."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from convdoctor._native import capture_native


def test_descriptor_writes_are_held_and_returned(capfd: pytest.CaptureFixture[str]) -> None:
    with capture_native("test") as out:
        os.write(1, b"USDT: native stdout\n")
        os.write(2, b"ERROR: native stderr\n")
        print("python print")  # noqa: T201
    assert capfd.readouterr() == ("", "")
    assert "USDT: native stdout" in out.text and "ERROR: native stderr" in out.text and "python print" in out.text
    assert out.captured and out.summary() == "ERROR: native stderr"


def test_descriptors_are_restored_after_an_exception(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), capture_native("test") as out:
        os.write(2, b"before the error\n")
        raise RuntimeError("boom")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    assert out.text == "before the error\n"


def test_nested_capture_leaves_everything_to_the_outer_one() -> None:
    with capture_native("outer") as outer:
        with capture_native("inner") as inner:
            os.write(2, b"x\n")
    assert inner.text == "" and outer.text == "x\n"


def test_held_text_is_logged_for_the_clis_verbose_flag(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="convdoctor.native"), capture_native("kineto"):
        os.write(2, b"USDT: profiler_start\n")
    assert "kineto printed 1 line(s)" in caplog.text and "USDT: profiler_start" in caplog.text


def test_a_real_native_writer_is_held_in_a_fresh_process() -> None:
    # libc's write(2), as C++ code does it, from a child whose descriptors are real pipes
    code = (
        "import ctypes\nfrom convdoctor._native import capture_native\n"
        "with capture_native('c') as out:\n    ctypes.CDLL(None).write(2, b'native line\\n', 12)\n"
        "print('held:', out.text.strip())"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stderr == "" and run.stdout.strip() == "held: native line"
