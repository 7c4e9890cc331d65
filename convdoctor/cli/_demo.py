"""``convdoctor demo``: the whole story on the embedded digits, no arguments, no downloads."""

from __future__ import annotations

from pathlib import Path

import click

from ._exit import guarded
from ._options import force_option, report_file_option


@click.command("demo")
@report_file_option(
    "--html", "html_file", help_text="Where to write the HTML report.", default=Path("convdoctor-demo.html")
)
@force_option
@click.option("--width", type=int, default=120, show_default=True, help="Terminal width for tables.")
@guarded
def command(html_file: Path, force: bool, width: int) -> None:
    """Train, monitor, audit, quantize and bench a small CNN on scikit-learn's digits."""
    from ..demo.story import run_story
    from ..report import Format, render
    from ..report.demo import render_demo
    from ..report.files import write_report

    click.echo("convdoctor demo: the whole story on scikit-learn's 8x8 digits (no downloads)\n")
    story = run_story(lambda stage: click.echo(f"  ... {stage}", err=True))
    click.echo(render_demo(story, width=width), nl=False)
    write_report(html_file, render(story.report, Format.HTML), force=force)
    click.echo(f"\nHTML report (every stage, with plots) written to {html_file.resolve()}")
