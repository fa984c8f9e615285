"""Synthesis with a v2ProPlus voice: the reference's speaker-verification embedding, as officially computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voicefleet.inference.pipeline import SynthesisError, SynthesisParams, Synthesizer
from voicefleet.models.audio import load_audio
from voicefleet.models.checkpoint.speaker_io import load_speaker_verifier
from voicefleet.models.speaker_frontend import kaldi_fbank, resample


@pytest.fixture(scope="module")
def synth(tiny_pretrained_v2proplus):
    return Synthesizer.from_pretrained(tiny_pretrained_v2proplus)


@pytest.fixture(scope="module")
def voice(synth, tiny_pretrained_v2proplus, reference_wav):
    paths = tiny_pretrained_v2proplus
    return synth.load_voice("pro", paths.gpt, paths.sovits_g, reference_wav, "今天天气很好。", "zh")


def test_reference_embedding_follows_the_official_chain(voice, tiny_pretrained_v2proplus, reference_wav):
    """32 kHz reference (peak-limited) -> 16 kHz -> fbank -> ERes2NetV2 feature-map embedding."""
    assert voice.sovits.config.version == "v2ProPlus"
    wave32 = torch.from_numpy(load_audio(reference_wav, 32000)).unsqueeze(0)
    if wave32.abs().max() > 1:
        wave32 = wave32 / min(2.0, float(wave32.abs().max()))
    feats = kaldi_fbank(resample(wave32, 32000, 16000)[0]).unsqueeze(0)
    verifier = load_speaker_verifier(tiny_pretrained_v2proplus.sv)
    with torch.no_grad():
        expected = verifier.feature_map_embedding(feats)
    assert voice.reference.sv is not None and voice.reference.sv.shape == (1, voice.sovits.config.sv_embedding_dim)
    torch.testing.assert_close(voice.reference.sv, expected)


def test_seeded_synthesis_uses_the_embedding(synth, voice):
    params = SynthesisParams(seed=5, max_tokens=20)
    first = synth.synthesize(voice, "你好。", "zh", params)
    again = synth.synthesize(voice, "你好。", "zh", params)
    assert first.dtype == np.float32 and np.abs(first).max() > 0
    np.testing.assert_array_equal(first, again)
    original = voice.reference.sv
    try:
        voice.reference.sv = original + 1.0
        moved = synth.synthesize(voice, "你好。", "zh", params)
    finally:
        voice.reference.sv = original
    assert moved.shape != first.shape or not np.array_equal(moved, first)


def test_v2pro_voice_without_the_network_fails_clearly(tiny_pretrained_v2proplus, reference_wav):
    paths = tiny_pretrained_v2proplus
    bare = Synthesizer(Synthesizer.from_pretrained(paths).hubert)
    with pytest.raises(SynthesisError, match=r"v2Pro/v2ProPlus voices need the speaker-verification network"):
        bare.load_voice("pro", paths.gpt, paths.sovits_g, reference_wav)


def test_fast_precision_serves_a_v2pro_voice(tiny_pretrained_v2proplus, reference_wav):
    """The fast path only changes the GPT and the HiFi-GAN decoder; the style mixing stays fp32."""
    paths = tiny_pretrained_v2proplus
    fast = Synthesizer.from_pretrained(paths, precision="fast")
    voice = fast.load_voice("pro", paths.gpt, paths.sovits_g, reference_wav, "", "zh")
    assert voice.reference.sv is not None
    audio = fast.synthesize(voice, "你好。", "zh", SynthesisParams(seed=1, max_tokens=20))
    assert np.isfinite(audio).all() and len(audio) > 0
