"""Measures between the features of two adjacent sites, derived from the statistics pass.

For a feature ``a`` of site L and a feature ``b`` of site L+1, over the ``n`` counted
tokens, with ``#a``/``#b`` their firing counts and ``#ab`` the tokens on which both fire:

==============  ==========================================  =========
``pearson``     correlation of the activations (streamed     [-1, 1]
                sums of the pass)
``jaccard``     ``#ab / (#a + #b - #ab)``                    [0, 1]
``sufficiency`` ``P(b fires | a fires) = #ab / #a``          [0, 1]
``necessity``   ``P(a fires | b fires) = #ab / #b``          [0, 1]
``mutual_info`` mutual information of the two firing         [0, 1] bits
                indicators, in bits
``cosine``      cosine of the two decoder directions         [-1, 1]
==============  ==========================================  =========

Every count-based measure comes from the exact integer counts of the pass (never from
float-accumulated counts) and is computed in float64. A measure that is undefined (a
feature that never fired) is NaN. Blocks of rows keep the memory bounded at any width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError

MEASURES = ("pearson", "jaccard", "sufficiency", "necessity", "mutual_info", "cosine")
#: the closed range every measure's values (and thresholds) lie in
MEASURE_RANGES = {
    "pearson": (-1.0, 1.0), "jaccard": (0.0, 1.0), "sufficiency": (0.0, 1.0),
    "necessity": (0.0, 1.0), "mutual_info": (0.0, 1.0), "cosine": (-1.0, 1.0),
}


def check_measure(measure: str) -> str:
    """``measure`` if it is known, else a ConfigError listing the known ones."""
    if measure not in MEASURES:
        raise ConfigError(f"unknown measure {measure!r}: choose one of {list(MEASURES)}")
    return measure


def check_threshold(measure: str, threshold: float) -> float:
    """``threshold`` if it lies in the measure's range, else a ConfigError naming the range."""
    lo, hi = MEASURE_RANGES[check_measure(measure)]
    if not isinstance(threshold, (int, float, np.floating, np.integer)) or not lo <= float(threshold) <= hi:
        raise ConfigError(f"threshold {threshold!r} for {measure} is outside its range [{lo:g}, {hi:g}]")
    return float(threshold)


@dataclass
class PairInputs:
    """What the measures of one adjacent pair of sites are derived from (on one device)."""

    count: torch.Tensor  # [Fa, Fb] exact co-firing counts (integers)
    fired_a: torch.Tensor  # [Fa] firing counts at site L
    fired_b: torch.Tensor  # [Fb] at site L+1
    n_tokens: int
    r: torch.Tensor | None = None  # [Fa, Fb] Pearson r from the streamed sums
    dir_a: torch.Tensor | None = None  # [Fa, d] unit decoder directions
    dir_b: torch.Tensor | None = None  # [Fb, d]

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.count.shape[0]), int(self.count.shape[1])

    def to(self, device: torch.device | str) -> "PairInputs":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return PairInputs(move(self.count), move(self.fired_a), move(self.fired_b), self.n_tokens,
                          move(self.r), move(self.dir_a), move(self.dir_b))


def _entropy_terms(p: torch.Tensor) -> torch.Tensor:
    """``-p log2 p`` elementwise, with ``0 log 0 = 0``."""
    return torch.special.xlogy(p, p).mul_(-1.0 / np.log(2.0))


def binary_mutual_info(count: torch.Tensor, fired_a: torch.Tensor, fired_b: torch.Tensor, n: int) -> torch.Tensor:
    """Mutual information (bits) of the firing indicators, from counts; ``fired_*`` broadcast.

    ``I(A; B) = H(A) + H(B) - H(A, B)``: the marginal entropies are vectors, the joint one
    takes four ``p log p`` terms per pair (the cells of the 2 x 2 table).
    """
    c = count.double() / n
    pa, pb = fired_a.double() / n, fired_b.double() / n
    h_a = _entropy_terms(pa) + _entropy_terms(1 - pa)
    h_b = _entropy_terms(pb) + _entropy_terms(1 - pb)
    joint = _entropy_terms(c)
    joint += _entropy_terms((pa - c).clamp_min_(0))
    joint += _entropy_terms((pb - c).clamp_min_(0))
    joint += _entropy_terms((1.0 - pa - pb + c).clamp_min_(0))
    return (h_a + h_b - joint).clamp_min_(0.0)  # rounding can leave -1e-17


def block_measures(inputs: PairInputs, rows: slice | None = None, cols: slice | None = None,
                   measures: tuple[str, ...] = MEASURES) -> dict[str, torch.Tensor]:
    """Every measure on the block ``[rows, cols]`` of the pair, float64 ``[ra, cb]`` each."""
    rows = rows if rows is not None else slice(None)
    cols = cols if cols is not None else slice(None)
    c = inputs.count[rows, cols].double()
    fa = inputs.fired_a[rows].double().unsqueeze(1)
    fb = inputs.fired_b[cols].double().unsqueeze(0)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=c.device)
    out: dict[str, torch.Tensor] = {}
    for m in measures:
        if m == "pearson":
            if inputs.r is None:
                raise ConfigError("pearson needs the correlation matrix of the pass (correlation.npz)")
            out[m] = inputs.r[rows, cols].double()
        elif m == "jaccard":
            union = fa + fb - c
            out[m] = torch.where(union > 0, c / union.clamp_min(1), nan)
        elif m == "sufficiency":
            out[m] = torch.where(fa > 0, c / fa.clamp_min(1), nan)
        elif m == "necessity":
            out[m] = torch.where(fb > 0, c / fb.clamp_min(1), nan)
        elif m == "mutual_info":
            out[m] = binary_mutual_info(c, fa, fb, inputs.n_tokens)
        elif m == "cosine":
            if inputs.dir_a is None or inputs.dir_b is None:
                raise ConfigError("cosine needs the SAEs' decoder directions: load the SAEs")
            out[m] = (inputs.dir_a[rows].double() @ inputs.dir_b[cols].double().T)
        else:
            check_measure(m)
    return out


def measure_matrix(inputs: PairInputs, measure: str, chunk: int = 1024) -> np.ndarray:
    """The full ``[Fa, Fb]`` float32 matrix of one measure, ``chunk`` rows at a time.

    Full matrices are for small widths and for tests; at GPT-2 scale use the partner
    tables (:mod:`.partners`), which never hold more than one block.
    """
    check_measure(measure)
    fa, fb = inputs.shape
    out = np.empty((fa, fb), dtype=np.float32)
    for lo in range(0, fa, chunk):
        out[lo : lo + chunk] = block_measures(inputs, slice(lo, lo + chunk), None, (measure,))[measure].float().cpu().numpy()
    return out


def load_pair_inputs(exp, pair: int, saes: dict | None = None, device: torch.device | str = "cpu",
                     out=None) -> PairInputs:
    """The inputs of adjacent pair ``pair`` (index into ``exp.site_pairs``) from the artefacts.

    ``saes`` (``{site: SAE}``) adds the decoder directions that ``cosine`` needs.
    """
    from ..stats.artefacts import load_artefact
    from .decoder import decoder_directions

    if not 0 <= pair < len(exp.site_pairs):
        raise ConfigError(f"pair index {pair} out of range: the experiment has {len(exp.site_pairs)} adjacent pairs")
    fired = load_artefact(exp, "dead_features", out, keys=("fired",))["fired"]
    corr = load_artefact(exp, "correlation", out, keys=(f"r_{pair}", "n_tokens"))
    count = load_artefact(exp, "pair_coactivation", out, keys=(f"count_{pair}",))[f"count_{pair}"]
    site_a, site_b = exp.site_pairs[pair]
    dirs = (None, None)
    if saes is not None:
        dirs = (decoder_directions(saes[site_a]), decoder_directions(saes[site_b]))
    # counts never exceed the tokens seen: int32 holds them exactly below 2^31 tokens (half the memory)
    count_dtype = np.int32 if int(corr["n_tokens"]) < 2**31 else np.int64
    inputs = PairInputs(
        count=torch.from_numpy(count.astype(count_dtype)),
        # (a width pair's count is [w_a, w_b]; the firing rows are padded to the widest site)
        fired_a=torch.from_numpy(fired[pair][: count.shape[0]].astype(np.int64)),
        fired_b=torch.from_numpy(fired[pair + 1][: count.shape[1]].astype(np.int64)), n_tokens=int(corr["n_tokens"]),
        r=torch.from_numpy(corr[f"r_{pair}"]), dir_a=dirs[0], dir_b=dirs[1],
    )
    return inputs.to(device)
