"""``convdoctor cache info|clear``: the folder of compiled int8 packages and measurements."""

from __future__ import annotations

import json

import click

from .._cache import cache_info, clear_cache
from ._exit import guarded


@click.group("cache")
def command() -> None:
    """Show (info) or empty (clear) the folder of compiled int8 packages and measurements."""


@command.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@guarded
def info(as_json: bool) -> None:
    """Where the cache is, whether it is trusted, what it holds and its limits."""
    found = cache_info()
    doc = {
        "root": None if found.root is None else str(found.root),
        "trusted": found.root is not None and found.problem is None,
        "problem": found.problem,
        "stores": {k: {"files": n, "bytes": b} for k, (n, b) in sorted(found.stores.items())},
        "other_files": list(found.other_files),
        "max_bytes": found.max_bytes,
        "max_age_days": found.max_age_days,
    }
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    if found.root is None:
        click.echo("cache: off (CONVDOCTOR_CACHE_DIR turns it off)")
        return
    click.echo(f"cache: {found.root}")
    if found.problem:
        click.echo(f"  not trusted: {found.problem}; each run uses a private folder instead")
    for kind, (files, size) in sorted(found.stores.items()):
        click.echo(f"  {kind}/: {files} file(s), {size / 2**20:.1f} MiB")
    for name in found.other_files:
        click.echo(f"  {name}")
    click.echo(f"  limits: {found.max_bytes / 2**30:.1f} GiB, {found.max_age_days:g} days unused")


@command.command("clear")
@guarded
def clear() -> None:
    """Delete every cached package, its digest record and the cached measurements."""
    files, size = clear_cache()
    click.echo(f"removed {files} file(s), {size / 2**20:.1f} MiB")
