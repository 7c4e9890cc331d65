"""The command line: a click group, one small module per verb.

The CLI only parses arguments, calls the public API and renders; every error becomes
one line on stderr and exit code 2 (see ``_exit.py``).

A verb's module (and with it torch) is imported only when that verb runs or prints its own
help: ``convdoctor --help`` and ``--version`` import click and nothing heavy. The verbs, the
group that imports them on demand and its one-line parse errors live in ``_group.py``; each
verb's options and rendering in ``_<verb>.py``; shared option types in ``_options.py``.
"""

from __future__ import annotations

import logging
import os

import click

from .. import __version__
from ._group import VERBS, LazyGroup, OneLineError

__all__ = ["VERBS", "LazyGroup", "OneLineError", "main"]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="convdoctor")
@click.option(
    "-v", "--verbose", count=True, help="More log output, including what third-party code printed (repeat for debug)."
)
def main(verbose: int) -> None:
    """convdoctor: find what is wrong with a PyTorch CNN before production does."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose:  # basicConfig leaves an already configured root alone: the convdoctor loggers still follow -v
        logging.getLogger("convdoctor").setLevel(level)
    if os.environ.get("CONVDOCTOR_DEBUG"):
        logging.getLogger("convdoctor").setLevel(logging.DEBUG)
