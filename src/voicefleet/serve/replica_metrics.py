"""The service's own metrics, recorded by its Serve replicas with Ray's metrics API.

Ray exports them, with every Serve replica's `deployment`, `replica` and `application` tags, on
each node's metrics export port (`ray start --metrics-export-port`, `voicefleet serve
--metrics-port`), in Prometheus' text format and under Ray's `ray_` prefix:
`voicefleet_requests_total` is scraped as `ray_voicefleet_requests_total`. docs/metrics.md lists
every metric with its tags and example queries.

Two recorders, one per deployment:

- `RequestMetrics` (the ingress, `Gateway`): every synthesis request's outcome, by voice, route and
  status, and the failures by error type. The ingress sees the requests a synthesis replica never
  gets (an unknown voice, a refused key, a text over the limit).
- `SynthesisMetrics` (each `VoiceSynthesizer` replica): audio seconds made, the compute time and
  real-time factor of each request, voice load times, the resident voices and adapter bytes, and
  evictions.

Counters carry the voice id (`metrics_per_voice`, on by default); with thousands of voices an
operator turns it off and the same metrics are recorded without the tag. Histograms never carry
it: each voice would multiply the series by the bucket count; a voice's mean real-time factor is
`voicefleet_compute_seconds_total / voicefleet_audio_seconds_total` instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ray.serve.metrics import Counter, Gauge, Histogram

from voicefleet.serve.errors import SERVER_FAULT, client_error

PREFIX = "voicefleet_"
# The voice tag of a request refused before its voice was found in the registry (an unknown id, a
# key that may not use it, a text over the limit): never a voice id (those start with a-z or 0-9),
# and a client cannot grow the series by sending random voice names.
NO_VOICE = "-"
VOICE_KINDS = ("full", "adapter")

# Bucket bounds, in seconds (synthesis, voice loads) and in compute seconds per audio second (RTF):
# from a short sentence on a warm GPU to a long text on a busy CPU.
SYNTHESIS_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0]
RTF_BUCKETS = [0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0]
LOAD_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


class _Tagged:
    """Drops the `voice` tag when metrics are not per voice, so one call site serves both."""

    def __init__(self, per_voice: bool):
        self.per_voice = per_voice

    def keys(self, *keys: str) -> tuple[str, ...]:
        return ("voice", *keys) if self.per_voice else keys

    def tags(self, voice: str, **tags: str) -> dict[str, str]:
        return {"voice": voice, **tags} if self.per_voice else tags


class RequestMetrics(_Tagged):
    """The ingress side: one `record` per synthesis request, whatever its outcome."""

    def __init__(self, per_voice: bool = True):
        super().__init__(per_voice)
        self.requests = Counter(PREFIX + "requests_total", tag_keys=self.keys("route", "status"),
                                description="Synthesis requests answered, by route and HTTP status.")
        self.errors = Counter(PREFIX + "request_errors_total", tag_keys=self.keys("route", "type"),
                              description="Synthesis requests that failed, by error type (the JSON body's "
                                          "error.type).")

    def record(self, voice: str, route: str, status: int, error_type: str | None = None) -> None:
        """One request to `route` (`tts`, `tts_stream`, `speech`) answered with `status`; `voice` is
        `NO_VOICE` when the request failed before its voice was found."""
        self.requests.inc(1, tags=self.tags(voice, route=route, status=str(status)))
        if error_type is not None:
            self.errors.inc(1, tags=self.tags(voice, route=route, type=error_type))

    def request(self, route: str) -> "CountedRequest":
        return CountedRequest(self, route)


def outcome(exc: BaseException | None) -> tuple[int, str | None] | None:
    """(HTTP status, error type) of a request that ended with `exc` (None: answered), as the client
    gets them (`client_error`; a server fault is 500 `server_error`); None for a cancelled request."""
    if exc is None:
        return 200, None
    if not isinstance(exc, Exception):  # cancelled: the client went away, nothing was answered
        return None
    failed = client_error(exc) or SERVER_FAULT
    return failed.status, failed.type


@dataclass
class CountedRequest:
    """`with metrics.request(route) as counted:` around a request; set `counted.voice` once the voice
    is found in the registry. Leaving the block records its `outcome`; a stream counts as 200 once
    its first chunk is ready."""

    metrics: RequestMetrics
    route: str
    voice: str = NO_VOICE

    def __enter__(self) -> "CountedRequest":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        answered = outcome(exc)
        if answered is not None:
            self.metrics.record(self.voice, self.route, *answered)
        return False


def real_time_factor(compute_s: float, audio_s: float) -> float | None:
    """Compute seconds per second of audio (below 1: faster than real time); None without audio."""
    return compute_s / audio_s if audio_s > 0 else None


class SynthesisMetrics(_Tagged):
    """One synthesis replica: what it made, how fast, and which voices it holds."""

    def __init__(self, per_voice: bool = True):
        super().__init__(per_voice)
        self.audio = Counter(PREFIX + "audio_seconds_total", tag_keys=self.keys("kind"),
                             description="Seconds of audio synthesised, by voice kind (full or adapter).")
        self.compute = Counter(PREFIX + "compute_seconds_total", tag_keys=self.keys("kind"),
                               description="Seconds spent synthesising on the replica's synthesis threads.")
        self.synthesis = Histogram(PREFIX + "synthesis_seconds", boundaries=SYNTHESIS_BUCKETS_S, tag_keys=("kind",),
                                   description="Compute time of one request on a synthesis thread (queueing "
                                               "excluded; a batched request counts the shared decode).")
        self.rtf = Histogram(PREFIX + "real_time_factor", boundaries=RTF_BUCKETS, tag_keys=("kind",),
                             description="Compute seconds per second of audio of one request.")
        self.load = Histogram(PREFIX + "voice_load_seconds", boundaries=LOAD_BUCKETS_S, tag_keys=("kind",),
                              description="Time to make a voice resident on a replica (weights, reference).")
        self.resident = Gauge(PREFIX + "resident_voices", tag_keys=("kind",),
                              description="Voices resident on the replica, by kind.")
        self.adapter_bytes = Gauge(PREFIX + "resident_adapter_bytes",
                                   description="Bytes held by the replica's resident adapter voices "
                                               "(bounded by adapter_memory_mb).")
        self.evictions = Counter(PREFIX + "voice_evictions_total", tag_keys=("kind",),
                                 description="Voices evicted from the replica to make room, by kind.")
        self._evicted = dict.fromkeys(VOICE_KINDS, 0)
        self._lock = threading.Lock()  # voices load on several synthesis threads

    def synthesized(self, voice: str, kind: str, audio_s: float, compute_s: float) -> None:
        """One request of `voice` done: `audio_s` seconds of audio in `compute_s` seconds."""
        tags = self.tags(voice, kind=kind)
        if audio_s > 0:
            self.audio.inc(audio_s, tags=tags)
        if compute_s > 0:
            self.compute.inc(compute_s, tags=tags)
        self.synthesis.observe(compute_s, tags={"kind": kind})
        rtf = real_time_factor(compute_s, audio_s)
        if rtf is not None:
            self.rtf.observe(rtf, tags={"kind": kind})

    def voice_loaded(self, kind: str, seconds: float) -> None:
        self.load.observe(seconds, tags={"kind": kind})

    def residency(self, stats: dict) -> None:
        """The replica's voices after a load: `VoiceCache.stats()`; evictions since the last call are
        added to the counter (the cache counts them itself, under its lock)."""
        with self._lock:
            for kind in VOICE_KINDS:
                self.resident.set(len(stats[kind]), tags={"kind": kind})
                total = stats[f"{kind}_evictions"]
                if total > self._evicted[kind]:
                    self.evictions.inc(total - self._evicted[kind], tags={"kind": kind})
                    self._evicted[kind] = total
            self.adapter_bytes.set(stats["adapter_bytes"])
