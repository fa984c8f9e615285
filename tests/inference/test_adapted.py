"""Adapter voices over one shared backbone: each equals its merged weights, 50 of them synthesise
concurrently without bleeding, the backbone is never copied or changed, a foreign adapter is refused."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from tests.inference.adapter_files import save_random_adapter, write_random_voices
from voicefleet.inference.adapted import Backbone, load_adapter_voice, voice_nbytes
from voicefleet.inference.generation import TokenGenerator
from voicefleet.inference.pipeline import SynthesisParams, Synthesizer, Voice
from voicefleet.models import adapters as lora
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits

N_VOICES = 50
PARAMS = SynthesisParams(max_tokens=8, seed=5, top_k=1)  # greedy: merged vs unmerged may not flip a draw
PHONEMES = [[12, 40, 77, 5, 90, 31, 64, 8]]


@pytest.fixture(scope="module")
def synth(tiny_pretrained):
    return Synthesizer.from_pretrained(tiny_pretrained)


@pytest.fixture(scope="module")
def backbone(tiny_pretrained):
    return Backbone.load(tiny_pretrained)




@pytest.fixture(scope="module")
def adapter_files(tiny_pretrained, tmp_path_factory):
    return write_random_voices(tiny_pretrained, tmp_path_factory.mktemp("adapters"), N_VOICES)


@pytest.fixture(scope="module")
def voices(synth, backbone, adapter_files, reference_wav):
    """The first voices loaded from their files; the rest share their reference clip and transcript
    (its features are the same for every voice), with their own adapters."""
    loaded = [load_adapter_voice(synth, backbone, f"v{i}", gpt=f["gpt"], sovits=f["sovits"], reference=reference_wav,
                                 prompt_text="这是我的声音。", prompt_lang="zh") for i, f in enumerate(adapter_files[:2])]
    first = loaded[0]
    return loaded + [dataclasses.replace(first, name=f"v{i}", adapters=(
        lora.load_adapter(f["gpt"]).build(backbone.gpt, fingerprint=backbone.fingerprints["gpt"], dtype=torch.float16),
        lora.load_adapter(f["sovits"]).build(backbone.sovits, fingerprint=backbone.fingerprints["sovits"],
                                             dtype=torch.float16)))
        for i, f in enumerate(adapter_files) if i >= 2]


def _audio(synth, voice):
    return synth.synthesize_units(voice, synth.phoneme_units(PHONEMES, voice), PARAMS)


def test_an_adapter_voice_equals_its_merged_weights(synth, tiny_pretrained, backbone, voices, adapter_files,
                                                    reference_wav):
    gpt = load_gpt(tiny_pretrained.gpt)[0].eval()
    lora.merge_(gpt, lora.load_adapter(adapter_files[0]["gpt"]).build(gpt))
    sovits = load_sovits(tiny_pretrained.sovits_g).model.prepare_for_inference()
    lora.merge_(sovits, lora.load_adapter(adapter_files[0]["sovits"]).build(sovits))
    merged = Voice("merged", TokenGenerator(gpt), sovits, synth.reference(reference_wav, sovits),
                   voices[0].prompt)
    adapted = _audio(synth, voices[0])
    np.testing.assert_allclose(_audio(synth, merged), adapted, atol=1e-4, rtol=1e-4)
    bare = Voice("bare", backbone.generator, backbone.sovits, voices[0].reference, voices[0].prompt)
    assert not np.allclose(_audio(synth, bare)[: len(adapted)], adapted[: len(_audio(synth, bare))], atol=1e-3)


@pytest.mark.slow
def test_fifty_voices_interleaved_concurrently_each_get_their_own_audio(synth, backbone, voices):
    before = {k: v.clone() for k, v in backbone.gpt.state_dict().items()}
    alone = [_audio(synth, v) for v in voices]
    distinct = {a.tobytes() for a in alone}
    assert len(distinct) == N_VOICES  # every voice sounds different for the same seed
    order = [i for start in (0, 1) for i in range(start, N_VOICES, 2)]  # interleaved, not in loading order
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: (i, _audio(synth, voices[i])), order))
    for i, audio in results:
        np.testing.assert_allclose(audio, alone[i], atol=1e-5, rtol=1e-5, err_msg=f"voice {i}")
    assert all(torch.equal(v, backbone.gpt.state_dict()[k]) for k, v in before.items())  # never merged in
    assert all(v.generator is backbone.generator and v.sovits is backbone.sovits for v in voices)
    # resident adapters stay in the files' float16 (widened per call): a voice holds a few MB at full size
    assert all(p.dtype == torch.float16 for v in voices for a in v.adapters for p in a.parameters())
    assert voice_nbytes(voices[0]) < backbone.nbytes() / 10


def test_a_resident_adapter_voice_keeps_its_reference_style_not_its_spectrogram(synth, backbone, voices,
                                                                                  reference_wav):
    voice = voices[1]
    full = synth.reference(reference_wav, backbone.sovits)  # what the voice was loaded from
    assert voice.reference.spec is None and voice.reference.sv is None
    assert voice.reference.style.shape == (1, backbone.sovits.config.gin_channels, 1)
    assert voice.reference.nbytes() * 50 < full.nbytes()
    assert voice_nbytes(voice) < sum(a.nbytes() for a in voice.adapters) + voice.reference.nbytes() + 64 * 1024
    # the style is what every SoVITS call recomputed from the spectrogram: the audio is unchanged
    uncompacted = dataclasses.replace(voice, reference=full)
    np.testing.assert_array_equal(_audio(synth, voice), _audio(synth, uncompacted))


def test_an_adapter_for_another_base_is_refused(synth, backbone, reference_wav, tmp_path):
    torch.manual_seed(123)
    other = gpt_tiny()
    path = save_random_adapter(other, "gpt", lora.base_fingerprint_of(other, "gpt"), tmp_path / "x.gpt.lora.safetensors", 0)
    with pytest.raises(lora.AdapterError, match="voice x's gpt adapter was trained on a different gpt base"):
        load_adapter_voice(synth, backbone, "x", gpt=path, sovits=path, reference=reference_wav)
