"""Where convdoctor keeps what it measured or built once: one folder, one variable, and its trust.

``$CONVDOCTOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/convdoctor``, else ``~/.cache/convdoctor``.
Each user of the cache takes a file or a subfolder of it (bench's machine peaks in
``peaks.json``, quant's compiled int8 packages in ``int8/``). ``CONVDOCTOR_CACHE_DIR=off`` (or
``0``, ``none``, ``false``, empty) turns every cache off: each run measures and compiles afresh.

**Trust.** A compiled artefact is code: loading one dlopens a shared object. So an artefact
is loaded only through :class:`Store`, which (1) uses a folder only when it is owned by the
current user and not group- or world-writable (else it warns once and uses a private
folder of this process instead); (2) records the SHA-256 of every artefact's bytes when
convdoctor writes it, under ``digests/<kind>/`` beside the artefacts; and (3) before a
load, reads the artefact once, checks those bytes against the record, and hands the caller
a private copy of exactly the bytes it checked. No record, another digest, a symlink or not
a regular file: a one-line warning saying which, and the caller rebuilds (and overwrites).
What this does not stop: someone who can already write as you (they could edit the records,
or convdoctor itself).

**Eviction.** After each write, artefacts unused for ``$CONVDOCTOR_CACHE_MAX_AGE_DAYS`` (30)
days go, then the least recently used until the store is under ``$CONVDOCTOR_CACHE_MAX_BYTES``
(2 GiB). ``convdoctor cache info`` / ``convdoctor cache clear`` show and empty the folder
(:func:`cache_info`, :func:`clear_cache`).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "MAX_AGE_ENV",
    "MAX_BYTES_ENV",
    "CacheInfo",
    "Store",
    "cache_info",
    "cache_root",
    "clear_cache",
    "folder_problem",
    "trusted_root",
]

log = logging.getLogger(__name__)

#: The environment variable that moves (or, set to ``off``, disables) the cache.
CACHE_ENV = "CONVDOCTOR_CACHE_DIR"
#: Size cap of the artefact stores, in bytes.
MAX_BYTES_ENV = "CONVDOCTOR_CACHE_MAX_BYTES"
#: Age after which an unused artefact is evicted, in days.
MAX_AGE_ENV = "CONVDOCTOR_CACHE_MAX_AGE_DAYS"
#: 2 GiB: a few hundred int8 packages of a ResNet-50 (about 30 MB each); a laptop disk does not notice.
DEFAULT_MAX_BYTES = 2 * 2**30
#: A month: a package unused that long was for a model or a torch release long gone.
DEFAULT_MAX_AGE_DAYS = 30.0
#: Subfolder of the records; not itself a store.
DIGESTS = "digests"
#: Plain files other parts of convdoctor keep at the top (bench's machine peaks): what ``clear`` deletes
#: there. Only these: the folder may be one the user pointed at with other things in it.
KNOWN_FILES = ("peaks.json",)
#: A compile killed mid-way leaves a partial file; after this long it is no one's.
STALE_PARTIAL_S = 3600.0

_OFF = frozenset({"", "0", "off", "none", "false"})
_PRIVATE: dict[str, Path] = {}  # refused folder -> this process's private stand-in (one warning each)


def cache_root() -> Path | None:
    """The configured cache folder (not created or checked here), or None when turned off."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "convdoctor"


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot hold code convdoctor will load, or None when it can."""
    try:
        st = folder.stat()
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    getuid = getattr(os, "getuid", None)
    if getuid is not None and st.st_uid != getuid():
        return f"it belongs to uid {st.st_uid}, not to you (uid {getuid()})"
    if st.st_mode & 0o022:
        return f"other users can write to it (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _private_stand_in(refused: Path, why: str) -> Path:
    if str(refused) not in _PRIVATE:
        private = Path(tempfile.mkdtemp(prefix="convdoctor-cache-"))
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        _PRIVATE[str(refused)] = private
        log.warning(
            "not using cache folder %s: %s; using a private folder for this run (chmod go-w it, or set %s)",
            refused,
            why,
            CACHE_ENV,
        )
    return _PRIVATE[str(refused)]


def _checked(folder: Path) -> str | None:
    """Create ``folder`` (mode 0700) when missing, then :func:`folder_problem`."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        return f"cannot create it ({exc.strerror or exc})"
    return folder_problem(folder)


def trusted_root() -> Path | None:
    """The cache folder when it may hold code (see the module docstring); a private folder of this
    process, with one warning, when it may not; None when the cache is off."""
    root = cache_root()
    if root is None:
        return None
    why = _checked(root)
    return root if why is None else _private_stand_in(root, why)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{os.getpid()}.partial.{path.name}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _limit(env: str, default: float) -> float:
    try:
        return float(os.environ.get(env, default))
    except ValueError:
        log.warning("%s=%r is not a number: using %s", env, os.environ[env], default)
        return default


@dataclass(frozen=True)
class Store:
    """One kind of artefact in the cache (``int8``): files, their digests, verified loads.

    Attributes:
        kind: the subfolder name.
        folder: where the artefacts are.
        digests: where their SHA-256 records are.
    """

    kind: str
    folder: Path
    digests: Path

    @classmethod
    def open(cls, kind: str) -> Store | None:
        """The store under :func:`trusted_root`; None when the cache is off (or cannot be made)."""
        root = trusted_root()
        if root is None:
            return None
        for _ in range(2):  # the configured folder, then (if a subfolder is refused) a private one
            store = cls(kind, root / kind, root / DIGESTS / kind)
            why = _checked(store.folder) or _checked(store.digests)
            if why is None:
                return store
            if root in _PRIVATE.values():
                break
            root = _private_stand_in(store.folder, why)
        log.info("int8 cache unusable (%s): compiling without it", why)
        return None

    def path(self, name: str) -> Path:
        """Where artefact ``name`` lives (whether or not it exists)."""
        return self.folder / name

    def _refuse(self, path: Path, why: str) -> None:
        log.warning("cached %s artefact %s %s: not loading it; building it again", self.kind, path, why)

    @contextlib.contextmanager
    def verified(self, name: str) -> Iterator[Path | None]:
        """A private copy of artefact ``name`` whose bytes match the digest recorded at write.

        Yields None (after a warning, unless there simply is no such file) when there is none
        to trust; the copy is removed when the block ends.
        """
        path = self.path(name)
        try:
            st = path.lstat()
        except FileNotFoundError:
            yield None
            return
        if not stat.S_ISREG(st.st_mode):
            self._refuse(path, "is a link or not a regular file")
            yield None
            return
        data = path.read_bytes()
        try:
            recorded = (self.digests / name).read_text(encoding="ascii").strip()
        except (OSError, UnicodeError):
            recorded = ""
        actual = _sha256(data)
        if recorded != actual:
            why = (
                "has no digest record (convdoctor did not write it)"
                if not recorded
                else (
                    f"does not match the digest recorded when convdoctor wrote it (sha256 {actual[:12]} != {recorded[:12]})"
                )
            )
            self._refuse(path, why)
            yield None
            return
        with contextlib.suppress(OSError):
            os.utime(path)  # used: the eviction keeps it
        with tempfile.TemporaryDirectory(prefix="convdoctor-verified-") as tmp:
            copy = Path(tmp) / name
            copy.write_bytes(data)
            yield copy

    def put(self, name: str, built: Path) -> Path:
        """Move the file ``built`` (in :attr:`folder`) to ``name``, recording its digest, then evict.

        The record is written first: a reader that sees the new file sees its digest.
        """
        _atomic_write(self.digests / name, _sha256(built.read_bytes()).encode("ascii"))
        final = self.path(name)
        os.replace(built, final)  # atomic: a concurrent reader sees the old file or the whole new one
        evict(self.folder.parent, keep=final)
        return final


def _stores(root: Path) -> list[Path]:
    """The store folders: those with a digests folder (convdoctor made both; nothing else is touched)."""
    records = root / DIGESTS
    if not records.is_dir():
        return []
    return [root / d.name for d in records.iterdir() if d.is_dir() and (root / d.name).is_dir()]


def _artefacts(root: Path) -> list[tuple[Path, os.stat_result]]:
    out = []
    for folder in _stores(root):
        for path in folder.iterdir():
            with contextlib.suppress(OSError):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode):
                    out.append((path, st))
    return out


def _remove(path: Path, root: Path) -> int:
    """Delete an artefact and its record; its size, 0 when it was gone already."""
    try:
        size = path.lstat().st_size
        path.unlink()
    except OSError:
        return 0
    (root / DIGESTS / path.parent.name / path.name).unlink(missing_ok=True)
    return size


def evict(root: Path, *, keep: Path | None = None) -> int:
    """Remove stale partial files, artefacts past the age limit, then the least recently used
    until the stores fit the size cap. Returns the bytes removed."""
    max_bytes = _limit(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)
    max_age_s = _limit(MAX_AGE_ENV, DEFAULT_MAX_AGE_DAYS) * 86400
    now = time.time()
    removed = 0
    live = []
    for path, st in sorted(_artefacts(root), key=lambda item: item[1].st_mtime):
        partial = path.name.startswith(".") and ".partial." in path.name
        if path != keep and (now - st.st_mtime > (STALE_PARTIAL_S if partial else max_age_s)):
            removed += _remove(path, root)
        elif not partial:
            live.append((path, st.st_size))
    total = sum(size for _, size in live)
    for path, size in live:  # oldest first
        if total <= max_bytes:
            break
        if path != keep:
            removed += _remove(path, root)
            total -= size
    return removed


@dataclass(frozen=True)
class CacheInfo:
    """What the cache holds and whether it is used.

    Attributes:
        root: the configured folder, None when the cache is off.
        problem: why that folder is not trusted (a private folder is used instead), None when it is.
        stores: kind -> (artefacts, bytes).
        other_files: the :data:`KNOWN_FILES` present at the top.
        max_bytes: the size cap.
        max_age_days: the age limit.
    """

    root: Path | None
    problem: str | None
    stores: dict[str, tuple[int, int]] = field(default_factory=dict)
    other_files: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    max_age_days: float = DEFAULT_MAX_AGE_DAYS


def cache_info() -> CacheInfo:
    """The cache's folder, trust, contents and limits (nothing is created or changed)."""
    root = cache_root()
    limits = (int(_limit(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)), _limit(MAX_AGE_ENV, DEFAULT_MAX_AGE_DAYS))
    if root is None or not root.is_dir():
        return CacheInfo(root, None, {}, (), *limits)
    stores: dict[str, tuple[int, int]] = {}
    for path, st in _artefacts(root):
        files, size = stores.get(path.parent.name, (0, 0))
        stores[path.parent.name] = (files + 1, size + st.st_size)
    others = tuple(name for name in KNOWN_FILES if (root / name).is_file())
    return CacheInfo(root, folder_problem(root), stores, others, *limits)


def clear_cache() -> tuple[int, int]:
    """Delete every artefact and record of the stores, and the :data:`KNOWN_FILES`; nothing else.

    Returns:
        ``(files, bytes)`` removed; ``(0, 0)`` when the cache is off or empty.
    """
    root = cache_root()
    if root is None or not root.is_dir():
        return 0, 0
    files = size = 0
    for path, st in _artefacts(root):
        if _remove(path, root):
            files, size = files + 1, size + st.st_size
    for name in KNOWN_FILES:
        path = root / name
        if path.is_file() and not path.is_symlink():
            size += path.stat().st_size
            path.unlink()
            files += 1
    with contextlib.suppress(OSError):
        shutil.rmtree(root / DIGESTS)
    return files, size
