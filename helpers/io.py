"""Artefact locations and atomic writes.

Artefacts live under ``artefacts/`` at the repository root (override with the
environment variable ``SAE_EVOLUTION_ARTEFACTS``):

- ``artefacts/saes/<preset>/<site>/``: one trained SAE in sae_lens format
  (``cfg.json`` + ``sae_weights.safetensors``), loadable with
  ``sae_lens.SAE.load_from_disk``; ``artefacts/saes/<preset>/cfg.json`` is the
  experiment that trained them and ``training_report.json`` their quality.
- ``artefacts/<preset>/``: the statistics of the streaming pass.

Every write goes to a temporary file in the same folder, is flushed to disk and
then renamed over the target, so a crash never leaves a truncated file where a
good one stood. Temporary names start with ``.~`` (:data:`TEMP_PREFIX`).

A step that writes several files runs them as one :func:`transaction`: if it fails
or is interrupted, every file it replaced is put back as it was, so the previous
artefacts stay byte-identical (each file still replaced atomically for readers).
:func:`require_space` refuses a step whose files would not fit its disk, before it starts.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

ARTEFACTS_ENV = "SAE_EVOLUTION_ARTEFACTS"
#: the start of every temporary name (files being written, folders being built, kept old copies)
TEMP_PREFIX = ".~"
#: the way out of a full disk for a step that writes the artefacts
MORE_SPACE = "free some space, or put the artefacts on a larger disk ($SAE_EVOLUTION_ARTEFACTS)"
#: the errors of a full or read-only disk
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
REPO_ROOT = Path(__file__).resolve().parent.parent


def artefacts_root() -> Path:
    """The folder that holds every artefact (``$SAE_EVOLUTION_ARTEFACTS`` or ``<repo>/artefacts``)."""
    env = os.environ.get(ARTEFACTS_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "artefacts"


def sae_dir(preset: str, site: str | None = None) -> Path:
    """``artefacts/saes/<preset>[/<site>]``."""
    base = artefacts_root() / "saes" / preset
    return base / site if site is not None else base


def stats_dir(preset: str) -> Path:
    """``artefacts/<preset>``: where the statistics pass writes."""
    return artefacts_root() / preset


@contextmanager
def atomic_path(path: str | Path, suffix: str = "", journal: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched. ``journal=False``:
    the file stays even if the enclosing :func:`transaction` fails (a checkpoint).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        swap_in(tmp_path, path, journal)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save_npz(path: str | Path, compressed: bool = True, **arrays: Any) -> Path:
    """``numpy.savez[_compressed]`` through a temporary file (``.npz`` kept as given)."""
    import numpy as np

    with atomic_path(path, suffix=".npz") as tmp:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
    return Path(path)


@contextmanager
def atomic_dir(path: str | Path, journal: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; swap it in for ``path`` on success.

    The old folder (if any) is replaced only once the new one is complete. ``journal=False``: the
    folder stays even if the enclosing :func:`transaction` fails (one finished part of a longer step).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{TEMP_PREFIX}{path.name}.*"):  # of a killed writer (SIGKILL skips `finally`)
        _remove(stale)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent))
    try:
        yield tmp
        swap_in(tmp, path, journal)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# --------------------------------------------------------------------------- transactions
#: the open transactions of this process, innermost last
_OPEN: list["_Transaction"] = []


class _Transaction:
    def __init__(self) -> None:
        self.swaps: list[tuple[Path, Path | None]] = []  # (target, kept old copy or None), in order
        self.temps: set[Path] = set()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _signals_held():
    """SIGINT and SIGTERM wait while the files are swapped (what is swapped is always journalled)."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        return nullcontext()

    @contextmanager
    def held():
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return held()


def swap_in(new: Path | None, path: str | Path, journal: bool = True) -> None:
    """Put ``new`` (a file or folder beside ``path``; ``None``: nothing, i.e. remove ``path``) at
    ``path``. Inside a :func:`transaction` (unless ``journal=False``) what stood at ``path`` is kept
    aside (a hard link for a file: readers never miss it) until the transaction ends."""
    path = Path(path)
    t = _OPEN[-1] if _OPEN and journal else None
    with _signals_held():
        exists = path.exists() or path.is_symlink()
        if t is None or any(p == path for p, _ in t.swaps):  # nothing to keep, or kept already
            if exists and (new is None or path.is_dir()):
                old = path.with_name(f"{TEMP_PREFIX}{path.name}.old")
                _remove(old)
                os.replace(path, old)
                _remove(old)
            if new is not None:
                os.replace(new, path)
            return
        kept = path.with_name(f"{TEMP_PREFIX}bak.{path.name}") if exists else None
        if kept is not None:
            _remove(kept)
            if new is not None and not path.is_dir():
                try:
                    os.link(path, kept)
                except OSError:  # no hard links here: the old file is moved aside instead
                    os.replace(path, kept)
            else:
                os.replace(path, kept)
        t.swaps.append((path, kept))
        if new is not None:
            os.replace(new, path)


def temporary(path: str | Path) -> Path:
    """Register ``path`` (a file or folder, existing or not yet) as temporary: the enclosing
    :func:`transaction` removes it when it ends, unless :func:`keep` is called first."""
    if _OPEN:
        _OPEN[-1].temps.add(Path(path))
    return Path(path)


def keep(path: str | Path) -> None:
    """``path`` outlives the transactions now open (a spool a checkpoint refers to)."""
    for t in _OPEN:
        t.temps.discard(Path(path))


@contextmanager
def transaction() -> Iterator[None]:
    """Make every replacement inside (:func:`atomic_path`, :func:`atomic_dir`, :func:`swap_in`) one
    unit: if the block raises (an interruption too) the replaced files and folders are put back and
    the new ones removed; on success the kept old copies are dropped. Temporaries registered with
    :func:`temporary` are removed either way. Nested transactions commit on their own."""
    t = _Transaction()
    _OPEN.append(t)
    ok = False
    try:
        yield
        ok = True
    finally:
        _OPEN.remove(t)
        with _signals_held():
            if ok:  # commit: drop the old copies
                for _, kept in t.swaps:
                    if kept is not None:
                        _remove(kept)
            else:  # undo, last replacement first
                for path, kept in reversed(t.swaps):
                    _remove(path)
                    if kept is not None:
                        os.replace(kept, path)
            for path in t.temps:
                _remove(path)


def sweep(folder: str | Path) -> None:
    """Remove what a killed writer of ``folder`` left: temporary names in it and beside it
    (call it holding ``folder``'s writer lock: then no live writer owns them)."""
    folder = Path(folder)
    leftovers = list(folder.glob(f"{TEMP_PREFIX}*")) if folder.is_dir() else []
    leftovers += folder.parent.glob(f"{TEMP_PREFIX}{folder.name}.*")
    leftovers += folder.parent.glob(f"{TEMP_PREFIX}bak.{folder.name}")
    for path in leftovers:
        _remove(path)


# --------------------------------------------------------------------------- disk space
def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def require_space(folder: str | Path, need: int, what: str, way_out: str) -> int:
    """Check, before a step starts, that ``folder`` (or the folder that will hold it) is writable
    and that its file system has ``need`` bytes free; raise :class:`~helpers.errors.DiskError`
    (one line: the need, the free space, ``way_out``) if not. Returns the free bytes."""
    from .errors import DiskError

    folder = Path(folder).absolute()
    there = next(p for p in (folder, *folder.parents) if p.is_dir())
    try:
        fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=there)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise DiskError.of(err, what, there) from None
    free = shutil.disk_usage(there).free
    if need > free:
        raise DiskError(errno.ENOSPC, f"{what} needs about {_size(need)} on the file system of {folder}, "
                                      f"which has {_size(free)} free: {way_out}")
    return free


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


#: files whose checksum was verified in this process: (path, mtime_ns, size) -> sha256
_VERIFIED: dict[tuple[str, int, int], str] = {}


def verify_checksum(path: str | Path, expected: str, rebuild: str) -> None:
    """Raise :class:`~helpers.errors.CorruptArtefactError` naming ``rebuild`` (the command that
    remakes the file) if ``path``'s SHA-256 differs from ``expected``. Verified once per process
    while the file is unchanged."""
    from .errors import CorruptArtefactError, MissingArtefactError

    path = Path(path)
    if not path.is_file():
        raise MissingArtefactError(f"{path} is missing: rebuild it with `{rebuild}`")
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if _VERIFIED.get(key) == expected:
        return
    if sha256_file(path) != expected:
        raise CorruptArtefactError(
            f"{path} is corrupted or truncated (its checksum differs from the one recorded when it "
            f"was written): rebuild it with `{rebuild}`"
        )
    _VERIFIED[key] = expected


def load_npz(path: str | Path, sha256: str | None, rebuild: str, keys=None) -> dict:
    """Arrays of an ``.npz`` artefact (only ``keys`` if given), its checksum verified when known;
    a missing, truncated or corrupted file raises an error naming ``rebuild``."""
    import zipfile
    import zlib

    import numpy as np

    from .errors import CorruptArtefactError, MissingArtefactError

    path = Path(path)
    if not path.is_file():
        raise MissingArtefactError(f"{path} is missing: rebuild it with `{rebuild}`")
    if sha256 is not None:
        verify_checksum(path, sha256, rebuild)
    try:
        with np.load(path, allow_pickle=False) as data:
            names = data.files if keys is None else [k for k in keys if k in data.files]
            return {k: data[k] for k in names}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
        raise CorruptArtefactError(
            f"{path} is corrupted or truncated ({type(err).__name__}): rebuild it with `{rebuild}`"
        ) from None
