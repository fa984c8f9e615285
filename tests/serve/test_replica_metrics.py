"""The recording side of the service's metrics, without Ray running: which tags each metric takes
(with and without `metrics_per_voice`), how a request's outcome is counted, and evictions taken
from the voice cache's own counts. Ray's metric objects check the tags of every record (a
missing tag raises), so recording here fails where it would fail in a replica."""

from __future__ import annotations

import asyncio

import pytest

from voicefleet.platform.registry import VoiceNotFound
from voicefleet.serve.errors import RequestFailed, TooLarge
from voicefleet.serve.replica_metrics import (NO_VOICE, RequestMetrics, SynthesisMetrics, outcome,
                                              real_time_factor)
from voicefleet.serve.settings import ServeSettings
from voicefleet.serve.voice_cache import VoiceCache


def _tag_keys(recorder) -> dict[str, tuple[str, ...]]:
    return {name: metric.info["tag_keys"] for name, metric in vars(recorder).items() if hasattr(metric, "info")}


def test_metrics_are_per_voice_by_default():
    assert ServeSettings().metrics_per_voice is True


@pytest.mark.parametrize("per_voice", [True, False])
def test_voice_tag_follows_the_setting_and_every_record_carries_its_tags(per_voice):
    requests, synthesis = RequestMetrics(per_voice), SynthesisMetrics(per_voice)
    keys = {**_tag_keys(requests), **_tag_keys(synthesis)}
    with_voice = {name for name, tags in keys.items() if "voice" in tags}
    # counters of requests and audio carry the voice when asked; histograms and gauges never do
    assert with_voice == ({"requests", "errors", "audio", "compute"} if per_voice else set())
    assert keys["requests"][-2:] == ("route", "status") and keys["synthesis"] == ("kind",)
    # recording with a voice passes Ray's tag check whether or not the voice is a tag
    requests.record("alpha", "tts", 200)
    requests.record(NO_VOICE, "speech", 404, "not_found")
    synthesis.synthesized("alpha", "full", audio_s=2.0, compute_s=0.5)
    synthesis.synthesized("alpha", "adapter", audio_s=0.0, compute_s=0.1)  # a stream left before any audio
    synthesis.voice_loaded("adapter", 0.2)
    assert requests.tags("alpha", route="tts") == ({"voice": "alpha", "route": "tts"} if per_voice
                                                    else {"route": "tts"})


def test_a_request_counts_as_the_status_and_type_its_client_gets():
    assert outcome(None) == (200, None)
    assert outcome(VoiceNotFound("nobody", "/srv/registry")) == (404, "not_found")
    assert outcome(TooLarge("text too long")) == (413, "request_too_large")
    assert outcome(RequestFailed(422, "invalid_request_error", "nothing to say")) == (422, "invalid_request_error")
    assert outcome(RuntimeError("a bug")) == (500, "server_error")
    assert outcome(asyncio.CancelledError()) is None  # the client went away: nothing was answered


def test_counted_request_takes_the_voice_only_once_found():
    metrics = RequestMetrics(True)
    with pytest.raises(VoiceNotFound):
        with metrics.request("tts") as counted:
            raise VoiceNotFound("nobody")
    assert counted.voice == NO_VOICE  # a client's made-up names never become series
    with metrics.request("tts") as counted:
        counted.voice = "alpha"
    assert (counted.route, counted.voice) == ("tts", "alpha")


def test_real_time_factor():
    assert real_time_factor(1.0, 4.0) == 0.25
    assert real_time_factor(0.3, 0.0) is None  # no audio: no factor


def test_evictions_follow_the_voice_cache_counts():
    cache: VoiceCache[str] = VoiceCache(max_full=1, max_adapter=2, adapter_bytes=100)
    metrics = SynthesisMetrics()
    cache.put("a@1", "A", adapter=False)
    metrics.residency(cache.stats())
    cache.put("b@1", "B", adapter=False)
    for i in range(4):
        cache.put(f"l{i}@1", "L", adapter=True, nbytes=10)
    metrics.residency(cache.stats())
    metrics.residency(cache.stats())  # nothing new: nothing added
    assert metrics._evicted == {"full": 1, "adapter": 2}
