"""The pairs' results spooled to disk as soon as they are final, so the writer's host holds one pair.

Each adjacent pair's full-width results (its ``F x F`` counts and float64 sums of products) are
turned, as soon as they are final, into exactly the arrays the artefacts store (the counts in the
smallest unsigned type, :func:`~.artefacts.smallest_uint`, and Pearson r, float32,
:func:`~.artefacts._pearson32`) and written as ``.npy`` files into a hidden folder of the output
folder (:data:`SPOOL_DIR`); the full-width arrays are dropped. :func:`~.artefacts.write_artefacts`
then writes ``pair_coactivation.npz`` and ``correlation.npz`` from those files (memory-mapped:
numpy's npz writer streams them in chunks) and removes the folder.

Each file is written atomically (a killed run leaves whole files or none). Only the files of the
pairs this run recorded are read (:attr:`PairSpool.records`, also kept in checkpoints), so a
stale file of a killed run never reaches an artefact: a fresh run clears the folder, a resumed one
verifies the recorded files (:meth:`PairSpool.verify`) and rewrites the others.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..io import atomic_path

#: the spool folder, inside the output folder
SPOOL_DIR = ".pair_spool"


def pair_sums(feats: dict[str, Any], a: int, widths: "tuple[int, int] | None" = None
              ) -> "tuple[np.ndarray, ...]":
    """``(sum_a, sum_sq_a, sum_b, sum_sq_b)``: the feature sums, in ``feats``
    (``FeatureStats.result()``), of the pair whose first site is row ``a`` and second row ``a + 1``
    (what Pearson r of the pair is computed from); ``widths``: the two sites' SAE widths (the rows
    are padded to the widest site: a width pair's narrower site keeps its first ``w`` features)."""
    wa, wb = widths if widths is not None else (None, None)
    return feats["sum"][a][:wa], feats["sum_sq"][a][:wa], feats["sum"][a + 1][:wb], feats["sum_sq"][a + 1][:wb]


class PairSpool:
    """The derived arrays of the pairs whose results are final, on disk in ``out/.pair_spool``.

    ``records[i]``: what pair ``i``'s files hold (dtype, shape, bytes of ``count_i.npy`` and
    ``r_i.npy``) and the feature sums its r was computed from (checked against the stitched
    ones when the artefacts are written).
    """

    def __init__(self, out: str | Path):
        self.folder = Path(out) / SPOOL_DIR
        self.records: dict[int, dict[str, Any]] = {}

    def clear(self) -> None:
        """Remove the folder (a stale spool of a killed run) and forget every record."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.records = {}

    def file(self, key: str, i: int) -> Path:
        return self.folder / f"{key}_{i}.npy"

    def add(self, i: int, result: dict[str, np.ndarray], n: int, sums: "tuple[np.ndarray, ...]") -> None:
        """Spool pair ``i`` from its full result (``count``, ``sum_xy``; consumed: ``None`` after)
        and the feature sums of its two sites over ``n`` tokens (:func:`pair_sums`)."""
        from .artefacts import _pearson32, smallest_uint

        self.folder.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"n": int(n), "sums": [np.array(x, dtype=np.float64, copy=True) for x in sums]}
        count = smallest_uint(result["count"])
        result["count"] = None
        record["count"] = self._save("count", i, count)
        del count
        r = _pearson32(n, *sums, result["sum_xy"])
        result["sum_xy"] = None
        record["r"] = self._save("r", i, r)
        del r
        self.records[i] = record

    def _save(self, key: str, i: int, array: np.ndarray) -> dict[str, Any]:
        path = self.file(key, i)
        with atomic_path(path, suffix=".npy", journal=False) as tmp:  # (a checkpoint may refer to it)
            np.save(tmp, array)
        return {"dtype": array.dtype.str, "shape": tuple(array.shape), "bytes": path.stat().st_size}

    def load(self, key: str, i: int) -> np.ndarray:
        """Pair ``i``'s spooled ``key`` (``count`` or ``r``), memory-mapped."""
        return np.load(self.file(key, i), mmap_mode="r")

    def verify(self, records: dict[int, dict[str, Any]]) -> None:
        """Adopt a checkpoint's ``records`` after checking that their files exist and match."""
        for i, rec in sorted(records.items()):
            for key in ("count", "r"):
                path = self.file(key, i)
                want = rec.get(key) if isinstance(rec, dict) else None  # (an older checkpoint: full results)
                ok = isinstance(want, dict) and path.is_file() and path.stat().st_size == want["bytes"]
                if ok:
                    arr = np.load(path, mmap_mode="r")
                    ok = arr.dtype.str == want["dtype"] and tuple(arr.shape) == tuple(want["shape"])
                if not ok:
                    raise ConfigError(f"--resume: the spooled results of pair {i} ({path}) are missing or do not "
                                      "match the checkpoint: run without --resume")
        self.records = dict(records)

    def check_sums(self, i: int, n: int, sums: "tuple[np.ndarray, ...]", fix: str) -> None:
        """Pair ``i``'s r was computed from exactly the stitched feature sums ``sums`` over ``n`` tokens."""
        rec = self.records[i]
        if rec["n"] != int(n) or not all(np.array_equal(a, b) for a, b in zip(rec["sums"], sums)):
            raise ConfigError(f"pair {i}'s feature sums differ from those of its sites' owners: the token "
                              f"stream or the SAEs changed between passes{fix}")
