"""Writing a report file (``--html``, ``--plot``, the demo's page) without clobbering anything.

A path given by mistake (``--html net.py``, a link to ``~/.bashrc``) must not cost the user
a file. So a report is written only where nothing is, or over a previous report of ours
(an HTML page whose ``<meta name="generator">`` or title says convdoctor, a PNG whose
``Software`` text does); anything else, and any symlink, is refused in one line unless
``force``. Even then the link itself is replaced, never followed: the bytes go to a
temporary file in the same folder, moved over the name with ``os.replace``. A missing parent
folder is created (the report is what the user asked for; a typo in it shows in the path
we print).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

from ..errors import UsageError
from .html import HTML_GENERATOR
from .plot import PNG_SOFTWARE

__all__ = ["check_target", "is_our_report", "write_report"]

#: Bytes read to recognise a report: the head of a page, the text chunks before a PNG's pixels.
_HEAD = 4096
_PNG = b"\x89PNG\r\n\x1a\n"
_OURS_HTML = re.compile(
    rb'<meta name="generator" content="' + re.escape(HTML_GENERATOR.split(" ")[0].encode()) + rb" |<title>convdoctor "
)
_OURS_PNG = b"tEXtSoftware\x00" + PNG_SOFTWARE.split(" ")[0].encode()


def is_our_report(path: Path) -> bool:
    """Whether the regular file at ``path`` is an HTML page or PNG chart convdoctor wrote."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
    except OSError:
        return False
    if head.startswith(_PNG):
        return _OURS_PNG in head
    return head.lstrip().lower().startswith(b"<!doctype html") and bool(_OURS_HTML.search(head))


def check_target(path: Path, *, force: bool = False) -> None:
    """Refuse, before any work is done, a report path that writing would clobber.

    Raises:
        UsageError: a symlink or a file that is not a report of ours (without ``force``),
            or something that is not a file at all.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        if not force:
            raise UsageError(f"refusing to write {path}: it is a symlink (pass --force to replace the link itself)")
        return
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"cannot write a report to {path}: it is not a regular file")
    if not force and not is_our_report(path):
        raise UsageError(
            f"refusing to overwrite {path}: it is not a convdoctor report (pass --force, or pick another name)"
        )


def write_report(path: Path, data: str | bytes, *, force: bool = False) -> Path:
    """Write a report file under :func:`check_target`'s rules, creating its folder; returns the path.

    Raises:
        UsageError: as :func:`check_target`, or the folder cannot be written.
    """
    check_target(path, force=force)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    # a fresh name beside the target, created exclusively (never an existing file or link), with
    # the mode a plain open() gives (0666 less the umask): then moved over the name
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)  # replaces a link itself, never what it points to
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
