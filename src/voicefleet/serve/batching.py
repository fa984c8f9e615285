"""Cross-request batching: requests for one voice with the same GPT sampling knobs share one
batched GPT decode (`TokenGenerator.generate_batch`), each row drawing from its own request's seed.

Trade-off (why batching is off by default, `batch_max_size=1`): a batched decode is not
bit-identical to decoding a fragment alone (padding changes float sums, and sampling then
diverges), so with batching a seed reproduces the same audio only when the request is batched
with the same companions. A request that ends up alone in its batch takes the per-request path
and gets exactly the per-request audio.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from voicefleet.inference.audio_io import encode_audio
from voicefleet.inference.pipeline import Synthesizer, TextUnit, Voice
from voicefleet.serve.errors import RequestFailed
from voicefleet.serve.replica import as_client_error, audio_seconds, synthesize_one
from voicefleet.serve.schemas import SynthesisJob

logger = logging.getLogger(__name__)
MAX_ROWS = 16  # fragments per batched GPT decode; more rows mostly add padding on CPU


def compat_key(job: SynthesisJob) -> tuple:
    """Requests with equal keys can share one GPT decode (sampling knobs and token cap)."""
    p = job.params
    return (p.top_k, p.top_p, p.temperature, p.repetition_penalty, p.max_tokens)


@torch.inference_mode()
def synthesize_group(synth: Synthesizer, voice: Voice, jobs: Sequence[SynthesisJob],
                     on_result: Callable[[int, bytes | RequestFailed], None] | None = None,
                     on_audio: Callable[[int, float], None] | None = None) -> list[bytes | RequestFailed]:
    """Compatible requests for one voice -> encoded audio (or the request's error), in order.

    The GPT decodes every request's fragments together; SoVITS then finishes the requests one by
    one, and `on_result(i, result)` is called as soon as request i is done (its caller need not
    wait for the rest of the group). `on_audio(i, seconds)`, if given, is told the duration of
    request i's audio just before.
    """
    results: list[bytes | RequestFailed | None] = [None] * len(jobs)

    def done(j: int, result: bytes | RequestFailed) -> None:
        results[j] = result
        if on_result is not None:
            on_result(j, result)

    if len(jobs) == 1 or voice.prompt is None:
        # alone, or no transcript (the official path then decodes row by row anyway)
        for j, job in enumerate(jobs):
            try:
                done(j, synthesize_one(synth, voice, job,
                                       None if on_audio is None else lambda s, j=j: on_audio(j, s)))
            except RequestFailed as e:
                done(j, e)
        return results  # type: ignore[return-value]
    dim = voice.gpt.config.bert_dim
    units: list[list[TextUnit] | RequestFailed] = []
    for job in jobs:
        try:
            units.append(synth.fragments(job.text, job.lang, job.params.text_split_method, dim))
        except Exception as e:  # noqa: BLE001
            units.append(as_client_error(e))
    rows = [(j, i, u) for j, us in enumerate(units) if not isinstance(us, RequestFailed) for i, u in enumerate(us)]
    rows.sort(key=lambda r: len(r[2].phone_ids))  # similar lengths together: less padding
    tokens: dict[tuple[int, int], torch.Tensor] = {}
    for start in range(0, len(rows), MAX_ROWS):
        chunk = rows[start:start + MAX_ROWS]
        decoded = synth.decode_tokens(voice, [u for _, _, u in chunk], [i for _, i, _ in chunk],
                                      [jobs[j].params for j, _, _ in chunk])
        for (j, i, _), new in zip(chunk, decoded):
            tokens[(j, i)] = new
    for j, (job, us) in enumerate(zip(jobs, units)):
        if isinstance(us, RequestFailed):
            done(j, us)
            continue
        audio = np.concatenate([synth.fragment_audio(voice, u, tokens[(j, i)], i, job.params)
                                for i, u in enumerate(us)])
        if on_audio is not None:
            on_audio(j, audio_seconds(audio))
        done(j, encode_audio(audio, job.fmt))
    return results  # type: ignore[return-value]
