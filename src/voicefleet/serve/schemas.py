"""Request/response models of the HTTP API; every field carries a description and bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voicefleet.inference.pipeline import FIRST_CHUNK_HOLDBACK_TOKENS, SynthesisParams
from voicefleet.platform.registry import VOICE_ID
from voicefleet.serve.settings import MAX_TOKENS_CEILING, TEXT_CHARS_CEILING

VOICE_ID_PATTERN = VOICE_ID.pattern
Lang = Literal["zh", "all_zh", "en", "auto"]
AudioFormat = Literal["wav", "flac", "ogg", "pcm"]
SplitMethod = Literal["cut0", "cut1", "cut2", "cut3", "cut4", "cut5"]
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "pcm": "audio/pcm"}
SEED_MAX = 2**31 - 1
FIRST_CHUNK_TOKENS_DEFAULT = 12  # 0.48 s of audio ahead of the rest of the first fragment


class SamplingFields(BaseModel):
    """The official synthesis knobs (api_v2 defaults)."""

    top_k: int = Field(15, ge=1, le=100, description="GPT top-k sampling.")
    top_p: float = Field(1.0, gt=0, le=1, description="GPT nucleus sampling threshold.")
    temperature: float = Field(1.0, ge=0.01, le=2, description="GPT sampling temperature.")
    repetition_penalty: float = Field(1.35, ge=1, le=2, description="GPT repetition penalty.")
    noise_scale: float = Field(0.5, ge=0, le=1, description="SoVITS noise scale.")
    speed: float = Field(1.0, ge=0.25, le=4, description="Speaking rate factor (1 = as the reference).")
    fragment_interval: float = Field(0.3, ge=0, le=2, description="Seconds of silence after each fragment.")
    text_split_method: SplitMethod = Field("cut5", description="Official text split method (cut5: punctuation).")
    batch_size: int = Field(1, ge=1, le=16, description="Fragments of this request decoded together.")
    seed: int | None = Field(None, ge=0, le=SEED_MAX,
                             description="Seed; the same seed and input give the same audio. Random if absent "
                                         "(the seed used is returned in the X-Seed header).")
    max_tokens: int = Field(MAX_TOKENS_CEILING, ge=1, le=MAX_TOKENS_CEILING,
                            description="Cap on semantic tokens per fragment (25 per second of audio).")


class TTSRequest(SamplingFields):
    """`POST /v1/tts`: text -> audio with one registered voice."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"voice": "alice", "text": "今天天气很好。", "lang": "zh", "seed": 0, "format": "wav"}]})

    voice: str = Field(..., pattern=VOICE_ID_PATTERN, description="Registered voice id.")
    text: str = Field(..., min_length=1, max_length=TEXT_CHARS_CEILING,
                      description="Text to speak (the server's max_text_chars applies).")
    lang: Lang = Field("zh", description="zh (English words read as English), all_zh, en, or auto (detected).")
    format: AudioFormat = Field("wav", description="wav, flac, ogg (Vorbis) or pcm (s16le mono 32 kHz).")
    stream: bool = Field(False, description="Send audio fragment by fragment as it is synthesised "
                                            "(wav with an open-ended header, or pcm; not flac/ogg).")
    first_chunk_tokens: int = Field(
        FIRST_CHUNK_TOKENS_DEFAULT, ge=0, le=250,
        description="With stream=true: send the audio of the first fragment's first N semantic tokens (25 per "
                    "second) while the rest of it is decoded, for a faster first chunk; 0 sends whole "
                    f"fragments only. 1-{FIRST_CHUNK_HOLDBACK_TOKENS} are refused (the early chunk stops "
                    f"{FIRST_CHUNK_HOLDBACK_TOKENS} tokens short of N).")

    @field_validator("first_chunk_tokens")
    @classmethod
    def _check_first_chunk(cls, n: int) -> int:
        if 0 < n <= FIRST_CHUNK_HOLDBACK_TOKENS:
            raise ValueError(f"first_chunk_tokens must be 0 or more than {FIRST_CHUNK_HOLDBACK_TOKENS}")
        return n


class SpeechRequest(BaseModel):
    """`POST /v1/audio/speech`, as the OpenAI API defines it (what the OpenAI clients send)."""

    model_config = ConfigDict(extra="ignore")  # newer OpenAI clients add fields; unknown ones are ignored

    model: str = Field(..., min_length=1, max_length=200, description="Accepted for compatibility; ignored.")
    input: str = Field(..., min_length=1, max_length=TEXT_CHARS_CEILING, description="Text to speak.")
    voice: str = Field(..., min_length=1, max_length=64, description="Registered voice id.")
    response_format: str = Field("wav", max_length=16,
                                 description="wav, flac, pcm (s16le mono 32 kHz) or opus/ogg (Ogg Vorbis); mp3 "
                                             "and aac are refused with 400. Default wav (OpenAI's is mp3).")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="Speaking rate factor.")
    instructions: str | None = Field(None, max_length=4096, description="Accepted for compatibility; ignored.")
    stream_format: Literal["audio", "sse"] | None = Field(None, description="Only 'audio' is supported.")


class VoiceInfo(BaseModel):
    voice_id: str = Field(..., description="Voice id.")
    prompt_text: str = Field(..., description="Transcript of the reference clip.")
    prompt_lang: str = Field(..., description="Language of the transcript.")
    version: int = Field(..., description="Registry version of the voice.")
    created_at: str = Field(..., description="When this version was registered (UTC, ISO 8601).")


class VoiceList(BaseModel):
    voices: list[VoiceInfo] = Field(..., description="Voices the caller may use, sorted by id.")


class ErrorBody(BaseModel):
    message: str = Field(..., description="What went wrong and what to change.")
    type: str = Field(..., description="Error class: invalid_request_error, not_found, authentication_error, ...")
    details: list[dict] | None = Field(None, description="Validation errors (422) only: one "
                                                         "{\"loc\": [...], \"msg\": ...} per bad field.")


class ErrorResponse(BaseModel):
    error: ErrorBody


@dataclass(frozen=True)
class SynthesisJob:
    """What the ingress sends to a synthesis replica for one request (picklable, immutable)."""

    text: str
    lang: str
    fmt: str
    params: SynthesisParams

    @staticmethod
    def params_from(fields: SamplingFields, seed: int, stream: bool = False) -> SynthesisParams:
        return SynthesisParams(top_k=fields.top_k, top_p=fields.top_p, temperature=fields.temperature,
                               repetition_penalty=fields.repetition_penalty, noise_scale=fields.noise_scale,
                               speed=fields.speed, fragment_interval=fields.fragment_interval,
                               text_split_method=fields.text_split_method, batch_size=fields.batch_size,
                               seed=seed, max_tokens=fields.max_tokens,
                               first_chunk_tokens=getattr(fields, "first_chunk_tokens", 0) if stream else 0)
