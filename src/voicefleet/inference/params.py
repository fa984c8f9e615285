"""Synthesis knobs: each default and its bounds, defined once.

The Python API (`SynthesisParams`), the HTTP schemas (`serve.schemas` subclasses it) and the
`voicefleet synthesize` flags (`cli.common.field_option`) all read these fields, so a default or a
bound changed here changes everywhere.

Defaults are those of the official inference API (GPT-SoVITS `api_v2.py`); bounds are the official
web UI's sliders where it has them. Where ours differ, the field says why.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The text front end's modes (`text.frontend.MODES`), the official UI's language choices.
Lang = Literal["zh", "all_zh", "en", "auto", "all_ja", "ja", "all_ko", "ko", "all_yue", "yue", "auto_yue"]
SplitMethod = Literal["cut0", "cut1", "cut2", "cut3", "cut4", "cut5"]  # `text.splitting.METHODS`
Precision = Literal["fp32", "fast"]
Engine = Literal["torch", "onnx"]
ENGINES: tuple[str, ...] = get_args(Engine)
PRECISIONS: tuple[str, ...] = get_args(Precision)

DEFAULT_LANG: Lang = "zh"  # the official UI's default (中英混合: Chinese, English words read as English)
LangField = Annotated[Lang, Field(description="Language of the text: zh (Chinese with English words), all_zh "
                                              "(Chinese only), en, ja / all_ja (Japanese), ko / all_ko (Korean), "
                                              "yue / all_yue (Cantonese), auto (detected per piece) or auto_yue "
                                              "(detected, Chinese read as Cantonese).")]
DEFAULT_PRECISION: Precision = "fp32"
DEFAULT_ENGINE: Engine = "torch"
EngineField = Annotated[Engine, Field(description="torch: the PyTorch models (--pretrained); onnx: the graphs of a "
                                                  "`voicefleet export onnx` folder on onnxruntime (--onnx-dir), "
                                                  "without PyTorch.")]
PrecisionField = Annotated[Precision, Field(description="fp32: official numerics; fast: int8 GPT, bf16 BERT "
                                                        "linears and HiFi-GAN on CPUs with AVX512-BF16/AMX "
                                                        "(about 4x faster than fp32 at batch 1).")]

REFERENCE_MIN_S, REFERENCE_MAX_S = 3.0, 10.0  # official limits on the reference clip
SEED_MAX = 2**31 - 1
TOKENS_PER_SECOND = 25  # semantic tokens per second of audio
MIN_STEPS_BEFORE_EOS = 11  # EOS cannot be chosen in the first 11 steps (0.44 s of audio at 25 Hz)
MAX_TOKENS = 1500  # 60 s of audio per fragment: the longest the GPT is asked to decode
# Early first chunk (streaming): the prefix decode's last tokens lack right context, so the chunk
# stops this many tokens short of `first_chunk_tokens`.
FIRST_CHUNK_HOLDBACK_TOKENS = 2
STREAM_FIRST_CHUNK_TOKENS = 12  # HTTP streaming default: 0.48 s of audio ahead of the rest

# Official slider 0.6-1.65; wider here to take OpenAI's speech API range (0.25-4).
Speed = Annotated[float, Field(ge=0.25, le=4.0, description="Speaking rate factor (1 = as the reference).")]
FirstChunkTokens = Annotated[int, Field(
    ge=0, le=250,
    description=f"Streaming: send the audio of the first fragment's first N semantic tokens ({TOKENS_PER_SECOND} "
                f"per second) while the rest of it is decoded, for a faster first chunk; 0 sends whole fragments "
                f"only. 1-{FIRST_CHUNK_HOLDBACK_TOKENS} are refused (the early chunk stops "
                f"{FIRST_CHUNK_HOLDBACK_TOKENS} tokens short of N).")]


class SynthesisError(ValueError):
    """A synthesis request that cannot be served as given (bad reference, empty text, ...); both
    engines raise it (importable from `voicefleet.inference.pipeline` too)."""


def check_reference_wave(wave, sample_rate: int) -> float:
    """The duration in seconds of a reference clip (a numpy array at `sample_rate`); refused outside
    the official length limits or when silent. Both engines call it."""
    duration = len(wave) / sample_rate
    if not REFERENCE_MIN_S <= duration <= REFERENCE_MAX_S:
        raise SynthesisError(f"reference audio is {duration:.1f} s long; it must be between "
                             f"{REFERENCE_MIN_S:.0f} and {REFERENCE_MAX_S:.0f} s")
    if float(abs(wave).max(initial=0.0)) < 1e-4:
        raise SynthesisError("reference audio is silent")
    return duration


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is drawn; defaults are the official TTS API defaults.

    The order is official: repetition penalty on every token already in the sequence (prompt
    included; scores below 0 are multiplied by it, others divided), then top-p (only if < 1, on the
    penalised logits), then temperature (floored at 1e-5), then top-k (ties with the k-th value
    kept), then softmax and an exponential race (arg-max of p / q with q ~ Exp(1)).
    """

    top_k: int | None = 15  # None disables top-k
    top_p: float = 1.0  # values >= 1 disable nucleus filtering
    temperature: float = 1.0
    repetition_penalty: float = 1.35

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (disabled), got {self.top_k}")
        if not self.top_p > 0:
            raise ValueError(f"top_p must be > 0 (values >= 1 disable it), got {self.top_p}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


GREEDY = SamplingParams(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.0)


def fragment_seed(seed: int, index: int, purpose: str) -> int:
    """The seed of one fragment's random draws for one purpose ("gpt", "sovits"), derived from the request
    seed only, so that a fragment's draws do not depend on which fragments share its batch."""
    digest = hashlib.sha256(f"{seed}:{index}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SynthesisParams(BaseModel):
    """Per-request knobs of `Synthesizer.synthesize` / `stream`; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: int = Field(15, ge=1, le=100, description="GPT top-k sampling.")
    # Official slider 0-1; 0 would keep no token, so the bound is open.
    top_p: float = Field(1.0, gt=0, le=1, description="GPT nucleus sampling threshold (1 disables it).")
    # Official slider 0-1 (the sampler floors it at 1e-5, so 0 is greedy); up to 2 here because the
    # official HTTP API sets no limit and hotter sampling is a legitimate request.
    temperature: float = Field(1.0, ge=0, le=2, description="GPT sampling temperature.")
    # Official slider 0-2; 0 is left out because the penalty divides positive scores.
    repetition_penalty: float = Field(1.35, gt=0, le=2, description="GPT repetition penalty on tokens "
                                                                   "already decoded (1 disables it).")
    # Not exposed by the official API; 0.5 is what its SoVITS decode uses.
    noise_scale: float = Field(0.5, ge=0, le=1, description="SoVITS noise scale.")
    speed: Speed = 1.0
    # Official slider 0.01-1; 0 (no pause) and up to 2 s allowed here.
    fragment_interval: float = Field(0.3, ge=0, le=2, description="Seconds of silence after each fragment.")
    text_split_method: SplitMethod = Field("cut5", description="Official text split method: cut0 (none), cut1 "
                                                               "(4 sentences), cut2 (50 chars), cut3 (。), "
                                                               "cut4 (.), cut5 (every punctuation mark).")
    # Official slider 1-200; 16 here because every row keeps its own GPT cache (~0.2 GB at the
    # token cap), and one request's memory should stay bounded.
    batch_size: int = Field(1, ge=1, le=16, description="Fragments decoded together by the GPT.")
    # Official: -1 draws one; here None does.
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="Seed: the same seed, input and batch_size "
                                                                  "give the same audio. Random if absent.")
    max_tokens: int = Field(MAX_TOKENS, ge=1, le=MAX_TOKENS, description="Cap on semantic tokens per fragment "
                                                                         f"({TOKENS_PER_SECOND} per second of "
                                                                         "audio).")
    first_chunk_tokens: FirstChunkTokens = 0  # the HTTP API's default is STREAM_FIRST_CHUNK_TOKENS

    @field_validator("first_chunk_tokens")
    @classmethod
    def _check_first_chunk(cls, n: int) -> int:
        if 0 < n <= FIRST_CHUNK_HOLDBACK_TOKENS:
            raise ValueError(f"first_chunk_tokens must be 0 or more than {FIRST_CHUNK_HOLDBACK_TOKENS}, got {n}")
        return n

    def sampling(self) -> SamplingParams:
        return SamplingParams(top_k=self.top_k, top_p=self.top_p, temperature=self.temperature,
                              repetition_penalty=self.repetition_penalty)
