"""Which components of a block erase a feature? The change of a feature's read-out, split exactly.

For a feature ``f`` of the SAE at ``resid_post`` of layer ``L``, its **read-out** on a residual vector
``x`` is the SAE encoder's pre-activation, ``e_f . (x - b_dec) + b_enc[f]`` (``e_f`` the encoder's column
``f``). Between ``resid_post L`` and ``resid_post L+1`` the stream changes by the writes of block ``L+1``,
so the read-out changes by ``e_f . (x_{L+1} - x_L)``, which splits into the block's additive writes:

- **attention heads**: ``o_proj`` is a sum over heads of ``W_O[:, head] z_head``. In Gemma 2 and 3 the
  attention output passes the post-attention RMSNorm, ``y = v / rms(v) * (1 + w)``, whose per-token scale
  ``1 / rms(v)`` is one number per token: for a given token the norm is linear, so each head's share is
  ``e_f . (W_O[:, head] z_head) (1 + w) / rms(v)``;
- **MLP neurons**: ``down_proj`` is a sum over neurons of ``W_down[:, n] a_n``, through the
  post-feedforward RMSNorm the same way;
- the **remainder**: the total change minus those parts (biases, where a block has them; float error).

:func:`readout_change` returns, per token, the total change and every head's and neuron's part (the
parts sum to the total); :func:`erasure_sums` the same summed over the tokens where each feature fires,
for many features at once, which is what the eraser analysis reads. Families with the sandwich norms
(Gemma 2, Gemma 3) and with plain residual writes (Llama, Qwen) are supported; others are refused in
one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError

#: families whose blocks write ``x + norm(attn)`` and ``x + norm(mlp)`` (sandwich norms)
SANDWICH = ("gemma2", "gemma3")
#: families whose blocks write ``x + o_proj(...)`` and ``x + down_proj(...)``
PLAIN = ("llama", "qwen2", "qwen3")


@dataclass
class BlockWrites:
    """What block ``L+1`` wrote on a batch, per token: the heads' inputs to ``o_proj`` ``z`` ``[n, H, dh]``,
    the neurons ``a`` ``[n, m]``, each norm's per-token scale ``[n]`` (1 without norms), and the stream
    before and after the block ``[n, d]``."""

    z: torch.Tensor
    attn_scale: torch.Tensor
    neurons: torch.Tensor
    mlp_scale: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor


def _layers(subject):
    from ..subject.capture import block_path

    node = subject.hf_model
    for part in block_path(subject.hf_model, subject.spec).split("."):
        node = getattr(node, part)
    return node


def _check_family(subject) -> None:
    if subject.spec.family not in SANDWICH + PLAIN:
        raise ConfigError(f"the erasure decomposition reads Gemma- and Llama-style blocks, not {subject.spec.family!r}: "
                          f"use a model of the families {SANDWICH + PLAIN}")


def _rms_scale(norm: torch.nn.Module, v: torch.Tensor) -> torch.Tensor:
    """``1 / rms(v)`` per token, as the RMSNorm computes it (in float32)."""
    return torch.rsqrt(v.float().pow(2).mean(-1) + norm.eps)


@torch.no_grad()
def block_writes(subject, layer: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_mask: torch.Tensor) -> BlockWrites:
    """Run the model up to block ``layer`` (the block after ``resid_post layer - 1``) and record its writes
    at the counted tokens (``token_mask``)."""
    _check_family(subject)
    layers = _layers(subject)
    if not 1 <= layer < len(layers):
        raise ConfigError(f"layer {layer}: the block after a resid_post site must be 1..{len(layers) - 1}")
    block = layers[layer]
    attn, mlp = block.self_attn, block.mlp
    seen: dict[str, Any] = {}

    class _Stop(Exception):
        pass

    hooks = [
        attn.o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("z", a[0])),
        mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("a", a[0])),
        block.register_forward_pre_hook(lambda m, a, kw: seen.__setitem__("before", a[0] if a else kw["hidden_states"]),
                                        with_kwargs=True),
    ]
    if subject.spec.family in SANDWICH:
        hooks += [block.post_attention_layernorm.register_forward_pre_hook(lambda m, a: seen.__setitem__("va", a[0])),
                  block.post_feedforward_layernorm.register_forward_pre_hook(lambda m, a: seen.__setitem__("vm", a[0]))]

    def stop(module, args, output):
        seen["after"] = output[0] if isinstance(output, tuple) else output
        raise _Stop

    hooks.append(block.register_forward_hook(stop))
    try:
        subject.hf_model(input_ids=input_ids.to(subject.device), attention_mask=attention_mask.to(subject.device))
    except _Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
    mask = token_mask.to(seen["z"].device).bool()
    heads = attn.config.num_attention_heads if hasattr(attn, "config") else attn.num_heads
    z = seen["z"][mask].float()
    n = z.shape[0]
    one = torch.ones(n, device=z.device)
    if subject.spec.family in SANDWICH:
        attn_scale = _rms_scale(block.post_attention_layernorm, seen["va"][mask])
        mlp_scale = _rms_scale(block.post_feedforward_layernorm, seen["vm"][mask])
    else:
        attn_scale = mlp_scale = one
    return BlockWrites(z.view(n, heads, -1), attn_scale, seen["a"][mask].float(), mlp_scale,
                       seen["before"][mask].float(), seen["after"][mask].float())


def _gains(subject, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 + w)`` of the post-attention and post-feedforward norms (ones without sandwich norms)."""
    block = _layers(subject)[layer]
    if subject.spec.family in SANDWICH:
        return (1.0 + block.post_attention_layernorm.weight.float(), 1.0 + block.post_feedforward_layernorm.weight.float())
    d = block.self_attn.o_proj.weight.shape[0]
    one = torch.ones(d, device=block.self_attn.o_proj.weight.device)
    return one, one


def encoder_columns(sae, features: torch.Tensor) -> torch.Tensor:
    """``[d, K]`` the encoder columns of ``features``: the read-out's direction (an SAE that normalises
    its input per token is refused: its read-out is not linear in the stream)."""
    norm = getattr(sae.cfg, "normalize_activations", "none") or "none"
    if norm not in ("none", "expected_average_only_in"):
        raise ConfigError(f"an SAE with normalize_activations={norm!r} reads the stream non-linearly: its read-out "
                          "change does not split over the block's writes")
    return sae.W_enc[:, features].float()


def _projections(subject, sae, layer: int, features: torch.Tensor, writes: BlockWrites
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(E [d, K], P [H, dh, K], G [m, K])``: the read-out directions, and what a unit of each head's
    ``o_proj`` input and of each neuron adds to each read-out (through the norms' gains, before their
    per-token scales)."""
    features = torch.as_tensor(features, device=sae.W_enc.device).long()
    E = encoder_columns(sae, features)  # [d, K]
    block = _layers(subject)[layer]
    g_attn, g_mlp = _gains(subject, layer)
    H, dh = writes.z.shape[1], writes.z.shape[2]
    P = (block.self_attn.o_proj.weight.float().T @ (g_attn[:, None] * E)).view(H, dh, -1)
    G = block.mlp.down_proj.weight.float().T @ (g_mlp[:, None] * E)
    return E, P, G


@torch.no_grad()
def readout_change(subject, sae, layer: int, features: torch.Tensor, writes: BlockWrites) -> dict[str, torch.Tensor]:
    """Per token and feature of the SAE at ``resid_post layer - 1``: ``total`` ``[n, K]`` (the read-out at
    ``resid_post layer`` minus at ``resid_post layer - 1``), ``heads`` ``[n, K, H]``, ``neurons`` ``[n, K, m]``
    and ``remainder`` ``[n, K]`` (total minus the parts)."""
    E, P, G = _projections(subject, sae, layer, features, writes)
    heads = torch.einsum("nhd,hdk->nkh", writes.z, P) * writes.attn_scale[:, None, None]
    neurons = (writes.neurons * writes.mlp_scale[:, None])[:, None, :] * G.T[None, :, :]  # [n, K, m]
    total = (writes.after - writes.before) @ E
    return {"total": total, "heads": heads, "neurons": neurons,
            "remainder": total - heads.sum(-1) - neurons.sum(-1)}


@torch.no_grad()
def erasure_sums(subject, sae, layer: int, features: torch.Tensor, writes: BlockWrites, fires: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """:func:`readout_change` summed over the tokens where each feature fires (``fires`` ``[n, K]`` bool),
    without the ``[n, K, m]`` array: ``total`` ``[K]``, ``heads`` ``[K, H]``, ``neurons`` ``[K, m]``,
    ``remainder`` ``[K]``, ``tokens`` ``[K]``."""
    E, P, G = _projections(subject, sae, layer, features, writes)
    w = fires.float()  # [n, K]
    heads = torch.einsum("nhd,hdk,nk->kh", writes.z, P, w * writes.attn_scale[:, None])
    neurons = ((writes.neurons * writes.mlp_scale[:, None]).T @ w).T * G.T  # [K, m]
    total = (((writes.after - writes.before) @ E) * w).sum(0)
    return {"total": total, "heads": heads, "neurons": neurons,
            "remainder": total - heads.sum(-1) - neurons.sum(-1), "tokens": w.sum(0)}
