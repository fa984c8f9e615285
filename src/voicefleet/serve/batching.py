"""Cross-request batching: requests for one voice with the same GPT sampling knobs share one
batched GPT decode (`GPT.generate_batch`), each row drawing from its own request's seed.

Trade-off (why batching is off by default, `batch_max_size=1`): a batched decode is not
bit-identical to decoding a fragment alone (padding changes float sums, and sampling then
diverges), so with batching a seed reproduces the same audio only when the request is batched
with the same companions. A request that ends up alone in its batch takes the per-request path
and gets exactly the per-request audio.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from ..models.audio_io import encode_audio
from ..models.pipeline import Synthesizer, TextUnit, Voice
from .errors import RequestFailed, user_error
from .schemas import SynthesisJob

logger = logging.getLogger(__name__)
MAX_ROWS = 16  # fragments per batched GPT decode; more rows mostly add padding on CPU


def compat_key(job: SynthesisJob) -> tuple:
    """Requests with equal keys can share one GPT decode (sampling knobs and token cap)."""
    p = job.params
    return (p.top_k, p.top_p, p.temperature, p.repetition_penalty, p.max_tokens)


def _fail(e: BaseException) -> RequestFailed:
    mapped = user_error(e)
    if mapped is None:
        raise e
    return mapped


def synthesize_one(synth: Synthesizer, voice: Voice, job: SynthesisJob) -> bytes:
    try:
        audio = synth.synthesize(voice, job.text, job.lang, job.params)
    except Exception as e:  # noqa: BLE001
        raise _fail(e) from None
    return encode_audio(audio, job.fmt)


@torch.inference_mode()
def synthesize_group(synth: Synthesizer, voice: Voice, jobs: Sequence[SynthesisJob]) -> list[bytes | RequestFailed]:
    """Compatible requests for one voice -> encoded audio (or the request's error), in order."""
    if len(jobs) == 1 or voice.prompt is None:
        # alone, or no transcript (the official path then decodes row by row anyway)
        out: list[bytes | RequestFailed] = []
        for job in jobs:
            try:
                out.append(synthesize_one(synth, voice, job))
            except RequestFailed as e:
                out.append(e)
        return out
    dim = voice.gpt.config.bert_dim
    units: list[list[TextUnit] | RequestFailed] = []
    for job in jobs:
        try:
            units.append(synth.fragments(job.text, job.lang, job.params.text_split_method, dim))
        except Exception as e:  # noqa: BLE001
            units.append(_fail(e))
    rows = [(j, i, u) for j, us in enumerate(units) if not isinstance(us, RequestFailed) for i, u in enumerate(us)]
    rows.sort(key=lambda r: len(r[2].phone_ids))  # similar lengths together: less padding
    waves: dict[tuple[int, int], np.ndarray] = {}
    for start in range(0, len(rows), MAX_ROWS):
        chunk = rows[start:start + MAX_ROWS]
        audio = synth.decode_fragments(voice, [u for _, _, u in chunk], [i for _, i, _ in chunk],
                                       [jobs[j].params for j, _, _ in chunk])
        for (j, i, _), wave in zip(chunk, audio):
            waves[(j, i)] = wave
    results: list[bytes | RequestFailed] = []
    for j, (job, us) in enumerate(zip(jobs, units)):
        if isinstance(us, RequestFailed):
            results.append(us)
        else:
            results.append(encode_audio(np.concatenate([waves[(j, i)] for i in range(len(us))]), job.fmt))
    return results
