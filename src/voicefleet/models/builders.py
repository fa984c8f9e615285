"""Model builders: one logic-free function per size. Full size = the official numbers.

`tiny` sizes are the reduced configs of the compatibility fixtures: small enough for unit tests
and CPU demos, built by the same code paths as the full models. The tiny v2Pro/v2ProPlus
generators also narrow the MRTE to 48 (officially 512, independent of `gin_channels`), as the
fixtures do.
"""

from __future__ import annotations

from voicefleet.models.config import V2PRO_MODEL, SoVITSConfig, SpeakerVerifierConfig
from voicefleet.models.sovits import SoVITS
from voicefleet.models.speaker import ERes2NetV2

_TINY = dict(inter_channels=16, hidden_channels=32, filter_channels=64, n_heads=2, n_layers=2, kernel_size=3,
             gin_channels=32)


def sovits_v2_config() -> SoVITSConfig:
    return SoVITSConfig()


def sovits_v2pro_config() -> SoVITSConfig:
    """Official `s2v2Pro.json`: v2 with gin 1024, no dropout, and the speaker-verification input."""
    return SoVITSConfig(version="v2Pro", **V2PRO_MODEL["v2Pro"])


def sovits_v2proplus_config() -> SoVITSConfig:
    """Official `s2v2ProPlus.json`: v2Pro with a wider decoder (768 channels, first kernel 20)."""
    return SoVITSConfig(version="v2ProPlus", **V2PRO_MODEL["v2ProPlus"])


def sovits_tiny_config() -> SoVITSConfig:
    return SoVITSConfig(**_TINY, upsample_initial_channel=64)


def sovits_tiny_v2pro_config() -> SoVITSConfig:
    return SoVITSConfig(**_TINY, version="v2Pro", p_dropout=0.0, upsample_initial_channel=64,
                        mrte_hidden_channels=48)


def sovits_tiny_v2proplus_config() -> SoVITSConfig:
    return SoVITSConfig(**_TINY, version="v2ProPlus", p_dropout=0.0, upsample_initial_channel=96,
                        upsample_kernel_sizes=(20, 16, 8, 2, 2), mrte_hidden_channels=48)


SOVITS_CONFIGS = {
    ("full", "v2"): sovits_v2_config, ("full", "v2Pro"): sovits_v2pro_config,
    ("full", "v2ProPlus"): sovits_v2proplus_config, ("tiny", "v2"): sovits_tiny_config,
    ("tiny", "v2Pro"): sovits_tiny_v2pro_config, ("tiny", "v2ProPlus"): sovits_tiny_v2proplus_config,
}


def sovits_v2() -> SoVITS:
    return SoVITS(sovits_v2_config())


def sovits_tiny() -> SoVITS:
    return SoVITS(sovits_tiny_config())


def speaker_verifier_config() -> SpeakerVerifierConfig:
    """`pretrained_eres2netv2w24s4ep4.ckpt`: 53,513,632 parameters, 20480-d feature-map embedding."""
    return SpeakerVerifierConfig()


def speaker_verifier_tiny_config() -> SpeakerVerifierConfig:
    """The reduced ERes2NetV2 of the fixtures: 2560-d feature-map embedding."""
    return SpeakerVerifierConfig(m_channels=8, num_blocks=(2, 2, 2, 2), embedding_size=32)


def speaker_verifier() -> ERes2NetV2:
    return ERes2NetV2(speaker_verifier_config())


def speaker_verifier_tiny() -> ERes2NetV2:
    return ERes2NetV2(speaker_verifier_tiny_config())
