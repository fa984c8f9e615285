"""What a LoRA adapter adapts: the stage, rank, alpha and target groups (no torch, so that run
configurations and the command line read these defaults without loading it).

The layers themselves, the hooks that apply them and the file format are in
`voicefleet.models.adapters`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AdapterStage = Literal["sovits", "gpt"]

# Target groups per stage: a group name -> a pattern over module names of the stage's model.
# GPT: the attention's packed q/k/v and output projections, the feed-forward projections.
# SoVITS: every 1-d convolution of the text encoder (content/text encoders, MRTE, prior
# projection), of the flow's couplings, or of the decoder's input and residual blocks (its
# transposed upsampling convolutions are left to the backbone).
TARGET_GROUPS: dict[str, dict[str, str]] = {
    "gpt": {"attn": r"layers\.\d+\.attn\.(qkv|out)", "ffn": r"layers\.\d+\.ffn\.(up|down)"},
    "sovits": {"text_encoder": r"text_encoder\..+", "flow": r"flow\..+",
               "decoder": r"decoder\.(conv_pre|resblocks\..+)"},
}
# The defaults: all of the GPT's projections; the SoVITS text encoder and flow (the decoder's
# wide residual convolutions add the most compute per synthesised second, so they are opt-in).
# At rank 8 both stages' adapters hold 2.5 M parameters, 2.1% of a full v2 voice.
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {"gpt": ("attn", "ffn"), "sovits": ("text_encoder", "flow")}
DEFAULT_RANK = 8
DEFAULT_ALPHA = 16.0  # scaling alpha / rank = 2, as is common for LoRA at small ranks
MAX_RANK = 1024


class AdapterError(ValueError):
    """An adapter that cannot be built, read or applied (bad targets, mismatched base, bad file)."""


def parse_targets(text: str | None) -> tuple[str, ...]:
    """'attn, ffn' -> ('attn', 'ffn'); None or empty -> () (the stage's default)."""
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


@dataclass(frozen=True)
class AdapterSpec:
    """What an adapter adapts: the stage, rank, alpha and target groups (empty: the stage's default)."""

    stage: AdapterStage
    rank: int = DEFAULT_RANK
    alpha: float = DEFAULT_ALPHA
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.stage not in TARGET_GROUPS:
            raise AdapterError(f"adapter stage must be one of {sorted(TARGET_GROUPS)}, got {self.stage!r}")
        targets = tuple(dict.fromkeys(self.targets)) or DEFAULT_TARGETS[self.stage]
        object.__setattr__(self, "targets", targets)
        unknown = [t for t in targets if t not in TARGET_GROUPS[self.stage]]
        if unknown:
            raise AdapterError(f"unknown {self.stage} adapter target(s) {', '.join(unknown)}; "
                               f"allowed: {', '.join(TARGET_GROUPS[self.stage])}")
        if not 1 <= self.rank <= MAX_RANK:
            raise AdapterError(f"adapter rank must be 1-{MAX_RANK}, got {self.rank}")
        if not self.alpha > 0:
            raise AdapterError(f"adapter alpha must be > 0, got {self.alpha}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


ADAPTER_FORMAT = "voicefleet-lora"
ADAPTER_FORMAT_VERSION = 1
ADAPTER_SUFFIX = ".lora.safetensors"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on a header's size


def read_adapter_metadata(path) -> dict[str, str] | None:
    """The metadata of an adapter file (format, stage, rank, alpha, targets, base_fingerprint), read
    from the safetensors header without loading torch; None when `path` is not an adapter file."""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            size_bytes = f.read(8)
            if len(size_bytes) != 8:
                return None
            (size,) = struct.unpack("<Q", size_bytes)
            if size > _MAX_HEADER:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT:
        return None
    return {str(k): str(v) for k, v in meta.items()}


def spec_from_metadata(meta: dict[str, str]) -> AdapterSpec:
    """The `AdapterSpec` an adapter file's metadata describes."""
    import json

    try:
        return AdapterSpec(stage=meta["stage"], rank=int(meta["rank"]), alpha=float(meta["alpha"]),  # type: ignore[arg-type]
                           targets=tuple(json.loads(meta["targets"])))
    except (KeyError, ValueError, TypeError) as e:
        raise AdapterError(f"incomplete adapter metadata: {e}") from None
