"""Voice routes: list, register a zero-shot voice from an uploaded clip, delete."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from voicefleet.inference.params import DEFAULT_LANG, Lang
from voicefleet.models.pretrained import find_pretrained
from voicefleet.platform.registry import VoiceRecord
from voicefleet.serve.dependencies import Caller, Services, get_caller, get_services
from voicefleet.serve.errors import InvalidInput, TooLarge, openapi_errors
from voicefleet.serve.lineage import public_lineage, voice_kind
from voicefleet.serve.schemas import VOICE_ID_PATTERN, VoiceInfo, VoiceList

# Registry errors (VoiceExists -> 409, VoiceNotFound -> 404, an invalid id -> 422) propagate to
# the app's handlers, which answer them from the table in serve/errors.py.
router = APIRouter(prefix="/v1/voices", tags=["voices"])
ERRORS = openapi_errors(400, 401, 403, 404, 409, 413, 422, 507)


def _info(record: VoiceRecord) -> VoiceInfo:
    return VoiceInfo(voice_id=record.voice_id, prompt_text=record.prompt_text, prompt_lang=record.prompt_lang,
                     version=record.version, model_version=record.model_version, created_at=record.created_at,
                     kind=voice_kind(record),
                     lineage=public_lineage(record), evaluation=record.evaluation or None)


@router.get("", response_model=VoiceList, responses=ERRORS, summary="List voices")
def list_voices(services: Services = Depends(get_services), caller: Caller = Depends(get_caller)) -> VoiceList:
    return VoiceList(voices=[_info(r) for r in services.registry.list() if caller.allows(r.voice_id)])


def _check_reference(data: bytes, min_s: float, max_s: float) -> None:
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - any decoder failure is the upload's fault
        reason = " ".join(str(e).split()).rpartition(">: ")[2]  # not libsndfile's "Error opening <object>: "
        raise InvalidInput(f"reference clip could not be decoded ({reason}); send wav, flac or ogg") from None
    duration = len(audio) / sr if sr else 0.0
    if not min_s <= duration <= max_s:
        raise InvalidInput(f"reference clip is {duration:.2f} s long; it must be between {min_s:g} and {max_s:g} s")
    if float(np.abs(audio).max(initial=0.0)) < 1e-4:
        raise InvalidInput("reference clip is silent")


def _register(services: Services, voice_id: str, data: bytes, prompt_text: str, prompt_lang: str) -> VoiceRecord:
    settings = services.settings
    _check_reference(data, settings.reference_min_s, settings.reference_max_s)
    paths = find_pretrained(settings.pretrained)
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference.wav"
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        sf.write(ref, audio.mean(axis=1), sr, subtype="PCM_16")  # normalised container: mono 16-bit wav
        return services.registry.register(voice_id, gpt=paths.gpt, sovits=paths.sovits_g, reference=ref,
                                          prompt_text=prompt_text, prompt_lang=prompt_lang,
                                          lineage={"source": "zero-shot upload"})


@router.post("", response_model=VoiceInfo, status_code=201, responses=ERRORS, summary="Register a zero-shot voice")
async def create_voice(
        voice_id: str = Form(..., pattern=VOICE_ID_PATTERN, description="New voice id (a-z, 0-9, '_', '-')."),
        reference: UploadFile = File(..., description="Reference clip, 3-10 s (wav, flac or ogg)."),
        prompt_text: str = Form("", max_length=500, description="Transcript of the reference clip (recommended)."),
        prompt_lang: Lang = Form(DEFAULT_LANG, description="Language of the transcript."),
        services: Services = Depends(get_services), caller: Caller = Depends(get_caller)) -> VoiceInfo:
    """Register a voice that uses the pretrained GPT/SoVITS weights with an uploaded reference clip."""
    caller.require_admin()
    limit = services.settings.max_upload_bytes
    data = await reference.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"reference clip is larger than {limit} bytes, this server's limit")
    return _info(await run_in_threadpool(_register, services, voice_id, data, prompt_text, prompt_lang))


@router.delete("/{voice_id}", status_code=204, responses=ERRORS, summary="Delete a voice")
def delete_voice(voice_id: str, services: Services = Depends(get_services),
                 caller: Caller = Depends(get_caller)) -> None:
    caller.require_admin()
    services.registry.delete(voice_id)
