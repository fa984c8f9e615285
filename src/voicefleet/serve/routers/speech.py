"""Synthesis routes: `POST /v1/tts` (all knobs) and OpenAI-compatible `POST /v1/audio/speech`."""

from __future__ import annotations

import secrets
import struct
from typing import AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from voicefleet.models.config import SAMPLE_RATE
from voicefleet.platform.registry import VoiceRegistry, check_voice_id
from voicefleet.serve.dependencies import Caller, ServeSettings, Services, get_caller, get_services
from voicefleet.serve.errors import BadRequest, InvalidInput, TooLarge, Unavailable, openapi_errors
from voicefleet.serve.replica_metrics import CountedRequest
from voicefleet.serve.retry import RetryLog, with_replica_retry
from voicefleet.serve.schemas import MEDIA_TYPES, SEED_MAX, SamplingFields, SpeechRequest, SynthesisJob, TTSRequest
from voicefleet.serve.replica import voice_key

router = APIRouter(prefix="/v1", tags=["speech"])

ERRORS = openapi_errors(400, 401, 403, 404, 409, 413, 422, 500, 503)
AUDIO = {200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "Audio bytes."}}
STREAMABLE = ("wav", "pcm")
# OpenAI names -> ours; mp3/aac need encoders libsndfile lacks here, so they are refused with 400
# (OpenAI answers 400 to a value it does not offer, and its clients raise BadRequestError).
OPENAI_FORMATS = {"wav": "wav", "flac": "flac", "pcm": "pcm", "opus": "ogg", "ogg": "ogg"}


def wav_stream_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit mono WAV header whose sizes say 'unknown' (0xFFFFFFFF), for streamed WAV.

    Players (ffmpeg, browsers, soundfile) read such a file to its end; the exact length is not
    known when the first fragment leaves."""
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16) +
            b"data" + struct.pack("<I", unknown))


def _voice_key(registry: VoiceRegistry, voice_id: str) -> str:
    """The multiplexed id of the voice's current version (VoiceNotFound -> 404 by the error table)."""
    return voice_key(voice_id, registry.get(voice_id).version)


async def synthesize(services: Services, caller: Caller, counted: CountedRequest, voice_id: str, text: str,
                     lang: str, fmt: str, fields, stream: bool) -> Response:
    """One synthesis request; `counted.voice` is set once the voice is found (its metrics' tag)."""
    settings: ServeSettings = services.settings
    if stream and fmt not in STREAMABLE:
        raise BadRequest(f"streaming sends wav (open-ended header) or pcm; {fmt!r} cannot be streamed -- "
                         f"use stream=false for {fmt}")
    if len(text) > settings.max_text_chars:
        raise TooLarge(f"text is {len(text)} characters; this server accepts at most {settings.max_text_chars}")
    if not text.strip():
        raise InvalidInput("text is blank: give some text to speak")
    caller.require_voice(voice_id)  # before the registry, so a key cannot probe for voice names
    key = await run_in_threadpool(_voice_key, services.registry, voice_id)
    counted.voice = voice_id
    if services.synthesizer is None:
        raise Unavailable("no synthesis deployment is attached to this app")
    seed = fields.seed if fields.seed is not None else secrets.randbelow(SEED_MAX)
    job = SynthesisJob(text=text, lang=lang, fmt=fmt, params=SynthesisJob.params_from(fields, seed, stream))
    headers = {"X-Seed": str(seed), "X-Sample-Rate": str(SAMPLE_RATE)}
    handle = services.synthesizer.options(multiplexed_model_id=key)
    # a replica's RequestFailed (wrapped by Ray) reaches the app's error handlers as raised; a lost
    # replica is retried (the job carries its seed, so another replica makes the same audio)
    retry, budget, what = RetryLog(), settings.replica_retry_s, f"voice {voice_id!r}"
    if not stream:
        audio = await with_replica_retry(lambda: handle.synthesize.remote(job), budget, what, retry)
        return Response(audio, media_type=MEDIA_TYPES[fmt], headers={**headers, **retry.headers()})

    async def open_stream():
        chunks = handle.options(stream=True).stream.remote(job)
        try:
            return chunks, await chunks.__anext__()  # errors surface here, before the 200 status is sent
        except StopAsyncIteration:
            return chunks, b""

    chunks, first = await with_replica_retry(open_stream, budget, what, retry)
    headers.update(retry.headers())

    async def body() -> AsyncIterator[bytes]:
        yield (wav_stream_header() if fmt == "wav" else b"") + first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(body(), media_type=MEDIA_TYPES[fmt], headers=headers)


@router.post("/tts", response_class=Response, responses={**AUDIO, **ERRORS},
             summary="Synthesise text with a registered voice")
async def tts(req: TTSRequest, services: Services = Depends(get_services), caller: Caller = Depends(get_caller)):
    """Text -> audio. `stream=true` sends one chunk per text fragment as soon as it is ready, and
    the first fragment's first `first_chunk_tokens` tokens of audio ahead of it."""
    with services.metrics.request("tts_stream" if req.stream else "tts") as counted:
        return await synthesize(services, caller, counted, req.voice, req.text, req.lang, req.format, req,
                                req.stream)


@router.post("/audio/speech", response_class=Response, responses={**AUDIO, **ERRORS},
             summary="OpenAI-compatible speech synthesis")
async def speech(req: SpeechRequest, services: Services = Depends(get_services),
                 caller: Caller = Depends(get_caller)):
    """OpenAI's `audio.speech.create`: `voice` is a registered voice id, `model` is ignored,
    text read in the server's `openai_lang` mode (default `zh`: Chinese, with English words read
    as English -- the official default; `auto` would misdetect short Chinese phrases as Japanese). Formats: wav (default), flac, pcm (32 kHz, not
    OpenAI's 24 kHz), opus/ogg (Ogg Vorbis); mp3 and aac are refused with 400."""
    with services.metrics.request("speech") as counted:
        fmt = OPENAI_FORMATS.get(req.response_format.lower())
        if fmt is None:
            raise BadRequest(f"response_format {req.response_format!r} is not available; use one of wav, flac, "
                             f"pcm, opus (mp3 and aac encoders are not installed on this server)")
        if req.stream_format == "sse":
            raise BadRequest("stream_format 'sse' is not supported; use 'audio'")
        check_voice_id(req.voice)  # OpenAI's schema has no pattern for it; RegistryError -> 422
        fields = SamplingFields(speed=req.speed)
        return await synthesize(services, caller, counted, req.voice, req.input, services.settings.openai_lang, fmt,
                                fields, stream=False)
