"""Service settings: one pydantic `BaseSettings`, read from `VOICEFLEET_SERVE_*` environment
variables or given directly (app builder, `serve_config.yaml` args, CLI)."""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voicefleet.inference.params import (DEFAULT_ENGINE, DEFAULT_LANG, DEFAULT_PRECISION, REFERENCE_MAX_S,
                                         REFERENCE_MIN_S, Engine, Lang, PrecisionField)
from voicefleet.text.g2pw import G2PWModelField
from voicefleet.platform.registry import VOICE_ID

# Hard ceiling the OpenAPI schema states; a deployment may set a lower limit in its settings.
TEXT_CHARS_CEILING = 10_000

# Where `voicefleet serve` / `voicefleet run` listen (Ray Serve's http_options, not a ServeSettings field).
HTTP_HOST = "127.0.0.1"
HttpHost = Annotated[str, Field(description="HTTP host (0.0.0.0 to listen on every interface).")]
HTTP_PORT = 8000
HttpPort = Annotated[int, Field(ge=1, le=65535, description="HTTP port.")]
# Where the local Ray started by `voicefleet serve` exports metrics (None: a port Ray picks).
MetricsPort = Annotated[Optional[int], Field(ge=1, le=65535, description="Prometheus metrics port of the local "
                                                                       "Ray (default: a free port, printed).")]


class ApiKey(BaseModel):
    """A bearer key and the voices it may use; "*" allows every voice and managing voices."""

    model_config = ConfigDict(extra="forbid")

    key: SecretStr = Field(description="The bearer token (sent as `Authorization: Bearer <key>`).")
    voices: list[str] = Field(default_factory=lambda: ["*"],
                              description='Voice ids this key may synthesise with; ["*"] for all (admin).')

    @field_validator("voices")
    @classmethod
    def _check_voices(cls, voices: list[str]) -> list[str]:
        bad = [v for v in voices if v != "*" and not VOICE_ID.match(v)]
        if bad:
            raise ValueError(f"invalid voice ids {bad}: use a-z, 0-9, '_' and '-', or '*'")
        return voices

    @property
    def admin(self) -> bool:
        return "*" in self.voices

    def allows(self, voice_id: str) -> bool:
        return self.admin or voice_id in self.voices


class ServeSettings(BaseSettings):
    """Everything a deployment of the voicefleet service can be told."""

    model_config = SettingsConfigDict(env_prefix="VOICEFLEET_SERVE_", extra="forbid")

    storage: str = Field("runs", description="Storage path (folder or URI); voices live in <storage>/registry.")
    pretrained: str = Field("pretrained_models", description="Official GPT-SoVITS pretrained_models folder.")
    engine: Engine = Field(DEFAULT_ENGINE, description="What the synthesis replicas run: torch (the PyTorch models) "
                           "or onnx (each voice's ONNX export in the registry, written by `voicefleet export onnx "
                           "VOICE`, on onnxruntime without PyTorch; a voice without a current export answers 409).")
    precision: PrecisionField = DEFAULT_PRECISION
    g2pw_model: G2PWModelField = None

    # replicas
    max_voices_per_replica: int = Field(4, ge=1, le=64, description="Voices cached per synthesis replica (LRU).")
    max_adapter_voices_per_replica: int = Field(
        500, ge=1, le=100_000, description="Adapter (LoRA) voices resident per synthesis replica (LRU, apart from "
        "full voices; they share one backbone).")
    adapter_memory_mb: float = Field(1024.0, gt=0, le=1_048_576, description="Memory budget of the resident adapter "
                                     "voices per replica, in MiB (LRU eviction beyond it).")
    min_replicas: int = Field(1, ge=0, le=256, description="Autoscaling lower bound (synthesis replicas).")
    max_replicas: int = Field(1, ge=1, le=256, description="Autoscaling upper bound (synthesis replicas).")
    target_ongoing_requests: float = Field(2.0, gt=0, le=64, description="Autoscaling target per replica.")
    max_ongoing_requests: int = Field(4, ge=1, le=256,
                                      description="Requests one synthesis replica accepts at once; others queue.")
    synthesis_threads: int = Field(2, ge=1, le=64, description="Threads running synthesis in each replica.")
    torch_threads: int = Field(1, ge=1, le=64, description="torch intra-op threads per synthesis thread (the onnx "
                                                           "engine: onnxruntime intra-op threads per graph).")
    # Off by default for the same reason as batching: float sums depend on the thread count, so with
    # adaptive threads a seed reproduces the same audio only under the same load.
    adaptive_threads: bool = Field(False, description="A job running alone uses synthesis_threads * torch_threads "
                                                      "intra-op threads (faster lone requests; audio for a seed "
                                                      "then depends on load).")
    # On by default: used only when a start-up probe finds those stages bit-identical at both counts.
    widen_invariant_stages: bool = Field(
        True, description="A job running alone computes BERT features and GPT tokens (the stages whose results "
                          "do not depend on the thread count, checked on the first voice load) with "
                          "synthesis_threads * torch_threads intra-op threads; the audio for a seed is unchanged.")
    num_cpus: float = Field(1.0, ge=0, le=256, description="CPUs reserved by each synthesis replica.")
    num_gpus: float = Field(0.0, ge=0, le=8, description="GPUs (fractional) reserved by each synthesis replica.")
    replica_retry_s: float = Field(
        30.0, ge=0, le=600, description="How long the ingress keeps sending a request again when its synthesis "
                                        "replica is lost (the request carries its seed, so the audio is the same); "
                                        "0 turns retries off. Streams are retried only before their first chunk.")
    gateway_num_cpus: float = Field(0.0, ge=0, le=16, description="CPUs reserved by each ingress replica.")

    # batching: concurrent requests for one voice with the same sampling knobs share one GPT decode.
    # Off (1) by default: a batched decode is not bit-identical to a lone one, so a seed then
    # reproduces audio only with the same batch companions (see serve/batching.py).
    batch_max_size: int = Field(1, ge=1, le=64, description="Requests gathered into one batched decode (1: off).")
    batch_wait_timeout_s: float = Field(0.02, ge=0, le=1, description="How long a batch waits to fill.")

    # OpenAI's speech API has no language field; this is the language its texts are read in.
    openai_lang: Lang = Field(DEFAULT_LANG, description="Language mode of POST /v1/audio/speech texts (the OpenAI "
                                                        "API has no such field): zh, all_zh, en, ja, all_ja, ko, "
                                                        "all_ko, yue, all_yue, auto or auto_yue.")

    # request limits
    max_text_chars: int = Field(2000, ge=1, le=TEXT_CHARS_CEILING, description="Longest text accepted.")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024,
                                  description="Largest request body (reference clip uploads).")
    reference_min_s: float = Field(REFERENCE_MIN_S, ge=REFERENCE_MIN_S, le=REFERENCE_MAX_S,
                                   description=f"Shortest reference clip accepted (official: {REFERENCE_MIN_S:g} s).")
    reference_max_s: float = Field(REFERENCE_MAX_S, ge=REFERENCE_MIN_S, le=REFERENCE_MAX_S,
                                   description=f"Longest reference clip accepted (official: {REFERENCE_MAX_S:g} s).")

    # On by default: a voice's requests and audio seconds are what an operator bills and sizes by.
    # With thousands of voices every counter grows a series per voice; off records them without it.
    metrics_per_voice: bool = Field(True, description="Tag the request and audio counters of the service's "
                                                      "metrics with the voice id (off: one series for all voices).")

    api_keys: list[ApiKey] = Field(default_factory=list,
                                   description="Bearer keys; empty means no authentication.")

    @model_validator(mode="after")
    def _check_ranges(self) -> "ServeSettings":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        if self.reference_min_s > self.reference_max_s:
            raise ValueError(f"reference_min_s ({self.reference_min_s}) > reference_max_s ({self.reference_max_s})")
        if self.engine == "onnx":
            # settings of the torch models only; refused rather than ignored, as they change the audio
            torch_only = {"precision": (self.precision, DEFAULT_PRECISION, "export with --int8 for int8 graphs"),
                          "g2pw_model": (self.g2pw_model, None, "the dictionary reads polyphonic characters"),
                          "batch_max_size": (self.batch_max_size, 1, "each request decodes alone"),
                          "adaptive_threads": (self.adaptive_threads, False, "threads are fixed per graph")}
            for name, (value, default, why) in torch_only.items():
                if value != default:
                    raise ValueError(f"{name}={value} is a torch-engine setting; with engine onnx leave it at "
                                     f"{default} ({why})")
        return self

    @property
    def registry_root(self) -> str:
        """Where the voice registry lives (as `platform.voices.registry_for`)."""
        return f"{self.storage.rstrip('/')}/registry"

    def autoscaling_config(self) -> dict:
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests}

    def ray_actor_options(self) -> dict:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
