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
good one stood.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ARTEFACTS_ENV = "SAE_EVOLUTION_ARTEFACTS"
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
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
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
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; swap it in for ``path`` on success.

    The old folder (if any) is replaced only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # leftovers of a writer that was killed (SIGKILL skips `finally`)
    for stale in path.parent.glob(f".{path.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


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
