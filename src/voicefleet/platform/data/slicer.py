"""Cut long recordings into 3-10 s clips at pauses, and write a list-file skeleton for them.

    .venv/bin/voicefleet slice interview.wav --out data/alice --speaker alice --lang zh

How cuts are chosen:

1. Speech is located at 16 kHz, by silero-vad (the model inside the ``silero-vad`` wheel; nothing
   is downloaded) or by frame energy (`energy_speech`, no model). With ``method="vad"`` the
   energy detector is the fallback when silero-vad is not installed or its model cannot load.
2. Pauses shorter than `SliceSettings.min_pause_s` do not count as pauses. Each speech run is
   padded by `pad_s` of its surrounding silence (never past the middle of the pause); a run
   longer than `max_s` is split at its quietest 50 ms between cut points that leave each part
   at least `min_s` long where possible.
3. Consecutive runs are grouped into clips of `min_s` .. `max_s` seconds, choosing the grouping
   that keeps the most speech (dynamic programming over the runs); a run that fits in no clip of
   that length is left out and reported in `SliceResult.dropped`; among groupings that keep as
   much, the one with the fewest (so longest) clips wins.

Clips are written as 16-bit 32 kHz mono WAV (what `prepare` resamples everything to), named like
the official slicer's output: ``<stem>_<start sample>_<end sample>.wav`` at 32 kHz. The list file
``slices.list`` holds one ``<clip>.wav|<speaker>|<lang>|`` line per clip, with the text empty for
the user (or an ASR tool) to fill in; paths are relative to the list, so the folder can move.
The output folder is written beside its destination and moved into place when complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import soundfile
import soxr

from voicefleet.models.checkpoint.files import atomic_folder
from voicefleet.models.config import SAMPLE_RATE, SSL_SAMPLE_RATE

from voicefleet.platform.data.listfile import SUPPORTED_LANGUAGES, format_list_line, normalize_language
from voicefleet.platform.data.quality import MAX_DURATION_S, MIN_DURATION_S

logger = logging.getLogger(__name__)

LIST_NAME = "slices.list"
VAD_RATE = SSL_SAMPLE_RATE  # silero-vad and the energy detector both run at 16 kHz
_FRAME = 320  # 20 ms at 16 kHz
_HOP = 160  # 10 ms


@dataclass(frozen=True)
class SliceSettings:
    """Clip length bounds and pause detection settings."""

    min_s: float = 3.0
    max_s: float = 10.0
    min_pause_s: float = 0.3  # shorter silences are not cut points
    pad_s: float = 0.15  # silence kept around speech at each clip edge
    energy_floor_db: float = 40.0  # energy detector: speech is within this many dB of the loudest frame...
    energy_above_noise_db: float = 12.0  # ...and this far above the noise floor (10th-percentile frame)

    def __post_init__(self):
        if not MIN_DURATION_S <= self.min_s < self.max_s <= MAX_DURATION_S:
            raise ValueError(f"need {MIN_DURATION_S:g} <= min_s < max_s <= {MAX_DURATION_S:g} seconds, "
                             f"got min_s={self.min_s}, max_s={self.max_s}")


@dataclass(frozen=True)
class Clip:
    path: Path
    source: Path
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class SliceResult:
    out_dir: Path
    list_path: Path
    method: str  # the detector actually used ("vad" or "energy")
    clips: list[Clip]
    dropped: list[tuple[Path, float, float]] = field(default_factory=list)  # (source, start_s, end_s)


# --- speech detection -------------------------------------------------------------------------------

def _frame_db(wave: np.ndarray) -> np.ndarray:
    """Frame energy in dB (20 ms frames, 10 ms hop) of 16 kHz audio, `(frames,)`."""
    if len(wave) < _FRAME:
        wave = np.pad(wave, (0, _FRAME - len(wave)))
    n = 1 + (len(wave) - _FRAME) // _HOP
    index = np.arange(_FRAME)[None] + _HOP * np.arange(n)[:, None]
    power = np.mean(np.square(wave[index], dtype=np.float64), axis=1)
    return 10 * np.log10(power + 1e-12)


def energy_speech(wave_16k: np.ndarray, settings: SliceSettings = SliceSettings()) -> list[tuple[int, int]]:
    """Speech runs `[(start, end)]` in samples at 16 kHz, by frame energy (no model).

    A frame is speech when it is within `energy_floor_db` of the loudest frame and
    `energy_above_noise_db` above the noise floor (the 10th-percentile frame), and louder than
    -60 dBFS.
    """
    db = _frame_db(wave_16k)
    threshold = max(db.max() - settings.energy_floor_db, np.percentile(db, 10) + settings.energy_above_noise_db, -60.0)
    runs, start = [], None
    for i, loud in enumerate(db >= threshold):
        if loud and start is None:
            start = i
        elif not loud and start is not None:
            runs.append((start * _HOP, min(len(wave_16k), i * _HOP + _FRAME)))
            start = None
    if start is not None:
        runs.append((start * _HOP, len(wave_16k)))
    return [(s, e) for s, e in runs if e - s >= int(0.05 * VAD_RATE)]  # drop clicks


def load_vad():
    """The silero-vad model from its wheel, or None (logged) when it is not available."""
    try:
        import torch

        threads = torch.get_num_threads()
        from silero_vad import load_silero_vad

        model = load_silero_vad()
        torch.set_num_threads(threads)  # importing silero_vad sets the process to one thread
        return model
    except Exception as e:  # ImportError, or a model file that does not load
        logger.warning("silero-vad is not available (%s); using the energy detector", e)
        return None


def vad_speech(wave_16k: np.ndarray, model, settings: SliceSettings = SliceSettings()) -> list[tuple[int, int]]:
    """Speech runs `[(start, end)]` in samples at 16 kHz, by silero-vad."""
    import torch
    from silero_vad import get_speech_timestamps

    stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(wave_16k, dtype=np.float32)), model,
                                   sampling_rate=VAD_RATE, min_silence_duration_ms=int(settings.min_pause_s * 1000),
                                   speech_pad_ms=0)
    return [(int(s["start"]), int(s["end"])) for s in stamps]


# --- planning cuts ----------------------------------------------------------------------------------

def _merge_short_pauses(runs: list[tuple[int, int]], min_pause: int) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for s, e in sorted(runs):
        if merged and s - merged[-1][1] < min_pause:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def _split_long(start: int, end: int, db: np.ndarray, min_len: int, max_len: int) -> list[tuple[int, int]]:
    """Split [start, end) at its quietest 50 ms until every part is at most `max_len` samples."""
    if end - start <= max_len:
        return [(start, end)]
    lo, hi = start + min_len, end - min_len
    if lo >= hi:  # cannot keep both parts min_len long: split in the middle third
        lo, hi = start + (end - start) // 3, end - (end - start) // 3
    first, last = lo // _HOP, max(lo // _HOP + 1, min(len(db), hi // _HOP))
    window = 5  # frames (50 ms)
    scores = np.convolve(db[first:last], np.ones(window) / window, mode="same") if last > first else np.zeros(1)
    cut = (first + int(np.argmin(scores))) * _HOP + _FRAME // 2
    cut = min(max(cut, start + 1), end - 1)
    return _split_long(start, cut, db, min_len, max_len) + _split_long(cut, end, db, min_len, max_len)


def plan_clips(runs: Sequence[tuple[int, int]], n_samples: int, settings: SliceSettings, db: np.ndarray | None = None
               ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Clip boundaries `[(start, end)]` and dropped spans, in samples at 16 kHz (see module docstring)."""
    rate = VAD_RATE
    runs = _merge_short_pauses(list(runs), int(settings.min_pause_s * rate))
    if not runs:
        return [], []
    db = db if db is not None else np.zeros(n_samples // _HOP + 1)
    pad = int(settings.pad_s * rate)
    padded = []
    for i, (s, e) in enumerate(runs):
        left = 0 if i == 0 else (runs[i - 1][1] + s) // 2
        right = n_samples if i == len(runs) - 1 else (e + runs[i + 1][0]) // 2
        padded.append((max(left, s - pad), min(right, e + pad)))
    min_len, max_len = int(settings.min_s * rate), int(settings.max_s * rate)
    pieces = [p for s, e in padded for p in _split_long(s, e, db, min_len, max_len)]
    speech = [e - s for s, e in pieces]

    # best[i]: (speech kept, -clips) using pieces[:i], most speech first, then fewest (longest) clips;
    # choice[i]: first piece of the last clip (None: piece i-1 is dropped)
    best: list[tuple[int, int]] = [(0, 0)] * (len(pieces) + 1)
    choice: list[int | None] = [None] * (len(pieces) + 1)
    for i in range(1, len(pieces) + 1):
        best[i], choice[i] = best[i - 1], None
        kept = 0
        for j in range(i - 1, -1, -1):
            kept += speech[j]
            length = pieces[i - 1][1] - pieces[j][0]
            if length > max_len:
                break
            candidate = (best[j][0] + kept, best[j][1] - 1)
            if length >= min_len and candidate > best[i]:
                best[i], choice[i] = candidate, j
    clips, dropped, i = [], [], len(pieces)
    while i > 0:
        j = choice[i]
        if j is None:
            dropped.append(pieces[i - 1])
            i -= 1
        else:
            clips.append((pieces[j][0], pieces[i - 1][1]))
            i = j
    return clips[::-1], dropped[::-1]


# --- the command ---------------------------------------------------------------------------------------

def slice_recordings(inputs: Sequence[str | Path], out_dir: str | Path, *, method: Literal["vad", "energy"] = "vad",
                     speaker: str | None = None, lang: str = "zh", settings: SliceSettings = SliceSettings(),
                     overwrite: bool = False) -> SliceResult:
    """Cut each recording into clips in `out_dir` and write ``slices.list`` (see module docstring).

    Args:
        inputs: audio files (anything libsndfile reads), only read.
        out_dir: destination folder; must be new or empty unless `overwrite`.
        method: "vad" (silero-vad, energy fallback) or "energy".
        speaker: speaker name for every line (default: each recording's file stem).
        lang: language code for the list lines (one `listfile.SUPPORTED_LANGUAGES` code: zh, en, ja, ko,
            yue, ...).
    """
    if method not in ("vad", "energy"):
        raise ValueError(f"method must be 'vad' or 'energy', got {method!r}")
    if normalize_language(lang) is None:
        raise ValueError(f"language {lang!r} is not one voicefleet prepares ({', '.join(SUPPORTED_LANGUAGES)})")
    sources = [Path(p) for p in inputs]
    if not sources:
        raise ValueError("give at least one recording to slice")
    for src in sources:
        if not src.is_file():
            raise FileNotFoundError(f"recording not found: {src}")
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists and is not empty; pass overwrite to replace it")
    for src in sources:
        if out_dir in src.absolute().parents:
            raise FileExistsError(f"the output folder {out_dir} contains the input {src}; choose another folder")
    from voicefleet.models.audio import load_audio  # imports torch: only when slicing, not for the CLI's defaults

    model = load_vad() if method == "vad" else None
    used = "vad" if model is not None else "energy"

    clips: list[Clip] = []
    dropped: list[tuple[Path, float, float]] = []
    lines: list[str] = []
    with atomic_folder(out_dir, replace=overwrite) as staging:
        names: set[str] = set()
        for src in sources:
            wave = load_audio(src, SAMPLE_RATE)
            wave16 = soxr.resample(wave, SAMPLE_RATE, VAD_RATE, quality="HQ") if len(wave) else wave
            db = _frame_db(wave16)
            runs = vad_speech(wave16, model, settings) if model is not None else energy_speech(wave16, settings)
            spans, lost = plan_clips(runs, len(wave16), settings, db)
            ratio = SAMPLE_RATE // VAD_RATE
            stem = src.stem
            if np.abs(wave).max(initial=0.0) > 1.0:
                logger.warning("%s peaks above full scale; clip files are clipped to 16 bits", src)
            for s16, e16 in spans:
                start, end = s16 * ratio, min(len(wave), e16 * ratio)
                name = f"{stem}_{start:010d}_{end:010d}.wav"
                if name in names:
                    raise FileExistsError(f"two recordings named {stem!r} give the same clip file {name}; rename one")
                names.add(name)
                soundfile.write(staging / name, np.clip(wave[start:end], -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
                clips.append(Clip(out_dir / name, src, start / SAMPLE_RATE, end / SAMPLE_RATE))
                lines.append(format_list_line(name, speaker or stem, lang))
            dropped += [(src, s / VAD_RATE, e / VAD_RATE) for s, e in lost]
            logger.info("%s: %d clips, %d speech spans left out (%s)", src, len(spans), len(lost), used)
        (staging / LIST_NAME).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return SliceResult(out_dir, out_dir / LIST_NAME, used, clips, dropped)
