"""MLP neurons of every block, read together with residual-stream sites in ONE forward pass.

A block's neurons are what its MLP computes before projecting back into the residual stream,
where its family says (``Family.neurons`` in :data:`helpers.experiment.FAMILIES`): the input of
``mlp.down_proj`` in gated MLPs (Llama, Qwen, Gemma: ``act(gate(x)) * up(x)``), the input of
``mlp.c_proj`` in GPT-2 (``act(c_fc(x))``), the output of ``intermediate`` in BERT.

A site is the output of one block (its *layer*): ``blocks.L.hook_resid_post`` of block ``L``,
``blocks.L.hook_resid_pre`` of block ``L-1``, BERT's ``hidden.i`` of encoder layer ``i-1``;
``blocks.0.hook_resid_pre`` and ``hidden.0`` are the embeddings (layer -1, no MLP before them).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError
from .capture import _postprocess, _site_value, blocks, parse_site, trace_inputs


def _family_neurons(spec) -> str:
    path = spec.family_spec.neurons
    if not path:
        raise ConfigError(
            f"model family {spec.family!r} has no known MLP neuron site: set Family.neurons in "
            "helpers.experiment.FAMILIES (e.g. 'mlp.down_proj.input')"
        )
    return path


def site_layer(spec, site: str) -> int:
    """The block whose output ``site`` is (-1: the embeddings)."""
    if site not in spec.site_names():
        raise ConfigError(f"model {spec.name!r} has no site {site!r}: choose among {list(spec.site_names())}")
    if spec.family == "bert":
        return int(site.split(".")[1]) - 1
    layer, kind = parse_site(site)
    return layer if kind == "post" else layer - 1


def neuron_layers(spec, site: str) -> tuple[int | None, int | None]:
    """``(same, before)``: the block of ``site`` and the block before it, whose MLP neurons the
    site's features are compared with; None where there is none (the embeddings have no MLP;
    block 0 has no block before it)."""
    _family_neurons(spec)
    layer = site_layer(spec, site)
    return (layer if layer >= 0 else None), (layer - 1 if layer >= 1 else None)


def neuron_width(hf_model) -> int:
    """Neurons per MLP, from the model's config (``intermediate_size``; GPT-2: ``n_inner`` or
    4 x ``n_embd``)."""
    cfg = hf_model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    width = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None)
    if width is None and getattr(cfg, "n_embd", None):
        width = 4 * cfg.n_embd
    if not width:
        raise ConfigError(f"cannot read the MLP width of {type(hf_model).__name__} from its config "
                          "(no intermediate_size, n_inner or n_embd)")
    return int(width)


def _order(spec, site: str) -> float:
    """Where ``site`` is read in the forward pass; block l's neurons are read at ``2 l + 1``: after
    the block's input (``2 l + 0.5``, itself after block l-1's output, ``2 l``), before its
    output (``2 l + 2``)."""
    layer = site_layer(spec, site)
    if spec.family != "bert" and site.endswith("_pre"):
        return 2 * layer + 2.5
    return 2 * layer + 2


def _neuron_value(subject, layer: int):
    """The nnsight proxy of block ``layer``'s neurons."""
    *path, end = _family_neurons(subject.spec).split(".")
    if end not in ("input", "output"):
        raise ConfigError(f"Family.neurons {subject.spec.family_spec.neurons!r} must end in .input or .output")
    node = blocks(subject)[layer]
    for part in path:
        node = getattr(node, part)
    return getattr(node, end)


def capture_with_neurons(
    subject,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    sites: Sequence[str],
    layers: Sequence[int],
) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
    """``({site: [batch, seq, d_model]}, {layer: [batch, seq, n_neurons]})`` from one forward pass
    that stops after the last thing read. Sites are post-processed as
    :func:`~helpers.subject.capture.capture_residuals` does (centred where the subject is)."""
    import nnsight

    spec = subject.spec
    n = spec.n_layers
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad:
        raise ConfigError(f"model {spec.name!r} has blocks 0..{n - 1}: no block(s) {bad}")
    if not sites and not layers:
        raise ConfigError("no sites and no neuron layers asked for")
    items = [(_order(spec, s), "site", s) for s in dict.fromkeys(sites)]
    items += [(2 * layer + 1, "neurons", layer) for layer in dict.fromkeys(layers)]
    items.sort(key=lambda item: item[0])  # nnsight reads modules in forward order
    with torch.no_grad():
        with subject.model.trace(**trace_inputs(subject, input_ids, attention_mask)) as tracer:
            saved = nnsight.save([_site_value(subject, name) if kind == "site" else _neuron_value(subject, name)
                                  for _, kind, name in items])
            tracer.stop()
    acts = {name: _postprocess(subject.centered, v) for (_, kind, name), v in zip(items, saved) if kind == "site"}
    neurons = {name: v for (_, kind, name), v in zip(items, saved) if kind == "neurons"}
    return {s: acts[s] for s in sites}, {layer: neurons[layer] for layer in layers}
