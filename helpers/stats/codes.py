"""The SAE codes of every token, recorded by the statistics pass so later steps skip the model.

The gate verification (:mod:`helpers.evolution.focused_pass`) and the explorer's coloured
example contexts (:mod:`helpers.explore.contexts`) need, for the tokens of the pass, which
features fire and how strongly. Without this record each of them runs the model and every SAE
over the corpus again (on the offline preset about 7 minutes each on 2 CPU cores). The pass
already has these codes in hand, batch by batch, **batched as the pass batches** (TopK SAEs can
flip near-tied features between batchings, so a re-run with other batches would not be the
same codes): it appends them to a folder ``codes/`` beside the statistics.

Layout of ``codes/`` (raw little-endian arrays, read with ``np.memmap``)::

    codes.json               sites, dtypes, tokens per batch, bytes, metadata.json's checksum
    <site>.count.bin         uint16 [N]   active features of each token
    <site>.feat.bin          int16/int32 [A]  their indices, token after token
    <site>.value.bin         float32 [A]  their activations (exactly the pass's, > 0)

``N`` tokens in stream order, ``A`` active (token, feature) pairs. A feature is active when its
activation is > 0, as everywhere in the pass. Size: 6 bytes per active pair plus 2 per token and
site (offline preset: 1.01M tokens x 7 sites x at most 32 = at most 1.4 GB).

The record is skipped (and the consumers re-run the model, as before) when it would exceed
``max_bytes``, under several processes, on a resumed pass, or on a GPU by default (there the
model re-run is cheap and copying every batch to the host would stall the pass). The folder is
written next to the statistics and swapped in only when the pass finished; ``codes.json`` names
the checksum of the pass's ``metadata.json`` so codes of another pass are never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..io import TEMP_PREFIX, swap_in, temporary
from .accumulators import SparseActs

log = logging.getLogger(__name__)

CODES_DIR = "codes"
CODES_META = "codes.json"
FORMAT = 1
#: default cap on the recorded codes (bytes on disk)
DEFAULT_MAX_BYTES = 4 << 30


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _safe(site: str) -> str:
    return site.replace("/", "_")


class CodeWriter:
    """Appends each batch's codes to a temporary folder beside ``out``; :meth:`finish` swaps it in.

    ``expected_tokens``: the tokens the pass will see (for the early size check); the writer gives
    up (and deletes what it wrote) as soon as the projected size exceeds ``max_bytes``, or
    ``free_bytes`` (what the disk can spare) when smaller.
    """

    def __init__(self, out: str | Path, sites: Sequence[str], n_features: int, expected_tokens: int | None = None,
                 max_bytes: int | None = None, free_bytes: int | None = None):
        self.out = Path(out)
        self.sites = tuple(sites)
        self.n_features = int(n_features)
        self.feat_dtype = np.int16 if n_features <= np.iinfo(np.int16).max + 1 else np.int32
        self.expected_tokens = expected_tokens
        self.max_bytes = int(DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
        self.limit = "allowed"
        if free_bytes is not None and free_bytes < self.max_bytes:
            self.max_bytes, self.limit = int(free_bytes), "the disk can spare"
        self.batch_tokens: list[int] = []
        self.bytes = 0
        self.site_tokens = 0  # (token, site) pairs written
        self.active = True
        self.reason = ""
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob(f"{TEMP_PREFIX}{CODES_DIR}.*"):  # leftovers of a killed writer
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp = temporary(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{CODES_DIR}.", dir=self.out))
        self.files = {}
        for site in self.sites:
            for part in ("count", "feat", "value"):
                self.files[site, part] = open(self.tmp / f"{_safe(site)}.{part}.bin", "wb")

    def add(self, acts: dict[str, SparseActs], sites: Sequence[str] | None = None, new_batch: bool = True) -> None:
        """Append one batch (``{site: SparseActs}`` of its counted tokens, in stream order).

        ``sites``: only these (default: every site); several passes over the stream each append
        the sites they own, the first (``new_batch``) recording the batch's tokens.
        """
        if not self.active:
            return
        n = None
        sites = self.sites if sites is None else tuple(sites)
        for site in sites:
            a = acts[site]
            values = a.values.detach()
            active = values > 0
            counts = active.sum(1)
            cnt = counts.cpu().numpy()
            if cnt.size and int(cnt.max()) > np.iinfo(np.uint16).max:
                return self.abandon("a token has more than 65,535 active features")
            cnt = cnt.astype(np.uint16)
            feat = a.indices[active].to(torch.int64).cpu().numpy().astype(self.feat_dtype)
            val = values[active].to(torch.float32).cpu().numpy()
            self.files[site, "count"].write(cnt.tobytes())
            self.files[site, "feat"].write(feat.tobytes())
            self.files[site, "value"].write(val.tobytes())
            self.bytes += cnt.nbytes + feat.nbytes + val.nbytes
            n = cnt.size
            self.site_tokens += cnt.size
        if new_batch:
            self.batch_tokens.append(int(n or 0))
        # the bytes of every site over the whole stream, from the (token, site) pairs written
        seen = sum(self.batch_tokens)
        whole = (self.expected_tokens or seen) * len(self.sites)
        projected = self.bytes * max(1.0, whole / max(self.site_tokens, 1))
        if projected > self.max_bytes:
            self.abandon(f"they would take about {projected / 2**30:.1f} GiB (more than the "
                         f"{self.max_bytes / 2**30:.1f} GiB {self.limit})")

    def abandon(self, why: str) -> None:
        """Stop recording and delete what was written (the consumers will re-run the model)."""
        if not self.active:
            return
        self.active, self.reason = False, why
        self._close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        log.info("per-token SAE codes not recorded: %s; later steps re-run the model instead", why)

    def _close(self) -> None:
        for f in self.files.values():
            f.close()

    def finish(self) -> Path | None:
        """Swap the complete record in as ``out/codes`` (after the pass wrote ``metadata.json``)."""
        if not self.active:
            return None
        self._close()
        meta = {
            "format": FORMAT, "sites": list(self.sites), "n_features": self.n_features,
            "feat_dtype": np.dtype(self.feat_dtype).name, "value_dtype": "float32", "count_dtype": "uint16",
            "files": {s: _safe(s) for s in self.sites}, "batch_tokens": self.batch_tokens,
            "tokens": sum(self.batch_tokens), "bytes": self.bytes,
            "metadata_sha256": _sha256(self.out / "metadata.json"),
        }
        (self.tmp / CODES_META).write_text(json.dumps(meta))
        final = self.out / CODES_DIR
        swap_in(self.tmp, final)
        self.active = False
        return final


def discard_codes(out: str | Path) -> None:
    """Remove the record of an earlier pass (it no longer matches the statistics just written) and
    what a killed writer left half-written."""
    out = Path(out)
    swap_in(None, out / CODES_DIR)
    for stale in out.glob(f"{TEMP_PREFIX}{CODES_DIR}.*"):
        shutil.rmtree(stale, ignore_errors=True)


class CodeCache:
    """The recorded codes of a pass, read batch by batch (see the module docstring)."""

    def __init__(self, folder: Path, meta: dict):
        self.folder, self.meta = folder, meta
        self.sites = tuple(meta["sites"])
        self.n_features = int(meta["n_features"])
        self.batch_tokens = np.asarray(meta["batch_tokens"], dtype=np.int64)
        self.token_start = np.concatenate([[0], np.cumsum(self.batch_tokens)])
        self._counts, self._feat, self._value, self._ptr = {}, {}, {}, {}
        for site in self.sites:
            base = folder / meta["files"][site]
            counts = np.fromfile(f"{base}.count.bin", dtype=np.uint16)
            if counts.size != self.token_start[-1]:
                raise ValueError(f"{base}.count.bin holds {counts.size} tokens, codes.json says {self.token_start[-1]}")
            ptr = np.zeros(counts.size + 1, dtype=np.int64)
            np.cumsum(counts, out=ptr[1:])
            self._counts[site], self._ptr[site] = counts, ptr
            self._feat[site] = np.memmap(f"{base}.feat.bin", dtype=np.dtype(meta["feat_dtype"]), mode="r")
            self._value[site] = np.memmap(f"{base}.value.bin", dtype=np.float32, mode="r")
            if self._feat[site].size != ptr[-1] or self._value[site].size != ptr[-1]:
                raise ValueError(f"the codes of site {site} are truncated")

    @classmethod
    def open(cls, stats: str | Path, sites: Sequence[str] | None = None, n_features: int | None = None
             ) -> "CodeCache | None":
        """The codes recorded beside the statistics in ``stats``, or ``None`` (with the reason in the
        log) when there are none, they belong to another pass, or they do not cover ``sites``."""
        stats = Path(stats)
        folder = stats / CODES_DIR
        meta_file = folder / CODES_META
        if not meta_file.is_file():
            log.info("no recorded SAE codes in %s (a pass before they were recorded, or they did not fit): "
                     "re-running the model", stats)
            return None
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')}, expected {FORMAT}")
            if meta["metadata_sha256"] != _sha256(stats / "metadata.json"):
                raise ValueError("they were recorded by another statistics pass")
            if sites is not None and not set(sites) <= set(meta["sites"]):
                raise ValueError(f"they cover sites {meta['sites']}, not {list(sites)}")
            if n_features is not None and int(meta["n_features"]) != n_features:
                raise ValueError(f"they have {meta['n_features']} features, not {n_features}")
            return cls(folder, meta)
        except (ValueError, KeyError, OSError, json.JSONDecodeError) as e:
            log.warning("recorded SAE codes in %s not used (%s): re-running the model", folder, e)
            return None

    def firings(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        """``(token, feature)`` of every active pair of ``site``, token-major: ``token`` ``[A]`` int64
        indexes the stream of :attr:`token_start` (all batches), ``feature`` ``[A]`` is read in place."""
        counts = self._counts[site]
        return np.repeat(np.arange(counts.size, dtype=np.int64), counts), self._feat[site]

    @property
    def n_batches(self) -> int:
        return int(self.batch_tokens.size)

    def batch(self, index: int, n_tokens: int | None = None, sites: Sequence[str] | None = None
              ) -> dict[str, SparseActs]:
        """``{site: SparseActs}`` of batch ``index`` (CPU tensors, padded to its most active token).

        ``n_tokens``: the counted tokens the caller's stream has in this batch; a mismatch means the
        stream is not the recorded one (``ValueError``).
        """
        if not 0 <= index < self.n_batches:
            raise ValueError(f"the codes hold {self.n_batches} batches, not batch {index}")
        lo, hi = int(self.token_start[index]), int(self.token_start[index + 1])
        if n_tokens is not None and n_tokens != hi - lo:
            raise ValueError(f"batch {index} has {n_tokens} tokens here but {hi - lo} in the recorded codes")
        out = {}
        for site in sites or self.sites:
            counts = self._counts[site][lo:hi].astype(np.int64)
            a, b = int(self._ptr[site][lo]), int(self._ptr[site][hi])
            k = max(int(counts.max(initial=0)), 1)
            n = hi - lo
            row = np.repeat(np.arange(n), counts)
            col = np.arange(b - a) - np.repeat(self._ptr[site][lo:hi] - a, counts)
            indices = np.zeros((n, k), dtype=np.int64)
            values = np.zeros((n, k), dtype=np.float32)
            indices[row, col] = self._feat[site][a:b]
            values[row, col] = self._value[site][a:b]
            out[site] = SparseActs(torch.from_numpy(indices), torch.from_numpy(values), self.n_features)
        return out


def open_codes(exp, stats: str | Path | None = None, sites: Sequence[str] | None = None) -> CodeCache | None:
    """The recorded codes of ``exp``'s statistics (``stats`` or ``artefacts/<stats_name>``), if usable."""
    from ..io import stats_dir

    return CodeCache.open(stats if stats is not None else stats_dir(exp.stats_name), sites or exp.sites,
                          exp.sae_width)
