"""The reference figures, as data, with their sources.

Two earlier works measured quantities this project measures too:

- :data:`STUDY`, the reference study (GPT-2 small, ``gpt2-small-res-jb``). Its own arrays ship
  with this package as ``spar2024.npz`` (:func:`load_study`), copied and packed from the public
  repository ``Stefan-Heimersheim/spar-2024`` at commit ``c68d126`` (folder ``artefacts/``; the
  repository has no licence file, so every figure drawn from them cites the study and the
  repository);
- :data:`FEATURE_FLOW`, Feature Flow (Gemma 2 2B with Gemma Scope), whose matching success is
  quoted, not measured here.

:func:`figures` gives each reference number with its source and what it measures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: the packed copy of the study's arrays (see :func:`pack_study`)
STUDY_FILE = Path(__file__).with_name("spar2024.npz")


@dataclass(frozen=True)
class Source:
    """A work whose figures the book puts beside its own."""

    key: str
    citation: str
    url: str
    model: str  # the subject model, in words
    saes: str  # the SAEs, in words
    tokens: str  # the tokens read, in words
    width: int | None = None  # features per SAE, when one number
    n_tokens: int | None = None
    repository: str | None = None
    commit: str | None = None
    model_names: tuple[str, ...] = ()  # the subject's names in helpers.experiment.MODELS / on the hub

    @property
    def cite(self) -> str:
        """One line for a caption: the citation and, for data, the repository and commit."""
        data = f"; data: github.com/{self.repository} @ {self.commit}" if self.repository else ""
        return f"{self.citation} ({self.url}){data}"


STUDY = Source(
    key="study",
    citation=("Balcells, Lerner, Oesterle, Ucar and Heimersheim, \"Evolution of SAE Features "
              "Across Layers in LLMs\", arXiv 2410.08869, 2024"),
    url="https://arxiv.org/abs/2410.08869",
    model="GPT-2 small",
    saes="gpt2-small-res-jb (hook_resid_pre, 12 layers)",
    tokens="17.5M tokens of the Pile (NeelNanda/pile-10k), evaluated every 65,536",
    width=24576,
    n_tokens=17_432_576,  # 266 evaluations x 65,536 tokens
    repository="Stefan-Heimersheim/spar-2024",
    commit="c68d126",
    model_names=("gpt2", "gpt2-small", "openai-community/gpt2"),
)

FEATURE_FLOW = Source(
    key="feature-flow",
    citation=("Laptev, Balagansky, Aksenov and Gavrilov, \"Analyze Feature Flow to Enhance "
              "Interpretation and Steering in Language Models\", arXiv 2502.03032, 2025"),
    url="https://arxiv.org/abs/2502.03032",
    model="Gemma 2 2B",
    saes="Gemma Scope (residual, MLP and attention SAEs)",
    tokens="their deactivation test's texts",
    model_names=("gemma-2-2b", "google/gemma-2-2b"),
)


@dataclass(frozen=True)
class Figure:
    """One reference number: what it measures, its value (a number, or a (low, high) range),
    its source, and how it was obtained."""

    key: str
    what: str
    value: Any
    source: Source
    how: str
    unit: str = ""  # "share" (0-1), "count" or "" (an activation)
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class StudyArrays:
    """The study's arrays (see ``shared/reference/spar-2024/README.md`` for the originals).

    - ``dead[step, threshold, layer]``: features that fired at most ``dead_thresholds[t]`` times
      after ``tokens[step]`` tokens;
    - ``never[threshold, pair, step]``: pairs (first 100 features of layer L x all 24,576 of
      L+1) that co-fired at most ``never_thresholds[t]`` times after ``tokens[step]`` tokens;
    - ``max_sorted[layer]``: the maximum activation of every feature, sorted ascending (stored as
      float16: the distribution, not which feature); ``max_largest[layer]``: the exact largest.
    """

    dead: np.ndarray
    dead_thresholds: np.ndarray
    never: np.ndarray
    never_thresholds: np.ndarray
    tokens: np.ndarray
    max_sorted: np.ndarray
    max_largest: np.ndarray
    n_features: int = 24576
    n_upstream: int = 100  # features of layer L in the co-activation count

    @property
    def layers(self) -> list[str]:
        return [f"layer {i}" for i in range(self.dead.shape[2])]

    @property
    def pairs(self) -> list[str]:
        return [f"{i}->{i + 1}" for i in range(self.never.shape[1])]

    @property
    def n_pairs(self) -> int:
        """Feature pairs counted per layer pair (100 x 24,576)."""
        return self.n_upstream * self.n_features

    def dead_at_end(self, threshold: int = 0) -> np.ndarray:
        """Dead features per layer after the last step, at ``threshold``."""
        return self.dead[-1, list(self.dead_thresholds).index(threshold)]

    def never_share_at_end(self, threshold: int = 0) -> np.ndarray:
        """Share of the counted pairs that co-fired at most ``threshold`` times, per layer pair."""
        return self.never[list(self.never_thresholds).index(threshold), :, -1] / self.n_pairs


def pack_study(folder: str | Path) -> dict[str, np.ndarray]:
    """The arrays of ``spar2024.npz`` from the study's three files in ``folder``
    (``shared/reference/spar-2024``): counts in the smallest exact integer type, the maxima
    sorted per layer as float16 with the exact largest kept in float32.

    ``np.savez_compressed(STUDY_FILE, **pack_study(folder))`` rebuilds the shipped file.
    """
    folder = Path(folder)
    dead = np.load(folder / "res_jb_sae_dead_features_17.5M_0.0.npz")["arr_0"]
    never = np.load(folder / "res_jb_sae_pair_co_activation_17.5M_100_24576_0.0.npz")["arr_0"]
    mx = np.load(folder / "res_jb_max_sae_activations_17.5M.npz")["arr_0"]
    return {
        "dead": dead.astype(np.uint16), "dead_thresholds": np.array([0, 5, 10, 50, 100, 500, 1000, 5000, 10000]),
        "never": never.astype(np.uint32), "never_thresholds": np.array([0, 5, 10, 50, 100]),
        # the study evaluated after every 16 batches of 32 x 128 tokens
        "tokens": 65_536 * np.arange(1, dead.shape[0] + 1, dtype=np.int64),
        "max_sorted": np.sort(mx, axis=1).astype(np.float16), "max_largest": mx.max(1).astype(np.float32),
    }


@functools.lru_cache(maxsize=1)
def load_study() -> StudyArrays:
    """The study's arrays, from the copy shipped with the package."""
    with np.load(STUDY_FILE, allow_pickle=False) as data:
        # counts as int64 (stored in the smallest exact type), the maxima as float32
        arrays = {k: data[k].astype(np.int64 if data[k].dtype.kind in "ui" else np.float32)
                  for k in data.files}
    for a in arrays.values():
        a.flags.writeable = False  # cached: shared by every caller
    return StudyArrays(**arrays)


@functools.lru_cache(maxsize=1)
def figures() -> dict[str, Figure]:
    """Every reference figure by key: ``dead``, ``never_coactivating``, ``max_activation``,
    ``disappearing``, ``matching_success`` (read from the packed arrays on first call)."""
    s = load_study()
    positive = s.max_sorted.astype(np.float32)
    return {
        "dead": Figure(
            "dead", "dead features (never fired) at the end of the stream, per layer",
            s.dead_at_end(0), STUDY, "the study's array, threshold 0, last of 266 steps", "count"),
        "never_coactivating": Figure(
            "never_coactivating", "share of feature pairs of adjacent layers that never co-fired",
            float(s.never_share_at_end(0).mean()), STUDY,
            "the study's array: first 100 features of layer L x all 24,576 of L+1, mean of 11 "
            "layer pairs, threshold 0, last step", "share"),
        "max_activation": Figure(
            "max_activation", "the largest maximum activation of any feature",
            float(s.max_largest.max()), STUDY, "the study's array of maxima (12 x 24,576)",
            notes=(f"{(positive < 100).mean():.1%} of the features stay below 100",)),
        "disappearing": Figure(
            "disappearing", "share of the features of layer L with no partner Pearson r >= 0.5 "
                            "in layer L+1, per layer pair",
            (0.19, 0.34), STUDY, "quoted: the study's pass-through analysis (its Fig. 3)", "share",
            notes=("a range over the 11 layer pairs, as the project has quoted it; not in the "
                   "copied arrays",)),
        "matching_success": Figure(
            "matching_success", "matching success: ablating the top-1 upstream partner deactivates "
                                "the downstream feature",
            {"cosine": 0.65, "pearson": 0.65}, FEATURE_FLOW,
            "quoted: about 65% for top-1 decoder cosine and for Pearson correlation", "share",
            notes=("approximate, as issue 17 and notebook 11 quote it; their predecessors may also "
                   "come from the attention and MLP outputs, and their deactivation criterion is theirs",)),
    }
