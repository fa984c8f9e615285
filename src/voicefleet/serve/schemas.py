"""Request/response models of the HTTP API; every field carries a description and bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voicefleet.inference.params import SEED_MAX  # noqa: F401 - the routers' import
from voicefleet.inference.params import STREAM_FIRST_CHUNK_TOKENS as FIRST_CHUNK_TOKENS_DEFAULT
from voicefleet.inference.params import DEFAULT_LANG, FirstChunkTokens, LangField, Speed, SynthesisParams
from voicefleet.models.config import SAMPLE_RATE
from voicefleet.platform.registry import VOICE_ID
from voicefleet.serve.settings import TEXT_CHARS_CEILING

VOICE_ID_PATTERN = VOICE_ID.pattern
AudioFormat = Literal["wav", "flac", "ogg", "pcm"]
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "pcm": "audio/pcm"}
_KHZ = f"{SAMPLE_RATE / 1000:g} kHz"


class SamplingFields(SynthesisParams):
    """The synthesis knobs of a request: `SynthesisParams`' fields, defaults and bounds."""


class TTSRequest(SamplingFields):
    """`POST /v1/tts`: text -> audio with one registered voice."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"voice": "alice", "text": "今天天气很好。", "lang": "zh", "seed": 0, "format": "wav"}]})

    voice: str = Field(..., pattern=VOICE_ID_PATTERN, description="Registered voice id.")
    text: str = Field(..., min_length=1, max_length=TEXT_CHARS_CEILING,
                      description="Text to speak (the server's max_text_chars applies).")
    lang: LangField = DEFAULT_LANG
    format: AudioFormat = Field("wav", description=f"wav, flac, ogg (Vorbis) or pcm (s16le mono {_KHZ}).")
    stream: bool = Field(False, description="Send audio fragment by fragment as it is synthesised "
                                            "(wav with an open-ended header, or pcm; not flac/ogg).")
    # over HTTP an early first chunk is the default when streaming (the Python API's is 0)
    first_chunk_tokens: FirstChunkTokens = FIRST_CHUNK_TOKENS_DEFAULT


class SpeechRequest(BaseModel):
    """`POST /v1/audio/speech`, as the OpenAI API defines it (what the OpenAI clients send)."""

    model_config = ConfigDict(extra="ignore")  # newer OpenAI clients add fields; unknown ones are ignored

    model: str = Field(..., min_length=1, max_length=200, description="Accepted for compatibility; ignored.")
    input: str = Field(..., min_length=1, max_length=TEXT_CHARS_CEILING, description="Text to speak.")
    voice: str = Field(..., min_length=1, max_length=64, description="Registered voice id.")
    response_format: str = Field("wav", max_length=16,
                                 description=f"wav, flac, pcm (s16le mono {_KHZ}) or opus/ogg (Ogg Vorbis); mp3 "
                                             "and aac are refused with 400. Default wav (OpenAI's is mp3).")
    speed: Speed = SynthesisParams.model_fields["speed"].default
    instructions: str | None = Field(None, max_length=4096, description="Accepted for compatibility; ignored.")
    stream_format: Literal["audio", "sse"] | None = Field(None, description="Only 'audio' is supported.")


VoiceKind = Literal["sweep", "trained", "zero-shot", "imported"]


class VoiceInfo(BaseModel):
    voice_id: str = Field(..., description="Voice id.")
    prompt_text: str = Field(..., description="Transcript of the reference clip.")
    prompt_lang: str = Field(..., description="Language of the transcript.")
    version: int = Field(..., description="Registry version of the voice.")
    model_version: str | None = Field("v2", description="GPT-SoVITS model version of its weights: v2, v2Pro or "
                                                        "v2ProPlus (null if unknown).")
    created_at: str = Field(..., description="When this version was registered (UTC, ISO 8601).")
    kind: VoiceKind = Field("imported", description="Where the weights came from: the best trial of a sweep, a "
                                                    "training run, the pretrained weights with an uploaded clip "
                                                    "(zero-shot), or files registered directly (imported).")
    lineage: dict[str, Any] = Field(default_factory=dict, description="Sweep, trial, runs and dataset the voice "
                                    "came from (the dataset as its folder name only).")
    evaluation: dict[str, Any] | None = Field(None, description="The latest `voicefleet eval` summary of this "
                                              "version (speaker similarity, DNSMOS, WER, RTF, ...), if any.")


class VoiceList(BaseModel):
    voices: list[VoiceInfo] = Field(..., description="Voices the caller may use, sorted by id.")


class ReportFile(BaseModel):
    name: str = Field(..., description="File name, e.g. trials.csv or curves.png.")
    url: str = Field(..., description="Where to read it, relative to the API root.")
    media_type: str = Field(..., description="Its content type.")


class ReportGroup(BaseModel):
    group: Literal["sweep", "sovits_run", "gpt_run"] = Field(..., description="Which folder of the voice's lineage.")
    name: str = Field(..., description="The sweep id or run name.")
    files: list[ReportFile] = Field(..., description="The report files that folder holds (only those that exist).")


class VoiceReports(BaseModel):
    voice_id: str = Field(..., description="Voice id.")
    groups: list[ReportGroup] = Field(..., description="The sweep's report and the training runs' curves, as far "
                                                       "as the voice's lineage names them; empty for other voices.")


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
        knobs = fields.model_dump(include=set(SynthesisParams.model_fields))
        return SynthesisParams(**{**knobs, "seed": seed,
                                  "first_chunk_tokens": knobs["first_chunk_tokens"] if stream else 0})
