"""Where convdoctor keeps what it measured or built once: one folder, one variable.

``$CONVDOCTOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/convdoctor``, else ``~/.cache/convdoctor``.
Each user of the cache takes a file or a subfolder of it (bench's machine peaks in
``peaks.json``, quant's compiled int8 packages in ``int8/``). ``CONVDOCTOR_CACHE_DIR=off`` (or
``0``, ``none``, ``false``, empty) turns every cache off: each run measures and compiles afresh.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_root"]

#: The environment variable that moves (or, set to ``off``, disables) the cache.
CACHE_ENV = "CONVDOCTOR_CACHE_DIR"

_OFF = frozenset({"", "0", "off", "none", "false"})


def cache_root() -> Path | None:
    """The cache folder (not created here), or None when ``CONVDOCTOR_CACHE_DIR`` turns it off."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "convdoctor"
