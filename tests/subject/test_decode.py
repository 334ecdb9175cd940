"""Every feature edit equals sae_lens' own ``decode(f') - decode(f)``, for every architecture sae_lens
decodes with, each flag that changes its decode and each run-time normalisation, on decoder rows
whose norms are far from 1."""

import pytest
import torch

from helpers.errors import ConfigError
from helpers.interventions.edits import feature_delta
from helpers.subject.decode import check_decode, decode_delta, decoder_scale
from helpers.subject.saes import check_saes

from ..conftest import make_random_arch_sae

D_IN, D_SAE = 16, 24
#: (architecture, config flags): every inference architecture of sae_lens 6.x that reconstructs its
#: own input, and batchtopk (a training class, saved as jumprelu) with its decoder-norm flag
CASES = [
    ("standard", {}), ("jumprelu", {}), ("gated", {}), ("matching_pursuit", {"max_iterations": 4}),
    ("topk", {"rescale_acts_by_decoder_norm": False}), ("topk", {"rescale_acts_by_decoder_norm": True}),
    ("abstopk", {"rescale_acts_by_decoder_norm": False}), ("abstopk", {"rescale_acts_by_decoder_norm": True}),
    ("batchtopk", {"rescale_acts_by_decoder_norm": True}),
]
NORMS = ("none", "layer_norm", "constant_norm_rescale")


def non_unit_sae(architecture, flags, normalize="none", b_dec_in=True, seed=0, d_in=D_IN, d_sae=D_SAE):
    """A random SAE whose decoder rows have norms between 0.2 and 3."""
    sae = make_random_arch_sae(architecture, d_in, d_sae, seed, k=4, normalize_activations=normalize,
                               apply_b_dec_to_input=b_dec_in, **flags)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_dec.mul_((0.2 + 2.8 * torch.rand(d_sae, generator=g)).unsqueeze(1) / sae.W_dec.norm(dim=1, keepdim=True))
    norms = sae.W_dec.norm(dim=1)
    assert (norms - 1).abs().max() > 1  # non-unit rows: an edit of act * unit row would be wrong
    return sae.eval()


def decoded(sae, x, codes):
    """sae_lens' decode of ``codes`` for the tokens ``x`` (a normalising SAE's decode reads the
    scale of the last encode, as in its forward pass)."""
    sae.encode(x)
    return sae.decode(codes)


def tokens(seed=1, shape=(2, 10)):
    return 3 * torch.randn(*shape, D_IN, generator=torch.Generator().manual_seed(seed)) + 0.5


@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("b_dec_in", [True, False])
@pytest.mark.parametrize("architecture,flags", CASES, ids=[a + ("-rescale" if f.get("rescale_acts_by_decoder_norm")
                                                                 else "") for a, f in CASES])
@torch.no_grad()
def test_every_edit_equals_sae_lens_decode(architecture, flags, b_dec_in, normalize):
    sae = non_unit_sae(architecture, flags, normalize, b_dec_in)
    x = tokens()
    f = sae.encode(x)
    assert (f != 0).any(-1).all()  # every token has codes: ablations change something
    clean = decoded(sae, x, f)
    # steering, clamping and ablation of one feature per row (what run_with_edits adds)
    feats = f.abs().sum(1).argmax(-1)  # a feature that fires in each row
    for mode, value in (("ablate", 0.0), ("add", 2.5), ("clamp", -1.5)):
        delta = feature_delta(sae, x, False, feats, [mode, mode], torch.tensor([value, value]))
        edited = f.clone()
        for r in range(2):
            edited[r, :, feats[r]] = {"ablate": 0.0, "clamp": value}.get(mode, f[r, :, feats[r]] + value)
        expected = decoded(sae, x, edited) - clean
        torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
        assert expected.abs().max() > 1e-2
    # the batched ablations of the causal tests: K features, each ablated on its own copy [K, n, T]
    chunk = torch.tensor([int(feats[0]), int(feats[1]), 5])
    delta = decode_delta(sae, chunk, -f[:, :, chunk].permute(2, 0, 1), decoder_scale(sae, x))
    for i, a in enumerate(chunk):
        edited = f.clone()
        edited[:, :, a] = 0
        torch.testing.assert_close(delta[i], decoded(sae, x, edited) - clean, rtol=1e-4,
                                   atol=1e-5 * float(delta.abs().max()))
    # the old formula act * W_dec[a] is wrong wherever the decoder norm or a normalisation enters
    naive = -f[:, :, chunk].permute(2, 0, 1).unsqueeze(-1) * sae.W_dec[chunk].view(3, 1, 1, -1)
    assert torch.allclose(naive, delta, rtol=1e-4, atol=1e-6) == (
        normalize == "none" and not flags.get("rescale_acts_by_decoder_norm"))
    check_decode(sae, "the SAE")  # and the check at load time accepts it


def test_unit_rows_give_the_edits_they_gave_before():
    """The project's trained TopK SAEs have unit rows and no normalisation: exactly act * W_dec[a]."""
    sae = make_random_arch_sae("topk", D_IN, D_SAE, k=4)
    with torch.no_grad():
        sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
        x = tokens()
        f = sae.encode(x)
        feats = torch.tensor([3, 7])
        delta = feature_delta(sae, x, False, feats, ["ablate", "ablate"], torch.zeros(2))
    assert torch.equal(delta, -f[torch.arange(2), :, feats].unsqueeze(-1) * sae.W_dec[feats].unsqueeze(1))


class DoublingSAE(__import__("sae_lens").StandardSAE):
    """A future architecture whose decode the helpers do not know."""

    def decode(self, feature_acts):
        return 2 * super().decode(feature_acts)


def test_an_sae_whose_decode_the_edits_do_not_reproduce_is_refused():
    import sae_lens

    odd = DoublingSAE(sae_lens.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE))
    with pytest.raises(ConfigError, match=r"^the SAE for site 'x' \(standard\) does not decode a feature edit as "
                                          r"decode\(f'\) - decode\(f\)") as info:
        check_saes({"x": odd}, D_IN)
    assert "\n" not in str(info.value)
    for d_out in (D_IN, D_IN + 4):  # a transcoder writes another site, even with d_out = d_in
        transcoder = sae_lens.Transcoder(sae_lens.saes.transcoder.TranscoderConfig(
            d_in=D_IN, d_sae=D_SAE, d_out=d_out, apply_b_dec_to_input=False))
        with pytest.raises(ConfigError, match=r"\(transcoder\) does not decode"):
            check_decode(transcoder, "the SAE for site 'x'")
    check_saes({"a": non_unit_sae("topk", {"rescale_acts_by_decoder_norm": True}, "layer_norm"),
                "b": non_unit_sae("gated", {}, "constant_norm_rescale")}, D_IN)  # accepted
