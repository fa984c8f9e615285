"""The torch synthesis deployment: shared HuBERT + BERT per replica, voices multiplexed from the registry.

What every synthesis replica does (voice keys, resident voices, the thread pool, loading a voice
with its failures mapped, streaming, stats) is `voicefleet.serve.replica`'s; this is the torch
engine's part. Adapter (LoRA) voices share one backbone per replica, the pretrained GPT and SoVITS
loaded once (`voicefleet.inference.adapted`); each request applies its voice's adapters to it.
Full voices and adapter voices are resident in separate LRUs (`voicefleet.serve.voice_cache`).

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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from ray import serve

from voicefleet.inference.adapted import Backbone, load_adapter_voice, voice_nbytes
from voicefleet.inference.pipeline import Synthesizer, Voice
from voicefleet.models.pretrained import find_pretrained
from voicefleet.platform.registry import VoiceRecord
from voicefleet.serve.batching import compat_key, synthesize_group
from voicefleet.serve.errors import RequestFailed
from voicefleet.serve.replica import Replica, parse_voice_key
from voicefleet.serve.schemas import SynthesisJob
from voicefleet.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


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
class VoiceSynthesizer(Replica[Voice]):
    """One torch replica: the shared `Synthesizer`, the adapter voices' backbone (loaded with the
    first of them) and the resident voices."""

    def __init__(self, settings: ServeSettings):
        torch.set_num_threads(settings.torch_threads)
        self.paths = find_pretrained(settings.pretrained)
        if settings.g2pw_model is not None:
            from voicefleet.text.g2pw import enable

            enable(settings.g2pw_model, self.paths.bert)
        self.synth = Synthesizer.from_pretrained(self.paths, precision=settings.precision)
        super().__init__(settings)
        self._problem = shared_model_problem(self.synth)
        # intra-op threads for a lone job's thread-count-invariant stages: None until the first
        # voice load has checked them on this machine, then that count or 0 (off)
        self._wide: int | None = None if settings.widen_invariant_stages else 0
        self._backbone: Backbone | None = None
        self._backbone_lock = threading.Lock()
        self.batches: list[int] = []  # sizes of the cross-request GPT decodes run (for stats)
        # `@serve.batch` groups requests that arrive together and hands them to the pending queue at
        # once (its handler only enqueues); a synthesis thread that becomes free then takes the
        # oldest pending group plus every compatible one queued behind it (`_run_pending`)
        self._batched = serve.batch(max_batch_size=settings.batch_max_size,
                                    batch_wait_timeout_s=settings.batch_wait_timeout_s)(self._enqueue_batch)
        self._pending: list[_PendingGroup] = []
        self._pending_lock = threading.Lock()

    def _thread_started(self) -> None:
        torch.set_num_threads(self.settings.torch_threads)  # per OS thread under OpenMP

    def _in_job(self, active: int, fn, args):
        """`fn(*args)` with the intra-op thread count for the current load."""
        torch.set_num_threads(intra_op_threads(self.settings, active))  # per OS thread under OpenMP
        with self.synth.invariant_stage_threads(self._stage_threads):
            return fn(*args)

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

    def _open_voice(self, key: str, record: VoiceRecord, files: Mapping[str, Path]) -> Voice:
        if record.is_adapter:
            return load_adapter_voice(self.synth, self.backbone(), key, gpt=files["gpt"], sovits=files["sovits"],
                                      reference=files["reference"], prompt_text=record.prompt_text,
                                      prompt_lang=record.prompt_lang)
        return self.synth.load_voice(key, files["gpt"], files["sovits"], files["reference"], record.prompt_text,
                                     record.prompt_lang)

    def _voice_loaded(self, key: str, voice: Voice) -> None:
        if self._wide is None:
            self._check_wide(voice)

    def _voice_bytes(self, voice: Voice) -> int:
        return voice_nbytes(voice)

    def _engine(self, voice: Voice) -> tuple[Synthesizer, Voice]:
        return self.synth, voice

    def _kind(self, voice: Voice) -> str:
        return "adapter" if voice.adapters else "full"

    def _shared_problem(self) -> str | None:
        return shared_model_problem(self.synth)

    async def synthesize(self, job: SynthesisJob) -> bytes:
        """Whole request -> encoded audio bytes (batched with compatible requests when enabled)."""
        if self.settings.batch_max_size <= 1:
            return await super().synthesize(job)
        key = serve.get_multiplexed_model_id()
        voice = await self._get_voice()
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
        voice_id, kind, seconds = parse_voice_key(head.key)[0], self._kind(head.voice), {}
        start = time.perf_counter()

        def settle(j: int, result) -> None:  # each request as soon as its audio is done
            made = seconds.pop(j, None)  # once, even when a failure settles the rest
            if made is not None:  # its compute time includes the decode it shared
                self.metrics.synthesized(voice_id, kind, made, time.perf_counter() - start)
            loop, future = futures[j]
            loop.call_soon_threadsafe(_settle, future, result)

        self.batches.append(len(jobs))
        try:
            synthesize_group(self.synth, head.voice, jobs, on_result=settle, on_audio=seconds.__setitem__)
        except BaseException as e:  # noqa: BLE001 - every request still waiting gets the failure
            for j in range(len(jobs)):
                settle(j, e)

    def stats(self) -> dict:
        return {**super().stats(), "batches": list(self.batches), "wide_threads": self._wide}
