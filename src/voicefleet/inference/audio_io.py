"""Writing synthesised audio: wav / flac / ogg through libsndfile, or raw 16-bit PCM."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from voicefleet.models.checkpoint.files import atomic_file
from voicefleet.models.config import SAMPLE_RATE

FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> int16 (clipped), as the official server scales it (x 32768)."""
    return np.clip(np.asarray(audio, dtype=np.float32) * 32768.0, -32768, 32767).astype(np.int16)


def encode_audio(audio: np.ndarray, fmt: str, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode mono float audio as wav, flac, ogg or pcm (raw s16le) bytes."""
    fmt = fmt.lower()
    if fmt in ("pcm", "raw"):
        return to_pcm16(audio).tobytes()
    if fmt not in FORMATS:
        raise ValueError(f"unsupported audio format {fmt!r}; choose one of wav, flac, ogg, pcm")
    container, subtype = FORMATS[fmt]
    buf = io.BytesIO()
    data = to_pcm16(audio) if subtype == "PCM_16" else np.clip(audio, -1, 1).astype(np.float32)
    sf.write(buf, data, sample_rate, format=container, subtype=subtype)
    return buf.getvalue()


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write `audio` to `path`, the format taken from the suffix; atomic (temp file + rename)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "wav"
    data = encode_audio(audio, fmt, sample_rate)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path
