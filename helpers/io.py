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
