"""Synthesis routes: `POST /v1/tts` (all knobs) and OpenAI-compatible `POST /v1/audio/speech`."""

from __future__ import annotations

import secrets
import struct
from typing import AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from voicefleet.models.config import SAMPLE_RATE
from voicefleet.platform.registry import RegistryError, VoiceNotFound, VoiceRegistry
from voicefleet.serve.dependencies import Caller, ServeSettings, Services, api_error, get_caller, get_services
from voicefleet.serve.errors import as_request_failed
from voicefleet.serve.schemas import MEDIA_TYPES, SEED_MAX, ErrorResponse, SpeechRequest, SynthesisJob, TTSRequest
from voicefleet.serve.synthesizer import voice_key

router = APIRouter(prefix="/v1", tags=["speech"])

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 422)}
AUDIO = {200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "Audio bytes."}}
# OpenAI names -> ours; mp3/aac need encoders libsndfile lacks here, so they are refused with 400.
OPENAI_FORMATS = {"wav": "wav", "flac": "flac", "pcm": "pcm", "opus": "ogg", "ogg": "ogg"}


def wav_stream_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit mono WAV header whose sizes say 'unknown' (0xFFFFFFFF), for streamed WAV.

    Players (ffmpeg, browsers, soundfile) read such a file to its end; the exact length is not
    known when the first fragment leaves."""
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16) +
            b"data" + struct.pack("<I", unknown))


def _check_voice(registry: VoiceRegistry, voice_id: str, caller: Caller) -> str:
    try:
        record = registry.get(voice_id)
    except VoiceNotFound as e:
        raise api_error(404, "not_found", e.client_message) from None  # no storage location for clients
    except RegistryError as e:
        raise api_error(422, "invalid_request_error", e.client_message) from None
    caller.require_voice(voice_id)
    return voice_key(voice_id, record.version)


def _raise_mapped(e: BaseException):
    failed = as_request_failed(e)
    if failed is None:
        raise e
    raise api_error(failed.status, failed.type, failed.message) from None


async def synthesize(services: Services, caller: Caller, voice_id: str, text: str, lang: str, fmt: str,
                     fields, stream: bool) -> Response:
    settings: ServeSettings = services.settings
    if len(text) > settings.max_text_chars:
        raise api_error(413, "invalid_request_error",
                        f"text is {len(text)} characters; this server accepts at most {settings.max_text_chars}")
    if not text.strip():
        raise api_error(422, "invalid_request_error", "text is empty")
    caller.require_voice(voice_id)  # before the registry, so a key cannot probe for voice names
    key = await run_in_threadpool(_check_voice, services.registry, voice_id, caller)
    seed = fields.seed if fields.seed is not None else secrets.randbelow(SEED_MAX)
    job = SynthesisJob(text=text, lang=lang, fmt=fmt, params=SynthesisJob.params_from(fields, seed, stream))
    headers = {"X-Seed": str(seed), "X-Sample-Rate": str(SAMPLE_RATE)}
    handle = services.synthesizer.options(multiplexed_model_id=key)
    if not stream:
        try:
            audio = await handle.synthesize.remote(job)
        except Exception as e:  # noqa: BLE001 - mapped to 4xx or re-raised
            _raise_mapped(e)
        return Response(audio, media_type=MEDIA_TYPES[fmt], headers=headers)
    if fmt not in ("wav", "pcm"):
        raise api_error(400, "invalid_request_error",
                        f"streaming sends wav (open-ended header) or pcm; {fmt!r} cannot be streamed -- "
                        f"use stream=false for {fmt}")
    chunks = handle.options(stream=True).stream.remote(job)
    try:
        first = await chunks.__anext__()  # errors surface here, before the 200 status is sent
    except StopAsyncIteration:
        first = b""
    except Exception as e:  # noqa: BLE001
        _raise_mapped(e)

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
    return await synthesize(services, caller, req.voice, req.text, req.lang, req.format, req, req.stream)


@router.post("/audio/speech", response_class=Response, responses={**AUDIO, **ERRORS},
             summary="OpenAI-compatible speech synthesis")
async def speech(req: SpeechRequest, services: Services = Depends(get_services),
                 caller: Caller = Depends(get_caller)):
    """OpenAI's `audio.speech.create`: `voice` is a registered voice id, `model` is ignored,
    text read in `zh` mode (Chinese, with English words read as English -- the official
    default; `auto` would misdetect short Chinese phrases as Japanese). Formats: wav (default), flac, pcm (32 kHz, not
    OpenAI's 24 kHz), opus/ogg (Ogg Vorbis); mp3 and aac are refused with 400."""
    fmt = OPENAI_FORMATS.get(req.response_format.lower())
    if fmt is None:
        raise api_error(400, "invalid_request_error",
                        f"response_format {req.response_format!r} is not available; use one of wav, flac, pcm, "
                        f"opus (mp3 and aac encoders are not installed on this server)")
    if req.stream_format == "sse":
        raise api_error(400, "invalid_request_error", "stream_format 'sse' is not supported; use 'audio'")
    from voicefleet.serve.schemas import SamplingFields

    try:
        from voicefleet.platform.registry import check_voice_id

        check_voice_id(req.voice)
    except RegistryError as e:
        raise api_error(422, "invalid_request_error", str(e)) from None
    fields = SamplingFields(speed=req.speed)
    return await synthesize(services, caller, req.voice, req.input, "zh", fmt, fields, stream=False)
