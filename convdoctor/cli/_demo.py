"""``convdoctor demo``: the whole story on the embedded digits, no arguments, no downloads."""

from __future__ import annotations

from pathlib import Path

import click

from ._exit import guarded


@click.command("demo")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("convdoctor-demo.html"),
    show_default=True,
    help="Where to write the HTML report.",
)
@click.option("--width", type=int, default=120, show_default=True, help="Terminal width for tables.")
@guarded
def command(html_file: Path, width: int) -> None:
    """Train, monitor, audit, quantize and bench a small CNN on scikit-learn's digits."""
    from ..demo.story import run_story
    from ..report import Format, render
    from ..report.demo import render_demo

    click.echo("convdoctor demo: the whole story on scikit-learn's 8x8 digits (no downloads)\n")
    story = run_story(lambda stage: click.echo(f"  ... {stage}", err=True))
    click.echo(render_demo(story, width=width), nl=False)
    html_file.write_text(render(story.report, Format.HTML), encoding="utf-8")
    click.echo(f"\nHTML report (every stage, with plots) written to {html_file.resolve()}")
