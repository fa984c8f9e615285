"""VITS losses against the official s2 training step (compat `s2.npz`, README section 6.4)."""

from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import assert_close
from voicefleet.models.audio import mel_spectrogram, spec_to_mel
from voicefleet.models.checkpoint.discriminator_io import load_discriminator
from voicefleet.models.config import AudioConfig, DiscriminatorConfig
from voicefleet.models.losses import discriminator_loss, feature_loss, generator_loss, kl_loss, mel_l1

LOSS_TOL = dict(atol=0.0, rtol=1e-4)  # compat README section 8: losses rtol 1e-4
MEL_TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def train_cfg(compat_configs) -> dict:
    return compat_configs["s2_config"]["train"]


@pytest.fixture(scope="module")
def audio_cfg(compat_configs) -> AudioConfig:
    return AudioConfig.from_official(compat_configs["s2_config"]["data"])


def _scores(s2: dict, prefix: str) -> list[torch.Tensor]:
    n = len([k for k in s2 if re.fullmatch(prefix + r"\d+", k)])
    return [s2[f"{prefix}{i}"] for i in range(n)]


def test_discriminator_loss(s2):
    real, fake = _scores(s2, "tr_y_d_r_"), _scores(s2, "tr_y_d_g_")
    total, real_parts, fake_parts = discriminator_loss(real, fake)
    assert_close(total, s2["loss_disc"], **LOSS_TOL, name="loss_disc")
    assert_close(torch.stack(real_parts), s2["losses_disc_r"], **LOSS_TOL, name="losses_disc_r")
    assert_close(torch.stack(fake_parts), s2["losses_disc_g"], **LOSS_TOL, name="losses_disc_g")


def test_generator_loss(s2):
    total, parts = generator_loss(_scores(s2, "tr_y_d_g_"))
    assert_close(total, s2["loss_gen"], **LOSS_TOL, name="loss_gen")
    assert_close(torch.stack(parts), s2["losses_gen"], **LOSS_TOL, name="losses_gen")


def test_kl_loss(s2, train_cfg):
    loss = kl_loss(s2["tr_z_p"], s2["tr_logs_q"], s2["tr_m_p"], s2["tr_logs_p"], s2["tr_y_mask"]) * train_cfg["c_kl"]
    assert_close(loss, s2["loss_kl"], **LOSS_TOL, name="loss_kl")


def test_mel_loss(s2, train_cfg):
    loss = mel_l1(s2["tr_y_mel"], s2["tr_y_hat_mel"]) * train_cfg["c_mel"]
    assert_close(loss, s2["loss_mel"], **LOSS_TOL, name="loss_mel")


def test_training_mels_from_front_end(s2, train_cfg, audio_cfg):
    """The two mels of the s2 step: target from the sliced spectrogram, prediction from y_hat."""
    frames = train_cfg["segment_size"] // audio_cfg.hop_length
    mel = spec_to_mel(s2["tr_spec"], audio_cfg)
    target = torch.stack([mel[b, :, int(start):int(start) + frames] for b, start in enumerate(s2["tr_ids_slice"])])
    assert_close(target, s2["tr_y_mel"], **MEL_TOL, name="tr_y_mel")
    assert_close(mel_spectrogram(s2["tr_y_hat"].squeeze(1), audio_cfg), s2["tr_y_hat_mel"], **MEL_TOL,
                 name="tr_y_hat_mel")


def test_feature_loss_with_tiny_discriminator(s2, compat_dir, compat_configs):
    override = compat_configs["discriminator_override"]
    config = DiscriminatorConfig(s_channels=tuple(override["s_channels"]), p_channels=tuple(override["p_channels"]))
    model = load_discriminator(compat_dir / "tiny_s2D.pth", config).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(s2["tr_y_seg"], s2["tr_y_hat"])
    for i, (real, fake) in enumerate(zip(_scores(s2, "tr_y_d_r_"), _scores(s2, "tr_y_d_g_"))):
        assert_close(out.real_scores[i], real, atol=1e-4, rtol=1e-4, name=f"tr_y_d_r_{i}")
        assert_close(out.fake_scores[i], fake, atol=1e-4, rtol=1e-4, name=f"tr_y_d_g_{i}")
    assert_close(feature_loss(out.real_features, out.fake_features), s2["loss_fm"], **LOSS_TOL, name="loss_fm")


def test_total_generator_loss(s2):
    total = s2["loss_gen"] + s2["loss_fm"] + s2["loss_mel"] + s2["tr_kl_ssl"] + s2["loss_kl"]
    assert_close(total, s2["loss_gen_all"], **LOSS_TOL, name="loss_gen_all")


def test_gradients_flow_as_officially():
    torch.manual_seed(0)
    real = [torch.randn(2, 5, requires_grad=True)]
    fake = [torch.randn(2, 5, requires_grad=True)]
    feature_loss([real], [fake]).backward()
    assert real[0].grad is None and fake[0].grad is not None

    total, real_parts, fake_parts = discriminator_loss(real, fake)
    assert total.requires_grad and not real_parts[0].requires_grad and not fake_parts[0].requires_grad


def test_half_inputs_are_computed_in_float32(s2):
    scores = [t.half() for t in _scores(s2, "tr_y_d_g_")]
    total, _ = generator_loss(scores)
    assert total.dtype == torch.float32
    assert torch.equal(total, generator_loss([t.float() for t in scores]).total)
    assert kl_loss(*(s2[k].half() for k in ("tr_z_p", "tr_logs_q", "tr_m_p", "tr_logs_p", "tr_y_mask"))).dtype == torch.float32


def test_mel_l1_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="mel shapes differ"):
        mel_l1(torch.zeros(1, 4, 3), torch.zeros(1, 4, 2))
