"""Cross-request batching: a batched group decodes together, a lone request is exact."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install httpx==0.28.1)")
import soundfile as sf
import torch

from voicefleet.inference.audio_io import encode_audio
from voicefleet.inference.pipeline import Synthesizer, SynthesisParams
from voicefleet.platform.registry import VoiceRegistry
from voicefleet.serve.batching import synthesize_group
from voicefleet.serve.errors import RequestFailed
from voicefleet.serve.schemas import SynthesisJob

TEXT = "今天天气很好。我们一起去公园。"


@pytest.fixture(scope="module")
def voice_and_synth(serve_settings, tiny_pretrained):
    synth = Synthesizer.from_pretrained(tiny_pretrained)
    registry = VoiceRegistry(serve_settings.registry_root)
    rec, files = registry.get("alpha"), registry.local_files("alpha")
    voice = synth.load_voice("alpha", files["gpt"], files["sovits"], files["reference"], rec.prompt_text,
                             rec.prompt_lang)
    return synth, voice


def job(seed: int, text: str = TEXT) -> SynthesisJob:
    return SynthesisJob(text=text, lang="zh", fmt="wav", params=SynthesisParams(seed=seed, max_tokens=20))


def test_group_of_one_is_the_per_request_audio(voice_and_synth):
    synth, voice = voice_and_synth
    [alone] = synthesize_group(synth, voice, [job(3)])
    assert alone == encode_audio(synth.synthesize(voice, TEXT, "zh", job(3).params), "wav")


def test_group_decodes_every_request_and_isolates_errors(voice_and_synth):
    synth, voice = voice_and_synth
    out = synthesize_group(synth, voice, [job(1), job(2, "。。。"), job(3, "你好。再见。一二三。")])
    assert isinstance(out[1], RequestFailed) and out[1].status == 422
    for data in (out[0], out[2]):
        wave, sr = sf.read(io.BytesIO(data))
        assert sr == 32000 and len(wave) > 0 and np.isfinite(wave).all()
    again = synthesize_group(synth, voice, [job(1), job(2, "。。。"), job(3, "你好。再见。一二三。")])
    assert again[0] == out[0] and again[2] == out[2]  # same companions, same seeds: same audio


@pytest.mark.parametrize("texts", [[TEXT], [TEXT, "。。。", "你好。再见。一二三。"]], ids=["alone", "group"])
def test_group_reports_each_request_audio_duration(voice_and_synth, texts):
    """What a synthesis replica counts as audio seconds: the duration of the audio each client gets."""
    synth, voice = voice_and_synth
    seconds: dict[int, float] = {}
    out = synthesize_group(synth, voice, [job(i + 1, t) for i, t in enumerate(texts)], on_audio=seconds.__setitem__)
    made = [j for j, result in enumerate(out) if isinstance(result, bytes)]
    assert sorted(seconds) == made  # a failed request made no audio
    for j in made:
        info = sf.info(io.BytesIO(out[j]))
        assert seconds[j] == info.frames / info.samplerate > 0


def test_group_hands_each_request_over_as_soon_as_its_audio_is_done(voice_and_synth, monkeypatch):
    synth, voice = voice_and_synth
    events: list = []
    wave = synth.fragment_wave
    monkeypatch.setattr(synth, "fragment_wave", lambda *a, **k: events.append("sovits") or wave(*a, **k))
    jobs = [job(1, "你好。再见。"), job(2, "。。。"), job(3, "一二三。四五六。")]
    out = synthesize_group(synth, voice, jobs, on_result=lambda j, r: events.append((j, r)))
    assert [e for e in events if e != "sovits"] == [(0, out[0]), (1, out[1]), (2, out[2])]
    counts = [len(synth.fragments(j.text, "zh", "cut5", voice.gpt.config.bert_dim)) for j in (jobs[0], jobs[2])]
    # request 0 is handed over right after its own fragments' audio, before request 2's is decoded
    assert events.index((0, out[0])) == counts[0]
    assert events[events.index((1, out[1])) + 1:] == ["sovits"] * counts[1] + [(2, out[2])]


@pytest.fixture(scope="module")
def batched_url(base_url, serve_settings):
    """A second app with batching on, beside the main one (same HTTP proxy, prefix /batched)."""
    from ray import serve

    from voicefleet.serve.app import build_app

    settings = serve_settings.model_copy(update={"batch_max_size": 4, "batch_wait_timeout_s": 0.2, "num_cpus": 0})
    serve.run(build_app(settings), name="voicefleet-batched", route_prefix="/batched")
    yield f"{base_url}/batched"
    serve.delete("voicefleet-batched")


@pytest.mark.slow
def test_serve_batches_concurrent_requests(batched_url):
    from ray import serve

    bodies = [{"voice": "alpha", "text": TEXT, "seed": s, "max_tokens": 20} for s in range(4)]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda b: httpx.post(f"{batched_url}/v1/tts", json=b, timeout=120), bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    stats = serve.get_deployment_handle("VoiceSynthesizer", app_name="voicefleet-batched").stats.remote().result()
    assert max(stats["batches"]) > 1, stats


@pytest.mark.slow
def test_requests_queued_behind_busy_threads_merge_into_one_decode(batched_url, voice_and_synth):
    # both synthesis threads busy with long requests that cannot share a decode (different knobs);
    # alpha requests arriving one by one, each after the batch window closed, wait in the queue and
    # the first free thread decodes them together, with exactly the audio of that group in-process
    import time

    from ray import serve

    synth, voice = voice_and_synth
    handle = serve.get_deployment_handle("VoiceSynthesizer", app_name="voicefleet-batched")
    before = len(handle.stats.remote().result()["batches"])
    long_text = "今天天气很好，我们一起去公园散步吧！" * 12
    blockers = [{"voice": "beta", "text": long_text, "seed": 1, "max_tokens": 150, "top_k": k} for k in (5, 6)]
    seeds = [11, 12, 13]
    with ThreadPoolExecutor(5) as pool:
        busy = [pool.submit(httpx.post, f"{batched_url}/v1/tts", json=b, timeout=300) for b in blockers]
        time.sleep(1.0)
        queued = []
        for s in seeds:
            queued.append(pool.submit(httpx.post, f"{batched_url}/v1/tts", timeout=300,
                                      json={"voice": "alpha", "text": TEXT, "seed": s, "max_tokens": 20}))
            time.sleep(0.4)  # past the 0.2 s batch window: each arrives in a batch of its own
        assert not any(f.done() for f in busy), "the blocking requests ended too soon to test queueing"
        responses = [f.result() for f in queued]
        assert all(f.result().status_code == 200 for f in busy)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    batches = handle.stats.remote().result()["batches"][before:]
    assert sorted(batches) == [1, 1, 3], batches
    own = torch.get_num_threads()
    torch.set_num_threads(1)  # as the replica ran it (torch_threads=1, not alone): float sums follow threads
    try:
        expected = synthesize_group(synth, voice, [job(s) for s in seeds])
    finally:
        torch.set_num_threads(own)
    assert [r.content for r in responses] == expected
