"""The synthesis pipeline through its Python API on the tiny random pretrained set."""

from __future__ import annotations

import numpy as np
import pytest

from voicefleet.inference.pipeline import SynthesisError, SynthesisParams, Synthesizer
from voicefleet.text.frontend import TextFrontendError

ZH_TEXT = "今天天气很好，我们一起去公园散步吧！明天可能会下雨，记得带伞。"
FAST = dict(max_tokens=20, seed=11)


@pytest.fixture(scope="module")
def synth(tiny_pretrained):
    return Synthesizer.from_pretrained(tiny_pretrained)


@pytest.fixture(scope="module")
def voice(synth, tiny_pretrained, reference_wav):
    return synth.load_voice("tiny", tiny_pretrained.gpt, tiny_pretrained.sovits_g, reference_wav,
                            "这是我的声音。", "zh")


def test_prompt_text_becomes_phonemes_and_bert(voice, synth):
    assert voice.prompt is not None
    assert len(voice.prompt.phone_ids) == voice.prompt.bert.shape[1] > 0
    # Chinese text carries real BERT features; English text gets zeros, as officially
    assert voice.prompt.bert.abs().sum() > 0


def test_same_seed_same_audio_and_fragment_structure(synth, voice):
    params = SynthesisParams(**FAST)
    a = synth.synthesize(voice, ZH_TEXT, "zh", params)
    b = synth.synthesize(voice, ZH_TEXT, "zh", params)
    np.testing.assert_array_equal(a, b)
    units = synth.fragments(ZH_TEXT, "zh", "cut5", voice.gpt.config.bert_dim)
    silence = int(32000 * params.fragment_interval)
    max_len = len(units) * (params.max_tokens * 1280 + silence)
    assert len(units) * silence < len(a) <= max_len
    c = synth.synthesize(voice, ZH_TEXT, "zh", SynthesisParams(max_tokens=20, seed=12))
    assert not (len(a) == len(c) and np.array_equal(a, c))


def test_batched_decoding_gives_every_fragment(synth, voice):
    units = synth.fragments(ZH_TEXT, "zh", "cut5", voice.gpt.config.bert_dim)
    assert len(units) >= 3
    audio = synth.synthesize_units(voice, units, SynthesisParams(max_tokens=20, seed=3, batch_size=4))
    assert len(audio) > len(units) * int(32000 * 0.3)
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


def test_stream_yields_first_fragment_before_the_rest_is_computed(synth, voice, monkeypatch):
    text = "第一句话很短。" + "后面还有很多很多的句子需要慢慢合成，" * 6
    decoded: list[int] = []
    original = synth.decode_fragments

    def counting(voice_, units, indices, params):
        decoded.extend(indices)
        return original(voice_, units, indices, params)

    featurised: list[str] = []
    text_unit = synth.text_unit

    def counting_units(piece, lang, dim):
        featurised.append(piece)
        return text_unit(piece, lang, dim)

    monkeypatch.setattr(synth, "decode_fragments", counting)
    monkeypatch.setattr(synth, "text_unit", counting_units)
    params = SynthesisParams(max_tokens=20, seed=5, batch_size=2)
    chunks = synth.stream(voice, text, "zh", params)
    first = next(chunks)
    # only the first fragment was computed so far, its text features included
    assert len(first) > 0 and decoded == [0] and len(featurised) == 1
    rest = list(chunks)
    assert len(rest) >= 2 and sorted(decoded) == list(range(len(rest) + 1)) and len(featurised) == len(rest) + 1
    monkeypatch.undo()  # the same audio as streaming units whose features were all computed first
    units = synth.fragments(text, "zh", params.text_split_method, voice.gpt.config.bert_dim)
    eager = list(synth.stream_units(voice, units, params))
    assert len(eager) == len(rest) + 1
    np.testing.assert_array_equal(np.concatenate([first, *rest]), np.concatenate(eager))


def test_english_and_mixed_text(synth, voice):
    params = SynthesisParams(**FAST)
    assert len(synth.synthesize(voice, "Hello world, this is a test.", "en", params)) > 0
    assert len(synth.synthesize(voice, "我们用 Python 写代码。", "zh", params)) > 0


@pytest.mark.parametrize(("text", "lang"), [
    ("こんにちは、今日はいい天気ですね。", "ja"), ("今日はiPhoneで写真を撮りました。", "all_ja"),
    ("안녕하세요, 만나서 반갑습니다.", "ko"), ("我哋今日去飲茶。", "yue"), ("我哋今日去飲茶, OK?", "auto_yue"),
])
def test_japanese_korean_cantonese_text(synth, voice, text, lang):
    units = synth.fragments(text, lang, "cut5", voice.gpt.config.bert_dim)
    assert all(u.bert.abs().sum() == 0 for u in units)  # zeros for every non-Chinese piece, as officially
    audio = synth.synthesize(voice, text, lang, SynthesisParams(**FAST))
    assert np.isfinite(audio).all() and len(audio) > 0


@pytest.mark.parametrize("text,lang,message", [
    ("", "zh", "nothing to synthesise"),
    ("。。。！", "zh", "nothing to synthesise"),
    ("안녕하세요", "all_yue", "no phonemes in '안녕하세요' with language 'all_yue'"),  # Cantonese drops Hangul
    ("こんにちは", "jp", "unsupported language 'jp': use one of"),
])
def test_bad_text_fails_clearly(synth, voice, text, lang, message):
    with pytest.raises((SynthesisError, TextFrontendError), match=message):
        synth.synthesize(voice, text, lang, SynthesisParams(**FAST))
    with pytest.raises((SynthesisError, TextFrontendError), match=message):
        synth.stream(voice, text, lang, SynthesisParams(**FAST))


def test_fast_precision_voice_synthesises(tiny_pretrained, reference_wav):
    from voicefleet.inference.fast import Bf16Decoder, Int8DecodingStep

    fast = Synthesizer.from_pretrained(tiny_pretrained, precision="fast")
    voice = fast.load_voice("tiny", tiny_pretrained.gpt, tiny_pretrained.sovits_g, reference_wav, "", "zh")
    assert voice.generator.step is Int8DecodingStep and isinstance(voice.sovits.decoder, Bf16Decoder)
    audio = fast.synthesize(voice, ZH_TEXT, "zh", SynthesisParams(**FAST))
    assert np.isfinite(audio).all() and len(audio) > 0
    with pytest.raises(ValueError, match="precision"):
        Synthesizer(fast.hubert, fast.bert, precision="int3")


def test_early_first_chunk_comes_before_the_fragment_is_decoded(synth, voice, monkeypatch):
    """first_chunk_tokens: the first chunk is the audio of the first tokens, sent while the GPT is
    still decoding; everything after it is exactly the whole-request audio for that seed."""
    from voicefleet.inference.pipeline import FIRST_CHUNK_FADE_S, FIRST_CHUNK_HOLDBACK_TOKENS

    text = "第一句话很短。第二句话也不长。"
    k = 8  # below the 11 steps in which EOS cannot be drawn: the GPT always gets this far
    finished: list[bool] = []
    original = voice.generator.generate_stream

    def tracked(*args, **kwargs):
        finished.append(False)
        result = yield from original(*args, **kwargs)
        finished[-1] = True
        return result

    monkeypatch.setattr(voice.generator, "generate_stream", tracked)
    params = SynthesisParams(max_tokens=40, seed=5, first_chunk_tokens=k)
    chunks = synth.stream(voice, text, "zh", params)
    first = next(chunks)
    assert finished == [False]  # the GPT is still decoding the first fragment
    cut = (k - FIRST_CHUNK_HOLDBACK_TOKENS) * 1280
    assert len(first) == cut - int(32000 * FIRST_CHUNK_FADE_S)
    streamed = np.concatenate([first, *chunks])
    assert finished == [True]
    whole = synth.synthesize(voice, text, "zh", SynthesisParams(max_tokens=40, seed=5))
    assert len(streamed) == len(whole)
    np.testing.assert_array_equal(streamed[cut:], whole[cut:])
    assert np.abs(streamed[:cut]).max() > 0


@pytest.mark.parametrize("bad", [1, 2, -3])
def test_first_chunk_tokens_must_exceed_the_holdback(bad):
    with pytest.raises(ValueError, match="first_chunk_tokens"):
        SynthesisParams(first_chunk_tokens=bad)


def _record_threads(monkeypatch, obj, name, seen, key):
    import torch

    original = getattr(obj, name)

    def recording(*args, **kwargs):
        seen.setdefault(key, set()).add(torch.get_num_threads())
        return original(*args, **kwargs)

    def recording_steps(*args, **kwargs):  # a generator works when stepped, not when called
        steps = original(*args, **kwargs)
        while True:
            seen.setdefault(key, set()).add(torch.get_num_threads())
            try:
                tokens = next(steps)
            except StopIteration as done:
                return done.value
            yield tokens

    monkeypatch.setattr(obj, name, recording_steps if name == "generate_stream" else recording)


@pytest.mark.parametrize("stream", [False, True])
def test_invariant_stage_threads_widen_bert_and_gpt_only(synth, voice, monkeypatch, stream):
    import torch

    seen: dict[str, set[int]] = {}
    _record_threads(monkeypatch, synth.bert, "phone_level_features", seen, "bert")
    for name in ("generate", "generate_batch", "generate_stream"):
        _record_threads(monkeypatch, voice.generator, name, seen, "gpt")
    _record_threads(monkeypatch, voice.sovits, "decode", seen, "sovits")
    params = SynthesisParams(**FAST, batch_size=2, first_chunk_tokens=5 if stream else 0)
    asked = []
    own = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        def run():
            return np.concatenate(list(synth.stream(voice, ZH_TEXT, "zh", params)) if stream
                                  else [synth.synthesize(voice, ZH_TEXT, "zh", params)])

        narrow = run()
        seen.clear()
        with synth.invariant_stage_threads(lambda: asked.append(1) or 2):
            wide = run()
        assert torch.get_num_threads() == 1  # restored after every stage
    finally:
        torch.set_num_threads(own)
    assert seen == {"bert": {2}, "gpt": {2}, "sovits": {1}}
    assert len(asked) >= 2  # the function is asked as each stage starts
    np.testing.assert_array_equal(narrow, wide)  # these kernels are thread-count invariant here


def _on_one_thread(fn):
    """`fn` computed on one intra-op thread whatever the caller's count: thread-count invariant on
    any machine (whether this machine's kernels are is what the replicas check, not this test)."""
    import torch

    def run(*args, **kwargs):
        own = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(own)
    return run


def test_invariant_stage_check_finds_thread_dependent_kernels(synth, voice, monkeypatch):
    import torch

    bert = _on_one_thread(synth.bert.phone_level_features)
    generate = _on_one_thread(voice.generator.generate)
    monkeypatch.setattr(synth.bert, "phone_level_features", bert)
    monkeypatch.setattr(voice.generator, "generate", generate)
    monkeypatch.setattr(voice.generator, "generate_batch", _on_one_thread(voice.generator.generate_batch))
    own = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert synth.check_invariant_stages(voice, 2) is None

        def thread_dependent(*args, **kwargs):
            return bert(*args, **kwargs) + 1e-6 * torch.get_num_threads()

        monkeypatch.setattr(synth.bert, "phone_level_features", thread_dependent)
        assert synth.check_invariant_stages(voice, 2) == "BERT features differ between 1 and 2 threads"
        monkeypatch.setattr(synth.bert, "phone_level_features", bert)

        def thread_dependent_logits(*args, **kwargs):
            out = generate(*args, **kwargs)
            out.step_logits = out.step_logits + 1e-6 * torch.get_num_threads()
            return out

        monkeypatch.setattr(voice.generator, "generate", thread_dependent_logits)
        assert synth.check_invariant_stages(voice, 2) == "GPT logits differ between 1 and 2 threads"
    finally:
        torch.set_num_threads(own)
