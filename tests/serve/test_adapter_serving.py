"""Adapter voices on the Serve app: 50 of them on one replica beside full voices, interleaved
concurrent requests each get exactly their own voice's audio; a foreign adapter is a 409; a
replica at precision `fast` serves them too."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install httpx==0.28.1)")

from tests.inference.adapter_files import save_random_adapter
from voicefleet.inference.adapted import Backbone, load_adapter_voice
from voicefleet.inference.audio_io import encode_audio
from voicefleet.inference.pipeline import SynthesisParams, Synthesizer
from voicefleet.models import adapters as lora
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.platform.registry import VoiceRegistry

pytestmark = pytest.mark.slow  # runs the real Serve app (Ray actors, HTTP)

N_VOICES = 50
TEXT = "今天天气很好。"
SMALL = {"max_tokens": 12}




@pytest.fixture(scope="module")
def adapter_voices(serve_settings, tiny_pretrained, storage, tmp_path_factory):
    """N_VOICES adapter voices (and one trained on another base) registered for this module only."""
    registry = VoiceRegistry(serve_settings.registry_root)
    folder = tmp_path_factory.mktemp("adapters")
    gpt, sovits = load_gpt(tiny_pretrained.gpt)[0], load_sovits(tiny_pretrained.sovits_g).model
    fp = {"gpt": lora.base_fingerprint_of(gpt, "gpt"), "sovits": lora.base_fingerprint_of(sovits, "sovits")}
    reference = registry.local_files("alpha")["reference"]
    ids = [f"lora-{i:02d}" for i in range(N_VOICES)]
    for i, voice_id in enumerate(ids):
        registry.register(voice_id, gpt=save_random_adapter(gpt, "gpt", fp["gpt"], folder / f"{i}.gpt.lora.safetensors", 2 * i),
                          sovits=save_random_adapter(sovits, "sovits", fp["sovits"], folder / f"{i}.s.lora.safetensors", 2 * i + 1),
                          reference=reference, prompt_text="你好。", prompt_lang="zh")
    torch.manual_seed(77)
    other = gpt_tiny()
    registry.register("foreign", gpt=save_random_adapter(other, "gpt", lora.base_fingerprint_of(other, "gpt"),
                                              folder / "foreign.gpt.lora.safetensors", 0),
                      sovits=tiny_pretrained.sovits_g, reference=reference, prompt_text="你好。", prompt_lang="zh")
    yield ids
    for voice_id in ids + ["foreign"]:  # the other serve tests list the three full voices only
        registry.delete(voice_id)


def _expected(serve_settings, tiny_pretrained, precision: str):
    synth = Synthesizer.from_pretrained(tiny_pretrained, precision=precision)
    backbone = Backbone.load(tiny_pretrained, precision=precision)
    registry = VoiceRegistry(serve_settings.registry_root)

    def make(voice_id: str, seed: int) -> bytes:
        rec, files = registry.get(voice_id), registry.local_files(voice_id)
        # as a replica loads and runs it (its reference style is computed at load): float sums follow threads
        torch.set_num_threads(serve_settings.torch_threads)
        voice = load_adapter_voice(synth, backbone, voice_id, gpt=files["gpt"], sovits=files["sovits"],
                                   reference=files["reference"], prompt_text=rec.prompt_text,
                                   prompt_lang=rec.prompt_lang)
        return encode_audio(synth.synthesize(voice, TEXT, "zh", SynthesisParams(seed=seed, **SMALL)), "wav")

    return make


@pytest.fixture(scope="module")
def expected(serve_settings, tiny_pretrained, adapter_voices):
    return _expected(serve_settings, tiny_pretrained, "fp32")


@pytest.fixture(scope="module")
def fast_url(base_url, serve_settings):
    """A second app at precision fast, beside the main one (same HTTP proxy, prefix /fast)."""
    from ray import serve

    from voicefleet.serve.app import build_app

    settings = serve_settings.model_copy(update={"precision": "fast", "num_cpus": 0})
    serve.run(build_app(settings), name="voicefleet-fast", route_prefix="/fast")
    yield f"{base_url}/fast"
    serve.delete("voicefleet-fast")


def tts(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/tts", json={"text": TEXT, "lang": "zh", **SMALL, **body}, timeout=300)


def test_fifty_adapter_voices_beside_full_ones_each_get_their_own_audio(base_url, adapter_voices, expected):
    from ray import serve

    jobs = [(voice_id, 3) for voice_id in adapter_voices] + [("alpha", 3)]
    jobs = jobs[::2] + jobs[1::2]  # interleaved
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda j: tts(base_url, voice=j[0], seed=j[1]), jobs))
    for (voice_id, seed), r in zip(jobs, responses):
        assert r.status_code == 200, r.text
        if voice_id != "alpha":
            assert r.content == expected(voice_id, seed), f"{voice_id} is not its own voice's audio"
    assert len({r.content for r in responses}) == len(jobs)
    stats = serve.get_deployment_handle("VoiceSynthesizer", app_name="voicefleet").stats.remote().result()
    assert set(adapter_voices) <= {key.split("@")[0] for key in stats["adapter_voices"]}
    assert "alpha@1" in stats["cached"] and stats["evictions"]["adapter"] == 0  # full voices apart


def test_an_adapter_trained_on_another_base_is_refused(base_url, adapter_voices):
    r = tts(base_url, voice="foreign", seed=1)
    assert r.status_code == 409, r.text
    assert "trained on a different gpt base" in r.json()["error"]["message"]


def test_a_fast_replica_serves_adapter_voices_beside_full_ones(fast_url, adapter_voices, serve_settings,
                                                               tiny_pretrained):
    jobs = [(adapter_voices[0], 3), ("alpha", 3), (adapter_voices[1], 3), (adapter_voices[0], 4)]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda j: tts(fast_url, voice=j[0], seed=j[1]), jobs))
    assert [r.status_code for r in responses] == [200] * len(jobs), [r.text for r in responses]
    assert len({r.content for r in responses}) == len(jobs)
    expected = _expected(serve_settings, tiny_pretrained, "fast")
    for (voice_id, seed), r in zip(jobs, responses):
        if voice_id != "alpha":
            assert r.content == expected(voice_id, seed), f"{voice_id} is not its own voice's audio"
