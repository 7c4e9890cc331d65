"""Report files (``--html``, ``--plot``, the demo's page) never follow a link or clobber a file
that is not a report of ours; click's own parse errors are one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from convdoctor.cli import main
from convdoctor.report.files import is_our_report

MODEL = ["tests.fixtures.user_models:tiny", "--input", "1x3x8x8"]


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _one_line_exit_2(result: Result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convdoctor: error: ") and needle in lines[0], result.stderr


def test_html_through_a_symlink_is_refused_and_the_target_kept(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "report.html"
    link.symlink_to(target)
    _one_line_exit_2(run("inspect", *MODEL, "--html", str(link)), "symlink")
    assert target.read_text() == "keep me" and link.is_symlink()


def test_force_replaces_the_link_itself_never_its_target(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "report.html"
    link.symlink_to(target)
    assert run("inspect", *MODEL, "--html", str(link), "--force").exit_code == 0
    assert target.read_text() == "keep me"
    assert not link.is_symlink() and is_our_report(link)


def test_the_models_own_source_is_not_overwritten(tmp_path: Path) -> None:
    net = tmp_path / "net.py"
    source = "import torch.nn as nn\ndef build():\n    return nn.Conv2d(3, 4, 3)\n"
    net.write_text(source)
    _one_line_exit_2(
        run("inspect", f"{net}:build", "--input", "1x3x8x8", "--html", str(net)), "not a convdoctor report"
    )
    assert net.read_text() == source


def test_a_previous_report_is_overwritten_and_a_missing_folder_created(tmp_path: Path) -> None:
    page = tmp_path / "new" / "folder" / "report.html"
    assert run("inspect", *MODEL, "--html", str(page)).exit_code == 0
    assert is_our_report(page)
    page.write_text(page.read_text().replace("</main>", "<p>old</p></main>"))
    assert run("inspect", *MODEL, "--html", str(page)).exit_code == 0
    assert "<p>old</p>" not in page.read_text()


def test_the_check_is_made_before_any_work(tmp_path: Path) -> None:
    """A refused --html costs nothing: the verb never runs (a MODEL that cannot load is not reached)."""
    notes = tmp_path / "notes.html"
    notes.write_text("<!DOCTYPE html><html><title>my notes</title></html>")
    _one_line_exit_2(run("check", "no.such.module:factory", "--html", str(notes)), "not a convdoctor report")
    assert "my notes" in notes.read_text()


def test_plot_refuses_a_file_that_is_not_our_png_and_overwrites_its_own(tmp_path: Path) -> None:
    plot = tmp_path / "rf.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\nsomeone else's picture")
    _one_line_exit_2(run("rf", *MODEL, "--plot", str(plot)), "not a convdoctor report")
    assert plot.read_bytes().endswith(b"someone else's picture")
    plot.unlink()
    assert run("rf", *MODEL, "--plot", str(plot)).exit_code == 0 and is_our_report(plot)
    assert run("rf", *MODEL, "--plot", str(plot)).exit_code == 0  # ours: replaced without --force


def test_the_demo_refuses_before_it_trains(tmp_path: Path) -> None:
    page = tmp_path / "convdoctor-demo.html"
    page.write_text("my own page")
    _one_line_exit_2(run("demo", "--html", str(page)), "not a convdoctor report")
    assert page.read_text() == "my own page"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["audit", *MODEL, "--weights", "."], "'--weights'"),
        (["inspect"], "Missing argument 'MODEL'"),
        (["inspect", *MODEL, "--depth", "zero"], "'--depth'"),
        (["bench", *MODEL, "--threads", "many"], "'--threads'"),
        (["inspect", *MODEL, "--no-such-option"], "--no-such-option"),
        (["cache", "explode"], "No such command"),
        (["--no-such-flag", "inspect"], "--no-such-flag"),  # the group's own parse, before any verb
    ],
)
def test_clicks_own_errors_are_one_line_exit_2(args: list[str], needle: str) -> None:
    result = run(*args)
    _one_line_exit_2(result, needle)
    assert "Usage:" not in result.output
