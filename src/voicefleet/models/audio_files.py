"""Decoding audio files to mono float32 at a given rate; numpy only (no torch), so every engine shares it."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import soundfile
import soxr

logger = logging.getLogger(__name__)


def load_audio(source: str | os.PathLike | bytes | bytearray, target_sr: int) -> np.ndarray:
    """Decode an audio file (anything libsndfile reads) to mono float32 at `target_sr`.

    Channels are averaged; the sample rate is converted with soxr (high quality). A file that is
    not audio, or is corrupt, raises `ValueError` naming it; a missing path raises
    `FileNotFoundError`.

    Args:
        source: a path, or the file's bytes.
        target_sr: output sample rate in Hz.
    Returns:
        `(samples,)` float32.
    """
    if not isinstance(target_sr, (int, np.integer)) or isinstance(target_sr, bool) or target_sr <= 0:
        raise ValueError(f"target_sr must be a positive integer sample rate in Hz, got {target_sr!r}")
    if isinstance(source, (bytes, bytearray)):
        name = f"<{len(source)} bytes of audio>"
        handle: object = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {name}")
        handle = path
    try:
        data, sr = soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise ValueError(f"{name}: not a readable audio file ({e})") from None
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if sr != target_sr and wave.size:
        logger.debug("resampling %s from %d Hz to %d Hz", name, sr, target_sr)
        wave = soxr.resample(wave, sr, int(target_sr), quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)
