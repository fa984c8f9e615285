"""Adapter voices at precision `fast`: each voice's unmerged updates on the shared int8/bf16
backbone stay close to its merged weights on the same fast path, the lean decoding step (native
and eager) adds them exactly as the hooked layers do, voices never bleed into each other or into
the backbone, and full voices keep working beside them."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from tests.inference.adapter_files import write_random_voices
from tests.inference.kernels import forget_kernels, select_kernels
from voicefleet.inference.adapted import Backbone, load_adapter_voice
from voicefleet.inference.fast import Bf16Decoder, Int8DecodingStep, fast_sovits, quantize_gpt
from voicefleet.inference.generation import LayerDecodingStep, TokenGenerator
from voicefleet.inference.pipeline import SynthesisParams, Synthesizer, Voice
from voicefleet.models import adapters as lora
from voicefleet.models.builders import sovits_tiny
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits

N_VOICES = 3
PARAMS = SynthesisParams(max_tokens=8, seed=5, top_k=1)
PHONEMES = [[12, 40, 77, 5, 90, 31, 64, 8]]
SOVITS_TARGETS = ("text_encoder", "flow", "decoder")  # the decoder too: the bf16 decoder applies it itself


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _random_adapter(model, spec: lora.AdapterSpec, seed: int) -> lora.Adapter:
    adapter = lora.Adapter.create(model, spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in adapter.items():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.2)
    return adapter


@pytest.fixture(scope="module")
def synth(tiny_pretrained):
    return Synthesizer.from_pretrained(tiny_pretrained, precision="fast")


@pytest.fixture(scope="module")
def backbone(tiny_pretrained):
    return Backbone.load(tiny_pretrained, precision="fast")


@pytest.fixture(scope="module")
def adapter_files(tiny_pretrained, tmp_path_factory):
    return write_random_voices(tiny_pretrained, tmp_path_factory.mktemp("fast-adapters"), N_VOICES, SOVITS_TARGETS)


@pytest.fixture(scope="module")
def voices(synth, backbone, adapter_files, reference_wav):
    return [load_adapter_voice(synth, backbone, f"v{i}", gpt=f["gpt"], sovits=f["sovits"], reference=reference_wav,
                               prompt_text="这是我的声音。", prompt_lang="zh") for i, f in enumerate(adapter_files)]


def _audio(synth, voice):
    return synth.synthesize_units(voice, synth.phoneme_units(PHONEMES, voice), PARAMS)


def test_an_adapter_voice_at_fast_is_close_to_its_merged_weights_at_fast(tiny_pretrained, backbone, voices,
                                                                         adapter_files):
    """The same tolerances as the fast path against fp32 (tests/inference/test_fast.py)."""
    voice = voices[0]
    assert voice.generator is backbone.generator and voice.generator.step is Int8DecodingStep
    assert isinstance(voice.sovits.decoder, Bf16Decoder)
    gpt = load_gpt(tiny_pretrained.gpt)[0].eval()
    fp32_adapter = lora.load_adapter(adapter_files[0]["gpt"]).build(gpt)
    hooked = lora.attach(copy.deepcopy(gpt), fp32_adapter)
    merged_fast = quantize_gpt(lora.merge_(gpt, fp32_adapter))
    torch.manual_seed(0)
    x, y, b = torch.randint(0, 732, (1, 20)), torch.randint(0, 1024, (1, 30)), torch.randn(1, 1024, 20)
    args = (x, torch.tensor([20]), y, torch.tensor([30]), b)
    with torch.no_grad():
        with lora.use_adapter(*voice.adapters):
            adapted = backbone.gpt(*args).logits
        with lora.use_adapter(fp32_adapter):
            fp32 = hooked(*args).logits
        merged, bare = merged_fast(*args).logits, backbone.gpt(*args).logits
    for reference in (merged, fp32):
        assert _rel(adapted, reference) < 0.03
        assert float((adapted.argmax(-1) == reference.argmax(-1)).float().mean()) > 0.9
    assert _rel(bare, merged) > 0.1  # the adapter itself changes the logits far more than int8 does

    sovits = load_sovits(tiny_pretrained.sovits_g).model.prepare_for_inference()
    lora.merge_(sovits, lora.load_adapter(adapter_files[0]["sovits"]).build(sovits))
    merged_sovits = fast_sovits(sovits)
    codes, text, spec = torch.randint(0, 1024, (1, 1, 20)), torch.randint(0, 732, (1, 10)), torch.rand(1, 1025, 30)
    with torch.no_grad():
        with lora.use_adapter(*voice.adapters):
            wave = backbone.sovits.decode(codes, text, spec, noise_scale=0.0)
        merged_wave = merged_sovits.decode(codes, text, spec, noise_scale=0.0)
        bare_wave = backbone.sovits.decode(codes, text, spec, noise_scale=0.0)
    assert _rel(wave, merged_wave) < 0.05
    assert _rel(bare_wave, merged_wave) > 0.2


def test_the_bf16_decoder_adds_a_decoder_adapter_as_its_merged_kernels():
    torch.manual_seed(0)
    sovits = sovits_tiny().eval().prepare_for_inference()
    adapter = _random_adapter(sovits, lora.AdapterSpec("sovits", rank=4, targets=("decoder",)), 1)
    fast = Bf16Decoder.from_fp32(sovits.decoder)
    merged = Bf16Decoder.from_fp32(lora.merge_(copy.deepcopy(sovits), adapter).decoder)
    x = torch.randn(2, sovits.decoder.conv_pre.in_channels, 23)
    g = torch.randn(2, sovits.decoder.cond.in_channels, 1)
    with torch.no_grad():
        reference, bare = merged(x, g), fast(x, g)
        with lora.use_adapter(adapter):
            adapted = fast(x, g)
        with lora.use_adapter([adapter, adapter]):  # one adapter named per row: the same update
            assert torch.equal(fast(x, g), adapted)
        with lora.use_adapter([adapter, None]), pytest.raises(lora.AdapterError, match="different sovits adapters"):
            fast(x, g)
    assert _rel(adapted, reference) < 0.01  # bf16 rounding, as the decoder against fp32
    assert _rel(bare, reference) > 0.1
    assert torch.equal(fast(x, g), bare)  # nothing stays behind


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "eager"])
def test_the_lean_decoding_step_adds_the_adapter_as_the_hooked_layers_do(use_native, monkeypatch):
    """Greedy and sampled tokens of the lean step (native or eager) equal those of the quantised
    GPT's own hooked layers, with rows leaving the batch at different steps."""
    select_kernels(use_native, monkeypatch)
    torch.manual_seed(0)
    gpt = gpt_tiny().eval()
    with torch.no_grad():  # hidden[0] == 1 after the last layer, so the EOS logit is 1.5: chosen now and then
        gpt.layers[-1].norm2.weight[0] = 0.0
        gpt.layers[-1].norm2.bias[0] = 1.0
        gpt.head.weight[gpt.eos].zero_()
        gpt.head.weight[gpt.eos, 0] = 1.5
    adapter = _random_adapter(gpt, lora.AdapterSpec("gpt", rank=4), 3).to(torch.float16)  # resident as float16
    backbone = Backbone.from_models(gpt, sovits_tiny(), precision="fast")
    texts = [torch.randint(0, 732, (n,)) for n in (14, 9, 5)]
    berts = [torch.randn(1024, t.numel()) for t in texts]
    prompts = torch.randint(0, 1024, (3, 12))

    def run(step, selection, top_k=None):
        from voicefleet.inference.params import SamplingParams

        with lora.use_adapter(selection):
            return TokenGenerator(backbone.gpt, step=step).generate_batch(
                texts, berts, prompts, max_steps=40, return_step_logits=True, sampling=SamplingParams(top_k=top_k),
                generator=[torch.Generator().manual_seed(i) for i in range(3)])

    for top_k in (1, None):
        lean, layered = run(Int8DecodingStep, adapter, top_k), run(LayerDecodingStep, adapter, top_k)
        assert lean.idx == layered.idx and lean.stop_reasons == layered.stop_reasons
        assert all(torch.equal(a, b) for a, b in zip(lean.sequences, layered.sequences))
        finite = torch.isfinite(layered.step_logits)
        assert torch.equal(finite, torch.isfinite(lean.step_logits))
        diff = (lean.step_logits[finite] - layered.step_logits[finite]).abs()
        # The native step keeps its KV cache in fp16: this adapter's large random updates (logits up
        # to ~2.5) widen keys and values, and the cache's rounding gives up to ~1e-3. Without the
        # native library both steps round the int8 products' inputs to bf16, where the update's
        # other summation order flips the odd rounding (one bf16 unit, ~8e-3 here, mean ~1e-6).
        assert float(diff.max()) < (2e-3 if use_native else 1e-2) and float(diff.mean()) < 1e-4
    assert "eos" in lean.stop_reasons and len(set(lean.idx)) > 1
    bare, per_row = run(Int8DecodingStep, None), run(Int8DecodingStep, [adapter] * 3)
    assert torch.equal(per_row.step_logits.nan_to_num(), lean.step_logits.nan_to_num())
    steps = min(len(bare.step_logits), len(lean.step_logits))
    assert not torch.allclose(bare.step_logits[1:steps].nan_to_num(), lean.step_logits[1:steps].nan_to_num(), atol=1e-2)
    forget_kernels()


def test_voices_differ_and_never_change_the_backbone(synth, backbone, voices):
    def snapshot():
        decoder = backbone.sovits.decoder
        convs = [decoder.pre, *decoder.ups, *(c for b in decoder.blocks for pair in b for c in pair)]
        return ([v.clone() for m in (backbone.gpt, backbone.sovits) for v in m.state_dict().values()]
                + [c.weight.clone() for c in convs])

    bare = Voice("bare", backbone.generator, backbone.sovits, voices[0].reference, voices[0].prompt)
    before, state = _audio(synth, bare), snapshot()
    outputs = [_audio(synth, v) for v in voices]
    assert len({a.tobytes() for a in outputs + [before]}) == N_VOICES + 1  # each voice sounds different
    assert np.array_equal(_audio(synth, bare), before)  # no update stays behind after a request
    assert all(torch.equal(a, b) for a, b in zip(snapshot(), state))  # never merged in


def test_switching_voices_back_and_forth_and_concurrently_gives_each_its_own_audio(synth, voices):
    alone = [_audio(synth, v) for v in voices]
    for i in (0, 1, 0, 2, 1, 0):
        assert np.array_equal(_audio(synth, voices[i]), alone[i]), f"voice {i} after switching"
    order = [0, 1, 2, 2, 1, 0, 1, 0, 2]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: (i, _audio(synth, voices[i])), order))
    for i, audio in results:
        np.testing.assert_allclose(audio, alone[i], atol=1e-5, rtol=1e-5, err_msg=f"voice {i}")


def test_full_and_half_adapted_voices_work_beside_adapter_voices(synth, backbone, voices, adapter_files,
                                                                 tiny_pretrained, reference_wav):
    full = synth.load_voice("full", tiny_pretrained.gpt, tiny_pretrained.sovits_g, reference_wav, "这是我的声音。", "zh")
    first = _audio(synth, full)
    for voice in voices:
        _audio(synth, voice)
    assert np.array_equal(_audio(synth, full), first)
    # the pretrained weights as a full voice are the bare backbone, on the same fast modules
    bare = Voice("bare", backbone.generator, backbone.sovits, full.reference, full.prompt)
    np.testing.assert_allclose(_audio(synth, bare), first, atol=1e-6)
    half = load_adapter_voice(synth, backbone, "half", gpt=adapter_files[0]["gpt"], sovits=tiny_pretrained.sovits_g,
                              reference=reference_wav, prompt_text="这是我的声音。", prompt_lang="zh")
    assert half.sovits is not backbone.sovits and isinstance(half.sovits.decoder, Bf16Decoder)
    assert [a.spec.stage for a in half.adapters] == ["gpt"]
    assert np.isfinite(_audio(synth, half)).all()


def test_a_backbone_of_another_precision_is_refused(synth, backbone, adapter_files, reference_wav):
    fp32 = Synthesizer(synth.hubert, None, precision="fp32")
    with pytest.raises(ValueError, match="a fp32 synthesizer with a fast backbone"):
        load_adapter_voice(fp32, backbone, "x", gpt=adapter_files[0]["gpt"], sovits=adapter_files[0]["sovits"],
                           reference=reference_wav)
