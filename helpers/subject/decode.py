"""What a feature edit adds to the residual stream: the SAE's own ``decode(f') - decode(f)``.

Every intervention (steering, clamping, ablation, the deactivation test of the matching
methods) changes codes ``f -> f'`` of one SAE and adds ``sae.decode(f') - sae.decode(f)`` to
the stream, so the SAE's error and every other feature stay as they were. sae_lens (6.x)
decodes, for every architecture that reconstructs its own input (standard, topk, abstopk,
jumprelu, gated, matching_pursuit; batchtopk and matryoshka before they are saved as jumprelu):

    decode(f) = norm_out(lin(f) + b_dec)
    lin(f)    = f @ W_dec, or (f / ||W_dec||) @ W_dec with ``rescale_acts_by_decoder_norm``

where ``norm_out`` undoes, as ``y * s + mu``, the run-time input normalisation of the token that
``encode`` read. Two decodes of one token therefore differ by ``s * lin(f' - f)``:

- :func:`decoded_rows`: ``lin`` of one unit of each feature;
- :func:`decoder_scale`: the token's ``s``;
- :func:`decode_delta`: their product for a change of one feature, what every edit adds.

:func:`check_decode` compares that with the SAE's own ``decode`` when SAEs load and refuses an
SAE it does not match (a transcoder writes another site; a temporal SAE's ``decode`` leaves out
its predicted codes).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def decoded_rows(sae, features: torch.Tensor) -> torch.Tensor:
    """``[K, d_in]``: what one unit of each of ``features`` (``[K]``) adds to the SAE's decode,
    before the normalisation is undone: ``W_dec[f]``, over its norm when the SAE's config has
    ``rescale_acts_by_decoder_norm`` (sae_lens' ``act_times_W_dec``)."""
    rows = sae.W_dec[features]
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        rows = rows * (1 / rows.norm(dim=-1, keepdim=True))
    return rows


def decoder_scale(sae, x: torch.Tensor) -> torch.Tensor | None:
    """The per-token factor ``[..., 1]`` by which sae_lens' ``decode`` carries a change of the SAE's
    reconstruction back to the activations ``x`` ``[..., d_in]`` the SAE read; None where it is 1.

    A run-time normalisation divides the input by a per-token scale and ``decode`` multiplies it
    back (the mean that ``layer_norm`` adds back cancels in a difference): ``||x|| / sqrt(d_in)``
    for ``constant_norm_rescale``, ``std(x)`` (unbiased, without the 1e-5) for ``layer_norm``.
    """
    norm = getattr(sae.cfg, "normalize_activations", "none")
    if norm == "constant_norm_rescale":
        x = x.to(sae.W_dec.dtype)
        return 1 / ((sae.cfg.d_in**0.5) / x.norm(dim=-1, keepdim=True))
    if norm == "layer_norm":
        x = x.to(sae.W_dec.dtype)
        return (x - x.mean(dim=-1, keepdim=True)).std(dim=-1, keepdim=True)
    return None


def decode_delta(sae, features: torch.Tensor, change: torch.Tensor,
                 scale: torch.Tensor | None = None) -> torch.Tensor:
    """The residual-stream change ``[K, ..., d_in]`` of changing feature ``features[i]`` by
    ``change[i]`` (``[K, ...]``, e.g. one value per token): ``decode(f') - decode(f)``.

    ``scale``: :func:`decoder_scale` of the tokens the SAE read, broadcastable to
    ``[K, ..., 1]`` (None: an SAE without a run-time normalisation).
    """
    rows = decoded_rows(sae, features)
    delta = change.unsqueeze(-1) * rows.view(rows.shape[0], *([1] * (change.ndim - 1)), rows.shape[-1])
    return delta if scale is None else delta * scale


@torch.no_grad()
def check_decode(sae, what: str, n_tokens: int = 4) -> None:
    """Refuse, in one line, an SAE whose ``decode`` an edit computed by :func:`decode_delta` would
    not reproduce: on a few random tokens, one feature each is changed and
    ``decode(f') - decode(f)`` (each decode right after its ``encode``, as sae_lens' forward pass
    does) must equal :func:`decode_delta` to the precision of the SAE's dtype."""
    arch = sae.cfg.architecture() if hasattr(sae.cfg, "architecture") else type(sae).__name__
    W = sae.W_dec
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(n_tokens, sae.cfg.d_in, generator=g) + 0.5).to(W.device, W.dtype)
    live = torch.nonzero(W.norm(dim=-1) > 0).flatten().cpu()  # a zero row decodes nothing
    feats = live[torch.randint(len(live), (n_tokens,), generator=g)].to(W.device) if len(live) else live
    rows = torch.arange(n_tokens, device=W.device)
    try:
        if hasattr(sae.cfg, "d_out"):  # a transcoder decodes into another site than the one it reads
            raise ValueError(sae.cfg.d_out)
        scale = decoder_scale(sae, x)
        unit = decode_delta(sae, feats, torch.ones(n_tokens, device=W.device, dtype=W.dtype), scale)
        change = x.norm(dim=-1) / unit.norm(dim=-1)  # an edit as large as the token itself
        got = decode_delta(sae, feats, change, scale)
        f = sae.encode(x)
        clean = sae.decode(f)
        edited = f.clone()
        edited[rows, feats] += change
        sae.encode(x)  # a normalising SAE's decode reads the scale its last encode stored
        after = sae.decode(edited)
        tol = 1e-4 if W.dtype in (torch.float32, torch.float64) else 2e-2
        size = torch.maximum(clean.abs().max(), after.abs().max())
        ok = after.shape == got.shape and bool(((after - clean) - got).abs().max() <= tol * size)
    except Exception:  # noqa: BLE001 - any failure to encode or decode a token is a refusal
        ok = False
    if not ok:
        raise ConfigError(
            f"{what} ({arch}) does not decode a feature edit as decode(f') - decode(f) = the edited "
            "feature's decoder row (over its norm with rescale_acts_by_decoder_norm) times the token's "
            "normalisation scale, so steering and ablation would be wrong: use an SAE that reconstructs "
            "its own site (standard, topk, abstopk, jumprelu, gated or matching_pursuit)"
        )
