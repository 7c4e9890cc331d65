"""The command line: a click group, one small module per verb.

The CLI only parses arguments, calls the public API and renders; every error becomes
one line on stderr and exit code 2 (see ``_exit.py``).
"""

from __future__ import annotations

import logging
import os

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="convdoctor")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
def main(verbose: int) -> None:
    """convdoctor: find what is wrong with a PyTorch CNN before production does."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if os.environ.get("CONVDOCTOR_DEBUG"):
        logging.getLogger("convdoctor").setLevel(logging.DEBUG)


def _register() -> None:
    """Each verb module defines one click command; add them to the group."""
    from . import _audit, _bench, _check, _demo, _inspect, _layers, _rf

    for mod in (_inspect, _rf, _audit, _bench, _check, _layers, _demo):
        main.add_command(mod.command)


_register()
