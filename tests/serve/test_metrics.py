"""The service's metrics as a Prometheus server reads them: requests for two voices and an unknown
one through the running app, then Ray's metrics endpoint of the test session's node (the port the
session fixed, as `voicefleet serve --metrics-port` does)."""

from __future__ import annotations

import io
import time
import urllib.request

import httpx
import pytest
import soundfile as sf

pytestmark = pytest.mark.slow

FLUSH_S = 60  # Ray's processes report metrics to their node every few seconds
REPORT_S = 11  # longer than one report interval of Ray's processes (10 s by default)


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def total(samples, name: str, **labels: str) -> float:
    """Sum of `name` over every series whose labels include `labels` (all replicas)."""
    return sum(v for n, tags, v in samples if n == name and labels.items() <= tags.items())


def settled(url: str) -> list[tuple[str, dict[str, str], float]]:
    """A scrape once the syntheses of earlier tests have all been reported: the replicas' count
    stays the same over one report interval (else they would land in this test's counts)."""
    now, deadline = scrape(url), time.monotonic() + FLUSH_S
    while time.monotonic() < deadline:
        time.sleep(REPORT_S)
        later = scrape(url)
        name = "ray_voicefleet_synthesis_seconds_count"
        if total(later, name) == total(now, name):
            return later
        now = later
    return now


def series(samples, name: str) -> list[dict[str, str]]:
    return [tags for n, tags, _ in samples if n == name]


def seconds(wav: bytes) -> float:
    info = sf.info(io.BytesIO(wav))
    return info.frames / info.samplerate


def test_metrics_carry_voices_counts_and_audio_seconds(base_url, ray_metrics_port):
    from ray import serve

    from voicefleet.platform.cluster import metrics_urls
    from voicefleet.serve.replica_metrics import NO_VOICE

    urls = metrics_urls()  # what `voicefleet serve` prints
    assert len(urls) == 1 and urls[0].endswith(f":{ray_metrics_port}/metrics"), urls
    url = urls[0]
    handle = serve.get_deployment_handle("VoiceSynthesizer", app_name="voicefleet")
    before = settled(url)
    stats_before = handle.stats.remote().result()

    audio: dict[str, float] = {"alpha": 0.0, "beta": 0.0}
    sent = [("alpha", 1), ("beta", 2), ("alpha", 3)]
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for voice, seed in sent:
            r = client.post("/v1/tts", json={"voice": voice, "text": "你好世界。", "lang": "zh", "seed": seed})
            assert r.status_code == 200, r.text
            audio[voice] += seconds(r.content)
        r = client.post("/v1/tts", json={"voice": "nobody", "text": "你好。", "lang": "zh"})
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    stats = handle.stats.remote().result()
    loads = len(stats["loads"]) - len(stats_before["loads"])
    evictions = stats["evictions"]["full"] - stats_before["evictions"]["full"]

    def grew(after, name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # each metric carries the deployment (and replica) that recorded it: Serve's tags
    gateway, synthesis = ("deployment", "Gateway"), ("deployment", "VoiceSynthesizer")
    expected = {
        ("ray_voicefleet_requests_total", (gateway, ("voice", "alpha"), ("route", "tts"), ("status", "200"))): 2,
        ("ray_voicefleet_requests_total", (gateway, ("voice", "beta"), ("route", "tts"), ("status", "200"))): 1,
        ("ray_voicefleet_requests_total", (gateway, ("voice", NO_VOICE), ("route", "tts"), ("status", "404"))): 1,
        ("ray_voicefleet_request_errors_total", (gateway, ("voice", NO_VOICE), ("type", "not_found"))): 1,
        ("ray_voicefleet_synthesis_seconds_count", (synthesis, ("kind", "full"))): 3,
        ("ray_voicefleet_real_time_factor_count", (synthesis, ("kind", "full"))): 3,
        ("ray_voicefleet_voice_load_seconds_count", (synthesis, ("kind", "full"))): loads}
    deadline = time.monotonic() + FLUSH_S
    while True:
        after = scrape(url)
        got = {key: grew(after, key[0], **dict(key[1])) for key in expected}
        audio_got = {v: grew(after, "ray_voicefleet_audio_seconds_total", voice=v, kind="full",
                             deployment="VoiceSynthesizer") for v in audio}
        if (got == expected and audio_got == pytest.approx(audio, rel=1e-6)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert got == expected
    assert audio["alpha"] > 0 and audio_got == pytest.approx(audio, rel=1e-6)  # the WAVs' own durations
    assert grew(after, "ray_voicefleet_compute_seconds_total", voice="alpha", deployment="VoiceSynthesizer") > 0
    assert grew(after, "ray_voicefleet_voice_evictions_total", kind="full", deployment="VoiceSynthesizer") == evictions
    # the unknown voice's name never becomes a series
    assert not [t for t in series(after, "ray_voicefleet_requests_total") if t.get("voice") == "nobody"]
    # gauges: the replica's resident voices now (its last load set them; a replica replaced by an
    # earlier test drops out of the export within a few seconds)
    resident = {"deployment": "VoiceSynthesizer", "kind": "full"}
    deadline = time.monotonic() + FLUSH_S
    while total(after, "ray_voicefleet_resident_voices", **resident) != len(stats["cached"]) and \
            time.monotonic() < deadline:
        time.sleep(1)
        after = scrape(url)
    assert total(after, "ray_voicefleet_resident_voices", **resident) == len(stats["cached"]) >= 1
    assert total(after, "ray_voicefleet_resident_adapter_bytes", deployment="VoiceSynthesizer") == \
        stats["adapter_bytes"]
