"""What both synthesis deployments share, whatever engine they run: voice keys, the resident voices,
the thread pool, loading a voice from the registry with its failures mapped, whole and streamed
synthesis, stats and health. Imports no torch: the ONNX replicas (`voicefleet.serve.onnx_synthesizer`)
are built on it as the torch ones (`voicefleet.serve.synthesizer`) are.

A request names its voice through the multiplexed model id `"<voice_id>@<version>"` (set by the
ingress from the registry record), so Serve routes it to a replica that already holds the voice,
and a re-registered voice (new version) is never served from a stale cache entry. The voices
themselves are resident in `voicefleet.serve.voice_cache`.

An engine is anything with `synthesize(voice, text, lang, params) -> audio` and
`stream(voice, text, lang, params) -> chunks` (float32 numpy arrays at 32 kHz): a subclass says
how a voice is opened (`_open_voice`) and which engine serves it (`_engine`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Generic, Mapping, TypeVar

import numpy as np
from ray import serve

from voicefleet.inference.audio_io import encode_audio
from voicefleet.models.config import SAMPLE_RATE
from voicefleet.platform.registry import VoiceDamaged, VoiceRecord, VoiceRegistry, check_voice_id
from voicefleet.serve.errors import RequestFailed, client_error
from voicefleet.serve.replica_metrics import SynthesisMetrics
from voicefleet.serve.schemas import SynthesisJob
from voicefleet.serve.settings import ServeSettings
from voicefleet.serve.voice_cache import VoiceCache

logger = logging.getLogger(__name__)
V = TypeVar("V")

# What a voice's files raise when they cannot be read or are not what they should be (damaged on disk).
UNREADABLE = (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError)


def voice_key(voice_id: str, version: int) -> str:
    """Multiplexed model id of one registry version of a voice."""
    return f"{voice_id}@{version}"


def parse_voice_key(key: str) -> tuple[str, int]:
    voice_id, _, version = key.partition("@")
    if not version.isdigit():
        raise RequestFailed(400, "invalid_request_error", f"malformed voice key {key!r}")
    return check_voice_id(voice_id), int(version)


def as_client_error(e: BaseException) -> RequestFailed:
    """The client's answer for `e`; `e` itself propagates when it is a server fault."""
    mapped = client_error(e)
    if mapped is None:
        raise e
    return mapped


def audio_seconds(audio: np.ndarray) -> float:
    """Duration of a mono waveform at the synthesis sample rate."""
    return len(audio) / SAMPLE_RATE


def timed(fn, *args):
    """`fn(*args)` and the seconds it took (on the thread that runs it: queueing excluded)."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def synthesize_one(engine: Any, voice: Any, job: SynthesisJob,
                   on_audio: Callable[[float], None] | None = None) -> bytes:
    """One request on its own -> encoded audio; errors a client caused leave as `RequestFailed`.
    `on_audio(seconds)`, if given, is told the audio's duration."""
    try:
        audio = engine.synthesize(voice, job.text, job.lang, job.params)
    except Exception as e:  # noqa: BLE001
        raise as_client_error(e) from None
    if on_audio is not None:
        on_audio(audio_seconds(audio))
    return encode_audio(audio, job.fmt)


def start_stream(engine: Any, voice: Any, job: SynthesisJob):
    """The engine's chunk iterator for a streamed request (the text is read, and refused, here)."""
    try:
        return engine.stream(voice, job.text, job.lang, job.params)
    except Exception as e:  # noqa: BLE001
        raise as_client_error(e) from None


class Replica(Generic[V]):
    """One synthesis replica of either engine; a subclass decorated with `serve.deployment`."""

    # adapter voices resident apart from full ones (they share a backbone); an engine whose adapter
    # voices are merged full voices says False
    separate_adapter_voices = True

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.registry = VoiceRegistry(settings.registry_root)
        self.pool = ThreadPoolExecutor(settings.synthesis_threads, thread_name_prefix="synth",
                                       initializer=self._thread_started)
        self._active, self._active_lock = 0, threading.Lock()
        self.loads: list[str] = []  # every voice load on this replica, in order (for stats)
        self._problem: str | None = None  # once a shared model is found broken, it stays so
        self.metrics = SynthesisMetrics(settings.metrics_per_voice)
        self.voices: VoiceCache[V] = VoiceCache(settings.max_voices_per_replica,
                                                settings.max_adapter_voices_per_replica,
                                                settings.adapter_memory_mb * 2**20)

        # The cache size comes from settings, so the multiplexed loader is wired up per instance
        # (a closure: Serve keeps its LRU on the decorated function object). Serve's LRU holds
        # voice keys only (for routing); the voices are resident in `self.voices`.
        async def load_voice(key: str) -> str:
            await self._resolve(key)
            return key

        self._voice = serve.multiplexed(max_num_models_per_replica=settings.max_voices_per_replica
                                        + settings.max_adapter_voices_per_replica)(load_voice)
        self._voice_loader = load_voice

    # ---- what an engine's replica provides --------------------------------------------------
    def _thread_started(self) -> None:
        """Run once in each synthesis thread as it starts."""

    def _open_voice(self, key: str, record: VoiceRecord, files: Mapping[str, Path]) -> V:
        """The voice of registry `record` (its local `files`), ready to synthesise with."""
        raise NotImplementedError

    def _engine(self, voice: V) -> tuple[Any, Any]:
        """(engine, the engine's voice) that synthesise `voice`."""
        raise NotImplementedError

    def _voice_loaded(self, key: str, voice: V) -> None:
        """Called after each voice load, before the voice is made resident."""

    def _voice_bytes(self, voice: V) -> int:
        """Memory held by an adapter voice apart from what it shares (its LRU's budget)."""
        return 0

    def _shared_problem(self) -> str | None:
        """Why the replica's shared models cannot serve, or None."""
        return None

    def _kind(self, voice: V) -> str:
        """`adapter` for a voice of adapters over a shared backbone, else `full` (its metrics' tag)."""
        return "full"

    def _in_job(self, active: int, fn, args):
        """Run one job on this synthesis thread, `active` jobs (itself included) running."""
        return fn(*args)

    # ---- the pool ---------------------------------------------------------------------------
    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._job, fn, args)

    def _job(self, fn, args):
        """Run `fn(*args)` on a pool thread, counting the jobs that run at once."""
        with self._active_lock:
            self._active += 1
            active = self._active
        try:
            return self._in_job(active, fn, args)
        finally:
            with self._active_lock:
                self._active -= 1

    # ---- voices -----------------------------------------------------------------------------
    async def _resolve(self, key: str) -> V:
        """The resident voice of `key`, loaded (on a synthesis thread) when it is not."""
        voice = self.voices.get(key)
        return voice if voice is not None else await self._run(self._load_voice, key)

    def _load_voice(self, key: str) -> V:
        voice = self.voices.get(key)  # loaded by a concurrent request meanwhile
        if voice is not None:
            return voice
        voice_id, version = parse_voice_key(key)
        try:
            record = self.registry.get(voice_id)
            files = self.registry.local_files(voice_id)
            if record.version != version:
                logger.info("voice %s: asked for version %d, registry has %d", voice_id, version, record.version)
            start = time.perf_counter()
            try:
                voice = self._open_voice(key, record, files)
            except UNREADABLE as e:
                if client_error(e) is not None:  # e.g. a reference clip that is silent: the voice's own fault
                    raise
                # the voice's files cannot be read or are not weights any more (damaged on disk): this
                # voice fails with a message saying so, the replica and every other voice go on
                logger.error("voice %s: its files cannot be loaded (%s: %s)", key, type(e).__name__,
                             " ".join(str(e).split())[:300])
                raise VoiceDamaged(voice_id, self.registry.uri) from None
        except Exception as e:  # noqa: BLE001 - user errors become 4xx, the rest propagate
            raise as_client_error(e) from None
        self.metrics.voice_loaded(self._kind(voice), time.perf_counter() - start)
        self._voice_loaded(key, voice)
        self.loads.append(key)
        adapter = record.is_adapter and self.separate_adapter_voices
        evicted = self.voices.put(key, voice, adapter=adapter, nbytes=self._voice_bytes(voice))
        self.metrics.residency(self.voices.stats())
        logger.info("loaded %svoice %s on pid %d%s", "adapter " if adapter else "", key, os.getpid(),
                    f" (evicted {', '.join(evicted)})" if evicted else "")
        return voice

    async def _get_voice(self) -> V:
        key = serve.get_multiplexed_model_id()
        if not key:
            raise RequestFailed(400, "invalid_request_error", "no voice given")
        await self._voice(key)  # Serve's bookkeeping: this replica holds `key`
        return await self._resolve(key)

    # ---- requests ---------------------------------------------------------------------------
    async def synthesize(self, job: SynthesisJob) -> bytes:
        """Whole request -> encoded audio bytes."""
        voice = await self._get_voice()
        seconds: list[float] = []
        audio, compute_s = await self._run(timed, synthesize_one, *self._engine(voice), job, seconds.append)
        self.metrics.synthesized(parse_voice_key(serve.get_multiplexed_model_id())[0], self._kind(voice),
                                 sum(seconds), compute_s)
        return audio

    async def stream(self, job: SynthesisJob) -> AsyncIterator[bytes]:
        """One s16le PCM chunk per fragment, each as soon as it is synthesised."""
        voice = await self._get_voice()
        voice_id = parse_voice_key(serve.get_multiplexed_model_id())[0]
        chunks, compute_s = await self._run(timed, start_stream, *self._engine(voice), job)
        done, audio_s = object(), 0.0
        try:
            while True:
                chunk, chunk_s = await self._run(timed, next, chunks, done)
                compute_s += chunk_s
                if chunk is done:
                    return
                audio_s += audio_seconds(chunk)
                yield encode_audio(np.asarray(chunk), "pcm")
        finally:  # a stream the client left early counts what it was sent
            self.metrics.synthesized(voice_id, self._kind(voice), audio_s, compute_s)

    def stats(self) -> dict:
        """This replica's voice cache (for tests and operators)."""
        resident = self.voices.stats()
        return {"pid": os.getpid(), "engine": self.settings.engine, "loads": list(self.loads),
                "cached": resident["full"], "adapter_voices": resident["adapter"],
                "adapter_bytes": resident["adapter_bytes"], "evictions": {
                    "full": resident["full_evictions"], "adapter": resident["adapter_evictions"]}}

    def ready(self) -> bool:
        return self._problem is None

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy (it gets replaced)."""
        self._problem = self._problem or self._shared_problem()
        if self._problem:
            raise RuntimeError(f"shared model broken: {self._problem}")
