"""Per-clip audio checks and the official loudness normalisation.

Every check works on the clip decoded at 32 kHz mono, before normalisation, and reports one
reject reason (`RejectReason`) or passes:

* **too_short / too_long**: duration outside [0.6 s, 54 s], the bounds the official s2 trainer
  applies (it keeps 0.6 < d < 54; its duration counts the WAV header too).
* **silent**: no 20 ms frame reaches -50 dBFS RMS. Official preparation has no such check: an
  all-zero clip divides by a zero peak and is dropped later as "nan filtered".
* **clipped**: the official rule, peak > 2.2 (possible in float files and after resampling);
  and, because that rule misses ordinary 16-bit clipping, flat tops: more than 0.5 % of the
  samples lie in runs of 3 or more consecutive samples within 0.1 % of the clip's peak. It is
  measured at the file's own sample rate (resampling smooths plateaus) and only on clips peaking
  above -12 dBFS, since a quiet 16-bit clip repeats its peak value at its crests. A clean clip
  touches its peak in a sample or two; a float file peaking at 2.0 without plateaus passes.
* **noisy**: mean normalised spectral entropy over active frames above a threshold (below).

Spectral entropy. A frame (1024 samples = 64 ms at 16 kHz, hop 256, Hann window) has magnitude
spectrum `|X_k|` over the bins k in 80..7600 Hz (K bins). With `p_k = |X_k| / sum_j |X_j|` its
normalised entropy is `H = -sum_k p_k ln p_k / ln K`, in [0, 1]: 0 for a pure tone in one bin,
1 for a flat spectrum. Voiced speech puts its energy into harmonics and formants (low H); white
noise spreads it evenly (H near 1). The clip's score is the mean H over active frames, those whose
band energy is within 30 dB of the loudest frame: pauses of a clean clip are then left out, while
noise that fills the pauses of a noisy clip is counted. Magnitudes (not powers) and the full band
are used because they separate the classes best in the calibration below (powers let the
strongest harmonics dominate; a band limited to 4 kHz hides most of the noise). Sources sampled
at 8 kHz have no energy above 4 kHz and so score lower (cleaner) than the same noise would at
16 kHz and above.

Calibration of `DEFAULT_MAX_SPECTRAL_ENTROPY` (run `calibrate_spectral_entropy(n_clips=200)`,
checked by tests/platform/test_quality.py on a smaller draw): 200 generated voice-like clips
(`voicefleet.platform.data.synthetic.voice_like`, 2-10 s, pitch 90-260 Hz, fricative bursts,
pauses) score 0.57-0.77 clean (0.60-0.78 with a white noise floor 40 dB down); with white noise
at 10 dB SNR (noise power relative to the clip's mean power, pauses included) they score
0.88-0.92, at 5 dB 0.92-0.94, at 0 dB 0.95-0.96, and at 20 dB 0.73-0.86 (borderline: some kept,
some rejected). The default, 0.83, sits midway between the clean maximum (0.778) and the 10 dB
minimum (0.879). Real speech has more unvoiced frames than these clips, so it scores somewhat higher
than they do; raise the threshold (`PrepareConfig.max_spectral_entropy`) if clean recordings are
rejected as noisy.

Normalisation (official ``prepare_datasets/2-get-hubert-wav32k.py``): with ``maxx = 0.95`` and
``alpha = 0.5`` (the official value; ``tools/slice_audio.py`` uses 0.25 with a 0.9 peak, for its
own output), ``y = x / max|x| * maxx * alpha + (1 - alpha) * x``: a mix of the peak-normalised clip
and the clip as recorded. The 32 kHz training audio is ``y`` (official: ``y * 32768`` cast to
int16); the HuBERT input is ``y * 1145.14`` resampled to 16 kHz (soxr HQ, librosa's default), as
the official script feeds it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import numpy as np
import soxr

from voicefleet.models.config import SAMPLE_RATE, SSL_SAMPLE_RATE

logger = logging.getLogger(__name__)

MIN_DURATION_S = 0.6  # official s2 trainer: keeps 0.6 < duration < 54
MAX_DURATION_S = 54.0
OFFICIAL_MAX_PEAK = 2.2  # official 2-get-hubert-wav32k.py drops clips whose 32 kHz peak exceeds this
DEFAULT_MAX_FLAT_TOP_FRACTION = 0.005
FLAT_TOP_TOLERANCE = 1e-3  # a sample within this fraction of the peak is "at the peak"
FLAT_TOP_RUN = 3  # consecutive samples at the peak that make a plateau
FLAT_TOP_MIN_PEAK = 0.25  # -12 dBFS: quieter clips are not checked for plateaus
DEFAULT_SILENCE_DBFS = -50.0
SILENCE_FRAME_S = 0.02
NORM_PEAK = 0.95  # official maxx
NORM_ALPHA = 0.5  # official alpha in 2-get-hubert-wav32k.py
HUBERT_INPUT_SCALE = 1145.14  # official: the HuBERT input is the mixed clip times this

# Spectral entropy (see the module docstring for the calibration).
DEFAULT_MAX_SPECTRAL_ENTROPY = 0.83
ENTROPY_N_FFT = 1024
ENTROPY_HOP = 256
ENTROPY_BAND_HZ = (80.0, 7600.0)
ENTROPY_ACTIVE_DB = 30.0


class RejectReason(str, enum.Enum):
    """Why a list row is not in the dataset (the `reason` column of rejects.parquet)."""

    MISSING_FILE = "missing_file"
    CORRUPT_FILE = "corrupt_file"
    TRUNCATED_FILE = "truncated_file"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    SILENT = "silent"
    CLIPPED = "clipped"
    NOISY = "noisy"
    EMPTY_TRANSCRIPT = "empty_transcript"
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    TEXT_ERROR = "text_error"  # the text front end could not turn the transcript into phones
    DUPLICATE = "duplicate"  # a second row for an audio file already listed
    FEATURE_ERROR = "feature_error"  # HuBERT gave NaN features (the official "nan filtered")


@dataclass(frozen=True)
class QualityThresholds:
    """The check settings (the matching `PrepareConfig` fields)."""

    min_duration_s: float = MIN_DURATION_S
    max_duration_s: float = MAX_DURATION_S
    max_peak: float = OFFICIAL_MAX_PEAK
    max_flat_top_fraction: float = DEFAULT_MAX_FLAT_TOP_FRACTION
    silence_dbfs: float = DEFAULT_SILENCE_DBFS
    max_spectral_entropy: float = DEFAULT_MAX_SPECTRAL_ENTROPY


@dataclass(frozen=True)
class QualityReport:
    """Measurements of one clip and the first failed check (None when it passes)."""

    duration_s: float
    peak: float
    loudest_frame_dbfs: float
    flat_top_fraction: float
    spectral_entropy: float | None  # None when not measured (the clip failed an earlier check)
    reason: RejectReason | None
    detail: str


def frame_rms_dbfs(wave: np.ndarray, sr: int = SAMPLE_RATE, frame_s: float = SILENCE_FRAME_S) -> np.ndarray:
    """RMS level of consecutive non-overlapping frames in dBFS, `(frames,)`; -inf for digital silence."""
    n = max(1, int(round(frame_s * sr)))
    frames = len(wave) // n
    if frames == 0:
        frames, n = 1, len(wave)
    x = np.asarray(wave[: frames * n], dtype=np.float64).reshape(frames, n)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.mean(x * x, axis=1))


def flat_top_fraction(wave: np.ndarray) -> float:
    """Share of samples in plateaus at the clip's peak (see module docstring); the worst channel.

    Args:
        wave: `(samples,)` or `(samples, channels)` at the file's own sample rate.
    """
    x = np.abs(np.asarray(wave, dtype=np.float64))
    if x.ndim == 2:
        return max((flat_top_fraction(x[:, c]) for c in range(x.shape[1])), default=0.0)
    peak = float(x.max()) if x.size else 0.0
    if peak < FLAT_TOP_MIN_PEAK:
        return 0.0
    top = np.concatenate([[False], x >= peak * (1 - FLAT_TOP_TOLERANCE), [False]])
    edges = np.flatnonzero(np.diff(top.astype(np.int8)))
    lengths = edges[1::2] - edges[::2]
    return float(lengths[lengths >= FLAT_TOP_RUN].sum() / len(x))


def spectral_entropy(wave_16k: np.ndarray, sr: int = SSL_SAMPLE_RATE) -> float:
    """Mean normalised spectral entropy (0..1) over the active frames of a clip (see module docstring).

    Args:
        wave_16k: `(samples,)` mono audio, normally at 16 kHz; any scale (the measure is scale-free).
        sr: its sample rate (the frame and band settings are in samples at 16 kHz and in Hz).
    Returns:
        the mean entropy; 0.0 for a clip with no energy in the band.
    """
    x = np.asarray(wave_16k, dtype=np.float64)
    if len(x) < ENTROPY_N_FFT:
        x = np.pad(x, (0, ENTROPY_N_FFT - len(x)))
    n_frames = 1 + (len(x) - ENTROPY_N_FFT) // ENTROPY_HOP
    index = np.arange(ENTROPY_N_FFT)[None, :] + ENTROPY_HOP * np.arange(n_frames)[:, None]
    spectrum = np.abs(np.fft.rfft(x[index] * np.hanning(ENTROPY_N_FFT), axis=1))
    freqs = np.fft.rfftfreq(ENTROPY_N_FFT, 1.0 / sr)
    band = (freqs >= ENTROPY_BAND_HZ[0]) & (freqs <= min(ENTROPY_BAND_HZ[1], sr / 2))
    mag = spectrum[:, band]
    energy = np.sum(mag * mag, axis=1)
    if energy.max() <= 0:
        return 0.0
    active = energy >= energy.max() * 10 ** (-ENTROPY_ACTIVE_DB / 10)
    p = mag[active] / mag[active].sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    entropy = -terms.sum(axis=1) / np.log(int(band.sum()))
    return float(np.mean(entropy))


def check_clip(wave_32k: np.ndarray, wave_16k: np.ndarray | None, thresholds: QualityThresholds = QualityThresholds(),
               *, native: np.ndarray | None = None) -> QualityReport:
    """Run the checks in order (duration, silence, clipping, noise) on a clip before normalisation.

    Args:
        wave_32k: `(samples,)` the decoded clip at 32 kHz.
        wave_16k: the same clip at 16 kHz for the entropy measure (any scale), or None to resample here.
        native: the decoded samples at the file's own rate, `(samples, channels)`, for the plateau
            check (default: `wave_32k`).
    """
    duration = len(wave_32k) / SAMPLE_RATE
    peak = float(np.max(np.abs(wave_32k))) if len(wave_32k) else 0.0
    levels = frame_rms_dbfs(wave_32k) if len(wave_32k) else np.array([-np.inf])
    loudest = float(levels.max())
    flat_tops = flat_top_fraction(native if native is not None else wave_32k)

    def report(reason: RejectReason | None, detail: str, entropy: float | None = None) -> QualityReport:
        return QualityReport(duration, peak, loudest, flat_tops, entropy, reason, detail)

    t = thresholds
    if duration < t.min_duration_s:
        return report(RejectReason.TOO_SHORT, f"{duration:.3f} s < {t.min_duration_s} s")
    if duration > t.max_duration_s:
        return report(RejectReason.TOO_LONG, f"{duration:.3f} s > {t.max_duration_s} s")
    if loudest < t.silence_dbfs:
        return report(RejectReason.SILENT, f"loudest 20 ms frame {loudest:.1f} dBFS < {t.silence_dbfs} dBFS")
    if peak > t.max_peak:
        return report(RejectReason.CLIPPED, f"peak {peak:.3f} > {t.max_peak} (official limit)")
    if flat_tops > t.max_flat_top_fraction:
        return report(RejectReason.CLIPPED, f"{100 * flat_tops:.2f} % of samples in flat tops at the peak "
                                            f"(> {100 * t.max_flat_top_fraction:.2f} %)")
    if wave_16k is None:
        wave_16k = soxr.resample(wave_32k, SAMPLE_RATE, SSL_SAMPLE_RATE, quality="HQ")
    entropy = spectral_entropy(wave_16k)
    if entropy > t.max_spectral_entropy:
        return report(RejectReason.NOISY, f"spectral entropy {entropy:.3f} > {t.max_spectral_entropy}", entropy)
    return report(None, "", entropy)


def normalize_loudness(wave_32k: np.ndarray, peak_target: float = NORM_PEAK, alpha: float = NORM_ALPHA
                       ) -> np.ndarray:
    """Official mix ``x / max|x| * peak_target * alpha + (1 - alpha) * x``, float32 `(samples,)`.

    The clip must not be digitally silent (the silence check runs first).
    """
    x = np.asarray(wave_32k, dtype=np.float32)
    peak = np.float32(np.max(np.abs(x)))
    if not peak > 0:
        raise ValueError("cannot normalise a silent clip (peak 0)")
    return (x / peak * np.float32(peak_target * alpha) + np.float32(1 - alpha) * x).astype(np.float32)


def hubert_input(normalized_32k: np.ndarray, scale: float = HUBERT_INPUT_SCALE) -> np.ndarray:
    """The official HuBERT input: the normalised clip times `scale`, resampled to 16 kHz (float32)."""
    scaled = np.asarray(normalized_32k, dtype=np.float32) * np.float32(scale)
    return soxr.resample(scaled, SAMPLE_RATE, SSL_SAMPLE_RATE, quality="HQ").astype(np.float32)


def to_pcm16(normalized_32k: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> int16, rounded and clipped (official: ``(y * 32768).astype(int16)``,
    which truncates and wraps around on overflow)."""
    return np.clip(np.round(np.asarray(normalized_32k, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class EntropyCalibration:
    """Scores of the calibration clips: `clean[i]`, and `noisy[snr_db][i]` for the same clip with noise."""

    clean: list[float]
    clean_noise_floor: list[float]  # the clean clip plus white noise 40 dB down
    noisy: dict[float, list[float]]

    def separates(self, threshold: float, max_snr_db: float = 10.0) -> bool:
        """True if every clean clip scores below `threshold` and every clip at <= `max_snr_db` above."""
        noisy = [s for snr, scores in self.noisy.items() if snr <= max_snr_db for s in scores]
        return max(self.clean + self.clean_noise_floor) < threshold < min(noisy)


def calibrate_spectral_entropy(n_clips: int = 200, snrs_db: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0), *,
                               seed: int = 0) -> EntropyCalibration:
    """Score generated clean voice-like clips and the same clips with white noise (see module docstring)."""
    from voicefleet.platform.data.synthetic import add_white_noise, voice_like

    rng = np.random.default_rng(seed)
    clean, floor, noisy = [], [], {float(s): [] for s in snrs_db}

    def score(x: np.ndarray) -> float:
        return spectral_entropy(soxr.resample(x, SAMPLE_RATE, SSL_SAMPLE_RATE, quality="HQ"))

    for i in range(n_clips):
        x = voice_like(float(rng.uniform(2.0, 10.0)), SAMPLE_RATE, seed=seed * 100_003 + i)
        clean.append(score(x))
        floor.append(score(add_white_noise(x, 40.0, seed=i + 1)))
        for snr in noisy:
            noisy[snr].append(score(add_white_noise(x, snr, seed=10_000 + i)))
    return EntropyCalibration(clean, floor, noisy)
