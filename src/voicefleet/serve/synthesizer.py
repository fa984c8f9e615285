"""The synthesis deployment: shared HuBERT + BERT per replica, voices multiplexed from the registry.

A request names its voice through the multiplexed model id `"<voice_id>@<version>"` (set by the
ingress from the registry record), so Serve routes it to a replica that already holds the voice,
and a re-registered voice (new version) is never served from a stale cache entry. The voices
themselves are resident in `voicefleet.serve.voice_cache` (full voices and adapter voices in
separate LRUs). Adapter (LoRA) voices share one backbone per replica, the pretrained GPT and SoVITS
loaded once (`voicefleet.inference.adapted`); each request applies its voice's adapters to it.

Synthesis is CPU-bound: it runs on the replica's own thread pool (`synthesis_threads`), never on
the event loop; `max_ongoing_requests` caps what a replica accepts. Each job runs with
`torch_threads` intra-op threads. A job that runs alone computes its BERT features and GPT tokens
with all `synthesis_threads * torch_threads` threads (`widen_invariant_stages`), once the first
voice load has checked that those stages give bit-identical results at both counts on this
machine, so a seed's audio does not depend on the load. `adaptive_threads` widens the whole job
(SoVITS too: faster, but float sums and so a seed's audio then depend on the load; off by default).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator

import numpy as np
import torch
from ray import serve

from voicefleet.inference.audio_io import encode_audio
from voicefleet.inference.adapted import Backbone, load_adapter_voice, voice_nbytes
from voicefleet.inference.pipeline import Synthesizer, Voice
from voicefleet.models.pretrained import find_pretrained
from voicefleet.platform.registry import VoiceDamaged, VoiceRegistry, check_voice_id
from voicefleet.serve.batching import compat_key, synthesize_group, synthesize_one
from voicefleet.serve.errors import RequestFailed, client_error
from voicefleet.serve.schemas import SynthesisJob
from voicefleet.serve.settings import ServeSettings
from voicefleet.serve.voice_cache import VoiceCache

logger = logging.getLogger(__name__)


def voice_key(voice_id: str, version: int) -> str:
    """Multiplexed model id of one registry version of a voice."""
    return f"{voice_id}@{version}"


def parse_voice_key(key: str) -> tuple[str, int]:
    voice_id, _, version = key.partition("@")
    if not version.isdigit():
        raise RequestFailed(400, "invalid_request_error", f"malformed voice key {key!r}")
    return check_voice_id(voice_id), int(version)


def shared_model_problem(synth: Synthesizer) -> str | None:
    """Why the replica's shared models cannot serve (non-finite weights, missing module), or None."""
    for name, module in (("hubert", synth.hubert), ("bert", synth.bert)):
        if module is None:
            return f"{name} is not loaded"
        for pname, p in module.named_parameters():
            # Serve runs this every health period next to synthesis: one read of each tensor with
            # no temporary (a sum of finite weights is finite; NaN/inf propagate), then the exact
            # element test only where that sum says so (it would also catch an overflowing sum)
            with torch.no_grad():
                if not bool(torch.isfinite(p.sum())) and not bool(torch.isfinite(p).all()):
                    return f"{name} parameter {pname} has non-finite values"
    return None


def intra_op_threads(settings: ServeSettings, active_jobs: int) -> int:
    """torch threads for a job that starts while `active_jobs` jobs (itself included) run."""
    if settings.adaptive_threads and active_jobs <= 1:
        return settings.synthesis_threads * settings.torch_threads
    return settings.torch_threads


@dataclass
class _PendingGroup:
    """Requests for one voice with the same sampling knobs, waiting for a synthesis thread."""

    key: str
    compat: tuple
    voice: Voice
    loop: asyncio.AbstractEventLoop
    jobs: list[SynthesisJob] = field(default_factory=list)
    futures: list[asyncio.Future] = field(default_factory=list)


def _settle(future: asyncio.Future, result) -> None:
    if future.done():  # the caller went away
        return
    if isinstance(result, BaseException) and not isinstance(result, RequestFailed):
        future.set_exception(result)
    else:
        future.set_result(result)


@serve.deployment(name="VoiceSynthesizer")
class VoiceSynthesizer:
    """One replica: the shared `Synthesizer`, the adapter voices' backbone (loaded with the first
    of them) and the resident voices (`VoiceCache`)."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        torch.set_num_threads(settings.torch_threads)
        self.paths = find_pretrained(settings.pretrained)
        if settings.g2pw_model is not None:
            from voicefleet.text.g2pw import enable

            enable(settings.g2pw_model, self.paths.bert)
        self.synth = Synthesizer.from_pretrained(self.paths, precision=settings.precision)
        self.registry = VoiceRegistry(settings.registry_root)
        # torch's intra-op thread count is per OS thread under OpenMP: set it in every worker
        self.pool = ThreadPoolExecutor(settings.synthesis_threads, thread_name_prefix="synth",
                                       initializer=torch.set_num_threads, initargs=(settings.torch_threads,))
        self._active, self._active_lock = 0, threading.Lock()
        self.loads: list[str] = []  # every voice load on this replica, in order (for stats)
        self._problem: str | None = shared_model_problem(self.synth)
        # intra-op threads for a lone job's thread-count-invariant stages: None until the first
        # voice load has checked them on this machine, then that count or 0 (off)
        self._wide: int | None = None if settings.widen_invariant_stages else 0

        self.voices: VoiceCache[Voice] = VoiceCache(settings.max_voices_per_replica,
                                                    settings.max_adapter_voices_per_replica,
                                                    settings.adapter_memory_mb * 2**20)
        self._backbone: Backbone | None = None
        self._backbone_lock = threading.Lock()

        # The cache size comes from settings, so the multiplexed loader is wired up per instance
        # (a closure: Serve keeps its LRU on the decorated function object). Serve's LRU holds
        # voice keys only (for routing); the voices are resident in `self.voices`.
        async def load_voice(key: str) -> str:
            await self._resolve(key)
            return key

        self._voice = serve.multiplexed(max_num_models_per_replica=settings.max_voices_per_replica
                                        + settings.max_adapter_voices_per_replica)(load_voice)
        self._voice_loader = load_voice
        self.batches: list[int] = []  # sizes of the cross-request GPT decodes run (for stats)
        # `@serve.batch` groups requests that arrive together and hands them to the pending queue at
        # once (its handler only enqueues); a synthesis thread that becomes free then takes the
        # oldest pending group plus every compatible one queued behind it (`_run_pending`)
        self._batched = serve.batch(max_batch_size=settings.batch_max_size,
                                    batch_wait_timeout_s=settings.batch_wait_timeout_s)(self._enqueue_batch)
        self._pending: list[_PendingGroup] = []
        self._pending_lock = threading.Lock()

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._job, fn, args)

    def _job(self, fn, args):
        """Run `fn(*args)` on a pool thread with the intra-op thread count for the current load."""
        with self._active_lock:
            self._active += 1
            threads = intra_op_threads(self.settings, self._active)
        torch.set_num_threads(threads)  # per OS thread under OpenMP
        try:
            with self.synth.invariant_stage_threads(self._stage_threads):
                return fn(*args)
        finally:
            with self._active_lock:
                self._active -= 1

    def _stage_threads(self) -> int | None:
        """Threads for the invariant stages of a job starting one now: all of them when it runs alone."""
        return self._wide if self._wide and self._active <= 1 else None

    def _check_wide(self, voice: Voice) -> None:
        threads = self.settings.synthesis_threads * self.settings.torch_threads
        if threads <= self.settings.torch_threads:
            self._wide = 0
            return
        problem = self.synth.check_invariant_stages(voice, threads)
        if problem:
            logger.info("lone requests keep %d thread(s) per stage: %s", self.settings.torch_threads, problem)
            self._wide = 0
        else:
            logger.info("lone requests compute BERT features and GPT tokens with %d threads (bit-identical)", threads)
            self._wide = threads

    def backbone(self) -> Backbone:
        """The pretrained GPT and SoVITS that every adapter voice of this replica applies its adapters to."""
        with self._backbone_lock:
            if self._backbone is None:
                self._backbone = Backbone.load(self.paths, precision=self.settings.precision)
            return self._backbone

    async def _resolve(self, key: str) -> Voice:
        """The resident voice of `key`, loaded (on a synthesis thread) when it is not."""
        voice = self.voices.get(key)
        return voice if voice is not None else await self._run(self._load_voice, key)

    def _load_voice(self, key: str) -> Voice:
        voice = self.voices.get(key)  # loaded by a concurrent request meanwhile
        if voice is not None:
            return voice
        voice_id, version = parse_voice_key(key)
        try:
            record = self.registry.get(voice_id)
            files = self.registry.local_files(voice_id)
            if record.version != version:
                logger.info("voice %s: asked for version %d, registry has %d", voice_id, version, record.version)
            try:
                if record.is_adapter:
                    voice = load_adapter_voice(self.synth, self.backbone(), key, gpt=files["gpt"], sovits=files["sovits"],
                                               reference=files["reference"], prompt_text=record.prompt_text,
                                               prompt_lang=record.prompt_lang)
                else:
                    voice = self.synth.load_voice(key, files["gpt"], files["sovits"], files["reference"],
                                                  record.prompt_text, record.prompt_lang)
            except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
                if client_error(e) is not None:  # e.g. a reference clip that is silent: the voice's own fault
                    raise
                # the voice's files cannot be read or are not weights any more (damaged on disk): this
                # voice fails with a message saying so, the replica and every other voice go on
                logger.error("voice %s: its files cannot be loaded (%s: %s)", key, type(e).__name__,
                             " ".join(str(e).split())[:300])
                raise VoiceDamaged(voice_id, self.registry.uri) from None
        except Exception as e:  # noqa: BLE001 - user errors become 4xx, the rest propagate
            mapped = client_error(e)
            if mapped is None:
                raise
            raise mapped from None
        if self._wide is None:
            self._check_wide(voice)
        self.loads.append(key)
        evicted = self.voices.put(key, voice, adapter=record.is_adapter, nbytes=voice_nbytes(voice))
        logger.info("loaded %svoice %s on pid %d%s", "adapter " if record.is_adapter else "", key, os.getpid(),
                    f" (evicted {', '.join(evicted)})" if evicted else "")
        return voice

    async def _get_voice(self) -> Voice:
        key = serve.get_multiplexed_model_id()
        if not key:
            raise RequestFailed(400, "invalid_request_error", "no voice given")
        await self._voice(key)  # Serve's bookkeeping: this replica holds `key`
        return await self._resolve(key)

    async def synthesize(self, job: SynthesisJob) -> bytes:
        """Whole request -> encoded audio bytes (batched with compatible requests when enabled)."""
        key = serve.get_multiplexed_model_id()
        voice = await self._get_voice()
        if self.settings.batch_max_size <= 1:
            return await self._run(synthesize_one, self.synth, voice, job)
        result = await (await self._batched((key, voice, job)))
        if isinstance(result, RequestFailed):
            raise result
        return result

    async def _enqueue_batch(self, items: list[tuple[str, Voice, SynthesisJob]]) -> list[asyncio.Future]:
        """`@serve.batch` handler: queue one group per voice and sampling knobs; a future per item.

        Returns at once, so requests arriving while others synthesise reach the queue too, where a
        free synthesis thread merges the compatible ones into one decode.
        """
        loop = asyncio.get_running_loop()
        groups: dict[tuple, _PendingGroup] = {}
        futures = []
        for key, voice, job in items:
            compat = compat_key(job)
            group = groups.get((key, compat))
            if group is None:
                group = groups[(key, compat)] = _PendingGroup(key, compat, voice, loop)
            group.jobs.append(job)
            futures.append(loop.create_future())
            group.futures.append(futures[-1])
        with self._pending_lock:
            self._pending.extend(groups.values())
        for _ in groups:  # one turn on the pool per group; a turn finding the queue empty does nothing
            loop.run_in_executor(self.pool, self._job, self._run_pending, ())
        return futures

    def _run_pending(self) -> None:
        """On a synthesis thread: the oldest pending group plus the compatible groups behind it
        (up to `batch_max_size` requests) in one `synthesize_group`; results go to their futures."""
        with self._pending_lock:
            if not self._pending:
                return  # merged into an earlier turn
            head = self._pending.pop(0)
            taken, size = [head], len(head.jobs)
            for group in list(self._pending):
                if (group.key, group.compat) == (head.key, head.compat) and \
                        size + len(group.jobs) <= self.settings.batch_max_size:
                    self._pending.remove(group)
                    taken.append(group)
                    size += len(group.jobs)
        jobs = [job for group in taken for job in group.jobs]
        futures = [(group.loop, future) for group in taken for future in group.futures]

        def settle(j: int, result) -> None:  # each request as soon as its audio is done
            loop, future = futures[j]
            loop.call_soon_threadsafe(_settle, future, result)

        self.batches.append(len(jobs))
        try:
            synthesize_group(self.synth, head.voice, jobs, on_result=settle)
        except BaseException as e:  # noqa: BLE001 - every request still waiting gets the failure
            for j in range(len(jobs)):
                settle(j, e)

    async def stream(self, job: SynthesisJob) -> AsyncIterator[bytes]:
        """One s16le PCM chunk per fragment, each as soon as it is synthesised."""
        voice = await self._get_voice()

        def start():
            try:
                return self.synth.stream(voice, job.text, job.lang, job.params)
            except Exception as e:  # noqa: BLE001
                mapped = client_error(e)
                if mapped is None:
                    raise
                raise mapped from None

        chunks = await self._run(start)
        done = object()
        while True:
            chunk = await self._run(next, chunks, done)
            if chunk is done:
                return
            yield encode_audio(np.asarray(chunk), "pcm")

    def stats(self) -> dict:
        """This replica's voice cache (for tests and operators)."""
        resident = self.voices.stats()
        return {"pid": os.getpid(), "loads": list(self.loads), "cached": resident["full"],
                "adapter_voices": resident["adapter"],
                "adapter_bytes": resident["adapter_bytes"], "evictions": {
                    "full": resident["full_evictions"], "adapter": resident["adapter_evictions"]},
                "batches": list(self.batches), "wide_threads": self._wide}

    def ready(self) -> bool:
        return self._problem is None

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy (it gets replaced)."""
        self._problem = self._problem or shared_model_problem(self.synth)
        if self._problem:
            raise RuntimeError(f"shared model broken: {self._problem}")
