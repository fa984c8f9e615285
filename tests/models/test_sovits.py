"""Behaviour of the SoVITS generator beyond the recorded fixtures (tiny random model)."""

from __future__ import annotations

import pytest
import torch

from voicefleet.models.builders import sovits_tiny, sovits_tiny_config
from voicefleet.models.config import ConfigError, SoVITSConfig
from voicefleet.models.modules.attention import ConvAttention


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = sovits_tiny().eval()
    torch.nn.init.normal_(m.quantizer.codebook.embed)
    m.quantizer.codebook.inited.fill_(1)
    # A fresh flow is the identity (zero-initialised output convs); perturb it so tests see it.
    for layer in m.flow.flows:
        torch.nn.init.normal_(layer.post.weight, std=0.05)
    return m


def _inputs(b=2, t=40, n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    spec_channels = sovits_tiny_config().audio.spec_channels
    return (torch.randn(b, 768, t, generator=g), torch.rand(b, spec_channels, t, generator=g),
            torch.randint(0, 732, (b, n), generator=g))


def test_relative_attention_matches_explicit_sum():
    """The banded gather/scatter form equals the textbook definition of relative attention."""
    torch.manual_seed(0)
    attn = ConvAttention(8, 8, 2, window_size=2).eval()
    x = torch.randn(1, 8, 7)
    out = attn(x, x)
    q = attn._heads(attn.conv_q(x)) / 2.0
    k, v = attn._heads(attn.conv_k(x)), attn._heads(attn.conv_v(x))
    t, w = 7, 2
    scores = torch.zeros(1, 2, t, t)
    for i in range(t):
        for j in range(t):
            rel = attn.emb_rel_k[0, j - i + w] if abs(j - i) <= w else torch.zeros(4)
            scores[:, :, i, j] = (q[:, :, i] * (k[:, :, j] + rel)).sum(-1)
    p = scores.softmax(-1)
    expected = torch.zeros(1, 2, t, 4)
    for i in range(t):
        for j in range(t):
            rel = attn.emb_rel_v[0, j - i + w] if abs(j - i) <= w else torch.zeros(4)
            expected[:, :, i] += p[:, :, i, j, None] * (v[:, :, j] + rel)
    expected = attn.conv_o(expected.transpose(2, 3).reshape(1, 8, t))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_training_step_reaches_trainable_parts_only(model):
    ssl, spec, text = _inputs()
    model.train()
    try:
        out = model(ssl, spec, torch.tensor([40, 36]), text, torch.tensor([12, 9]))
        loss = out.wave.abs().mean() + (out.z_p - out.prior_mean).pow(2).mean()
        loss.backward()
    finally:
        model.eval()
    cfg = model.config
    assert out.wave.shape == (2, 1, cfg.segment_size)
    assert model.text_encoder.text_embedding.weight.grad is not None
    assert model.decoder.conv_pre.weight.grad is not None
    assert model.posterior_encoder.pre.weight.grad is not None
    # the frozen content path gets no gradient and keeps its codebook unchanged
    assert model.ssl_proj.weight.grad is None
    assert float(out.commit_loss) == 0.0
    model.zero_grad(set_to_none=True)


def test_batched_decode_equals_per_row_decode(model):
    """Padding a shorter row to the batch does not change its valid samples."""
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 1024, (1, 2, 15), generator=g)
    text = torch.randint(0, 732, (2, 10), generator=g)
    code_lengths, text_lengths = torch.tensor([15, 11]), torch.tensor([10, 7])
    ref = torch.rand(1, sovits_tiny_config().audio.spec_channels, 30, generator=g)
    ge = model.style(ref)
    batch = model.decode(codes, text, None, noise_scale=0.0, ge=ge, code_lengths=code_lengths,
                         text_lengths=text_lengths)
    hop = model.config.audio.hop_length
    for i in range(2):
        n_codes, n_text = int(code_lengths[i]), int(text_lengths[i])
        single = model.decode(codes[:, i:i + 1, :n_codes], text[i:i + 1, :n_text], ref, noise_scale=0.0)
        valid = 2 * n_codes * hop
        # the decoder's receptive field sees a few padded frames at the end of a shorter row
        margin = 0 if n_codes == codes.shape[-1] else 4 * hop
        torch.testing.assert_close(batch[i, :, : valid - margin], single[0, :, : valid - margin],
                                   atol=1e-4, rtol=1e-4)


def test_generator_makes_noise_reproducible(model):
    codes = torch.randint(0, 1024, (1, 1, 10))
    text = torch.randint(0, 732, (1, 8))
    ref = torch.rand(1, sovits_tiny_config().audio.spec_channels, 20)
    a = model.decode(codes, text, ref, generator=torch.Generator().manual_seed(7))
    b = model.decode(codes, text, ref, generator=torch.Generator().manual_seed(7))
    c = model.decode(codes, text, ref, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_prepare_for_inference_keeps_outputs(model):
    codes = torch.randint(0, 1024, (1, 1, 10))
    text = torch.randint(0, 732, (1, 8))
    ref = torch.rand(1, sovits_tiny_config().audio.spec_channels, 20)
    before = model.decode(codes, text, ref, noise_scale=0.0)
    # a fresh instance, not copy.deepcopy: deep copies of parametrized modules share their class
    folded = sovits_tiny()
    folded.load_state_dict(model.state_dict())
    folded.prepare_for_inference()
    assert not any("parametrizations" in k for k in folded.state_dict())
    torch.testing.assert_close(folded.decode(codes, text, ref, noise_scale=0.0), before, atol=1e-5, rtol=1e-5)


def test_speed_changes_length(model):
    codes = torch.randint(0, 1024, (1, 1, 20))
    text = torch.randint(0, 732, (1, 8))
    ref = torch.rand(1, sovits_tiny_config().audio.spec_channels, 20)
    hop = model.config.audio.hop_length
    assert model.decode(codes, text, ref, speed=1.0).shape[-1] == 40 * hop
    assert model.decode(codes, text, ref, speed=2.0).shape[-1] == (int(40 / 2.0) + 1) * hop


@pytest.mark.parametrize("bad", [dict(version="v3"), dict(semantic_frame_rate="50hz"), dict(resblock="2"),
                                 dict(hidden_channels=33), dict(upsample_rates=(10, 8, 2, 2, 4))])
def test_invalid_configs_fail_early(bad):
    with pytest.raises(ConfigError):
        SoVITSConfig(**bad)


def test_official_config_round_trip():
    cfg = SoVITSConfig()
    again = SoVITSConfig.from_official(cfg.to_official_model())
    assert again == cfg
    with pytest.raises(ConfigError, match="unknown"):
        SoVITSConfig.from_official({**cfg.to_official_model(), "hiden_channels": 3})
