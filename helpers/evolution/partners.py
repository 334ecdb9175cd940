"""Partner tables: every feature's best partners in the previous and the next site.

For every adjacent pair of sites and every measure of :mod:`.measures`, each feature of
site L gets its top-``k`` partners in site L+1 (``down``) and each feature of site L+1 its
top-``k`` partners in site L (``up``), with the values of ALL measures and the co-firing
count of each listed pair. This is the compact artefact the analyses, notebooks and the
explorer read instead of the full ``F x F`` matrices.

The tables are computed in blocks of rows (or columns), on the GPU when there is one, so
the memory is bounded at any width: one pair's inputs plus one block of every measure.

``partners.npz`` (see ``artefacts/README.md``):

- ``down_index`` ``[P, M, F, k]`` int32: partner ``j`` in site ``p+1`` of feature ``f`` of
  site ``p`` under measure ``m``, best first; -1 where the measure is undefined;
- ``down_values`` ``[P, M, F, k, M]`` float32: every measure of each listed pair;
- ``down_count`` ``[P, M, F, k]`` int64: the tokens on which both fire;
- ``up_index`` / ``up_values`` / ``up_count``: the same for feature ``f`` of site ``p+1``
  and its partners in site ``p``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..io import MORE_SPACE, atomic_save_npz, atomic_write_json, load_npz, require_space, sha256_file, stats_dir
from ..locks import stats_out, writes
from .measures import MEASURES, PairInputs, block_measures, check_measure, load_pair_inputs

log = logging.getLogger(__name__)

PARTNERS_FILE = "partners.npz"
PARTNERS_META = "partners.json"
DEFAULT_K = 16


def _rank(block: dict[str, torch.Tensor], k: int, count: torch.Tensor):
    """Top-``k`` along dim 1 of every measure of ``block`` ``[r, c]``: index, values of all, count."""
    idx_all, val_all, cnt_all = [], [], []
    for m in MEASURES:
        key = torch.nan_to_num(block[m], nan=-torch.inf)
        top_idx = top_k_stable(key, k)
        vals = torch.stack([torch.gather(block[m2], 1, top_idx) for m2 in MEASURES], -1)  # [r, k, M]
        cnt = torch.gather(count, 1, top_idx)
        undefined = ~torch.isfinite(torch.gather(key, 1, top_idx))
        idx_all.append(torch.where(undefined, torch.full_like(top_idx, -1), top_idx))
        val_all.append(torch.where(undefined.unsqueeze(-1), torch.full_like(vals, float("nan")), vals))
        cnt_all.append(torch.where(undefined, torch.zeros_like(cnt), cnt))
    return torch.stack(idx_all), torch.stack(val_all), torch.stack(cnt_all)  # [M, r, k], [M, r, k, M], [M, r, k]


def top_k_stable(key: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest entries of each row, ordered by value (descending) and, among
    equal values, by index (ascending): the same on every device and batch size.

    ``torch.topk`` breaks ties in an unspecified order, and counts make ties common (many
    partners with sufficiency 1, say). Rows whose k-th value is tied with entries outside the
    top k are re-ranked with a stable sort; the k kept are then ordered stably.
    """
    top_val, top_idx = torch.topk(key, k, dim=1)
    kth = top_val[:, -1:]
    tied = (torch.count_nonzero(key >= kth, dim=1) > k) & torch.isfinite(kth[:, 0])
    if bool(tied.any()):
        rows = torch.nonzero(tied).flatten()
        top_idx[rows] = torch.sort(key[rows], dim=1, descending=True, stable=True).indices[:, :k]
    top_idx = torch.sort(top_idx, dim=1).values  # index ascending, then a stable sort by value
    order = torch.sort(torch.gather(key, 1, top_idx), dim=1, descending=True, stable=True).indices
    return torch.gather(top_idx, 1, order)


def partner_block(inputs: PairInputs, lo: int, hi: int, k: int, direction: str):
    """Ranked partners of features ``lo:hi`` (of site L for ``down``, of site L+1 for ``up``)."""
    if direction == "down":
        block = block_measures(inputs, rows=slice(lo, hi))
        count = inputs.count[lo:hi].long()
    else:
        block = {m: v.T for m, v in block_measures(inputs, cols=slice(lo, hi)).items()}
        count = inputs.count[:, lo:hi].long().T
    k = min(k, next(iter(block.values())).shape[1])
    return _rank(block, k, count)


def compute_pair_partners(inputs: PairInputs, k: int = DEFAULT_K, chunk: int = 512) -> dict[str, np.ndarray]:
    """Both partner tables of one pair: ``{down,up}_{index,values,count}`` with leading ``[M, F]``."""
    fa, fb = inputs.shape
    if not 1 <= k <= min(fa, fb):
        raise ConfigError(f"k={k} partners must be between 1 and the number of features ({min(fa, fb)})")
    out: dict[str, np.ndarray] = {}
    for direction, n in (("down", fa), ("up", fb)):
        parts = [partner_block(inputs, lo, min(lo + chunk, n), k, direction) for lo in range(0, n, chunk)]
        out[f"{direction}_index"] = torch.cat([p[0] for p in parts], 1).to(torch.int32).cpu().numpy()
        out[f"{direction}_values"] = torch.cat([p[1] for p in parts], 1).float().cpu().numpy()
        out[f"{direction}_count"] = torch.cat([p[2] for p in parts], 1).cpu().numpy()
    return out


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pad_features(key: str, table: np.ndarray, n_features: int) -> np.ndarray:
    """A table ``[M, f, ...]`` of a site narrower than the widest (a width pair) padded to ``n_features``
    rows: no partner (index -1, count 0, values NaN), as a feature that never fired."""
    missing = n_features - table.shape[1]
    if missing <= 0:
        return table
    fill = -1 if key.endswith("_index") else 0 if key.endswith("_count") else np.nan
    pad = np.full((table.shape[0], missing, *table.shape[2:]), fill, dtype=table.dtype)
    return np.concatenate([table, pad], axis=1)


@writes("partners", stats_out)
def build_partners(exp, k: int = DEFAULT_K, saes: dict | None = None, device=None, out=None,
                   chunk: int = 512, progress: bool = True) -> Path:
    """Compute the partner tables of every adjacent pair and write ``partners.npz`` atomically
    (with ``partners.json``: the experiment, ``k``, the checksum and the time it took)."""
    from ..stats.artefacts import load_metadata
    from ..subject.saes import load_saes

    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    meta = load_metadata(exp, out)  # refuses another experiment's statistics
    n_features = int(meta["n_features"])
    k = partners_k(exp, k)
    if not 1 <= k <= n_features:
        raise ConfigError(f"k={k} partners must be between 1 and the number of features ({n_features})")
    m = len(MEASURES)  # index, values of every measure and count of each listed pair, both directions
    require_space(out, 2 * len(exp.site_pairs) * m * n_features * k * (4 + 4 * m + 8), "partners", MORE_SPACE)
    dev = _device(device)
    saes = saes if saes is not None else load_saes(exp, device=dev)
    t0 = time.perf_counter()
    tables: dict[str, list[np.ndarray]] = {}
    for p in tqdm(range(len(exp.site_pairs)), desc="partner tables", unit="pair", disable=not progress):
        res = compute_pair_partners(load_pair_inputs(exp, p, saes, dev, out), k, chunk)
        for key, value in res.items():
            tables.setdefault(key, []).append(_pad_features(key, value, n_features))
    seconds = time.perf_counter() - t0
    file = out / PARTNERS_FILE
    atomic_save_npz(file, sites=np.array(exp.sites), pairs=np.array([f"{a}->{b}" for a, b in exp.site_pairs]),
                    measures=np.array(MEASURES), k=np.int64(k), n_tokens=np.int64(meta["tokens"]),
                    **{key: np.stack(v) for key, v in tables.items()})
    atomic_write_json(out / PARTNERS_META, {
        "experiment": exp.to_dict(), "k": k, "measures": list(MEASURES), "seconds": round(seconds, 2),
        "statistics_sha256": meta.get("sha256", {}), "sha256": sha256_file(file),
        "bytes": file.stat().st_size,
    })
    log.info("partner tables for %s: %d pairs in %.1f s -> %s", exp.name, len(exp.site_pairs), seconds, file)
    return file


def partners_command(exp) -> str:
    return f"python -m helpers partners --experiment {exp.name}"


def partners_k(exp, k: int = DEFAULT_K) -> int:
    """``k``, at most the narrowest SAE's width (a width sweep's narrowest site may hold fewer features)."""
    return min(k, min(exp.site_widths)) if exp.width_pairs else k


def partners_ready(exp, k: int = DEFAULT_K, out=None) -> bool:
    from ..stats.artefacts import artefact_ready

    return artefact_ready(load_partners, exp, out=out, k=partners_k(exp, k))


def load_partners(exp, out=None, k: int | None = None) -> dict[str, Any]:
    """The partner tables of ``exp`` (checksum verified), refused if they were made for another
    experiment or from other statistics than those on disk now."""
    from ..stats.artefacts import read_derived_meta

    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    meta = read_derived_meta(exp, out, PARTNERS_META, "partner tables", partners_command(exp))
    if k is not None and meta["k"] < k:
        raise ConfigError(f"the partner tables hold k={meta['k']} partners, fewer than the {k} asked for: "
                          f"rerun `{partners_command(exp)} --k {k}`")
    data = load_npz(out / PARTNERS_FILE, meta["sha256"], partners_command(exp))
    data["measures"] = [str(m) for m in data["measures"]]
    data["sites"] = [str(s) for s in data["sites"]]
    return data


def measure_index(measure: str) -> int:
    return MEASURES.index(check_measure(measure))


def best_partner(partners: dict[str, Any], pair: int, direction: str, measure: str) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's top-1 partner under ``measure`` and that value: ``(index [F], value [F])``,
    index -1 and value NaN where undefined."""
    if direction not in ("down", "up"):
        raise ConfigError(f"direction must be 'down' (next site) or 'up' (previous site), not {direction!r}")
    m = measure_index(measure)
    idx = partners[f"{direction}_index"][pair, m, :, 0]
    val = partners[f"{direction}_values"][pair, m, :, 0, m]
    return idx, val
