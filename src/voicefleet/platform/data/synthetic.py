"""Voice-like test audio made with numpy: harmonic tones with pitch glides, formants, pauses.

No speech data can be shipped or downloaded, so tests, the spectral-entropy calibration
(`voicefleet.platform.data.quality`) and the benchmark use these clips. Each "syllable" is a
glottal-like harmonic tone (harmonics falling 6 dB/octave, shaped by the formants of one of five
vowels) with a pitch glide and a smooth attack/decay; some syllables start with a short band-passed
noise burst standing in for a fricative; phrases are separated by pauses. The clips are clean:
no noise floor unless `add_white_noise` adds one.
"""

from __future__ import annotations

import numpy as np

from voicefleet.models.config import SAMPLE_RATE

# (F1, F2, F3) in Hz of five vowels (a, e, i, o, u), adult averages.
_VOWEL_FORMANTS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240))
_FORMANT_BANDWIDTH_HZ = 90.0


def _formant_gain(freqs: np.ndarray, formants: tuple[int, int, int]) -> np.ndarray:
    """Sum of three resonance peaks (Lorentzian magnitude) evaluated at `freqs`."""
    gain = np.zeros_like(freqs)
    for f in formants:
        gain += 1.0 / (1.0 + ((freqs - f) / _FORMANT_BANDWIDTH_HZ) ** 2)
    return 0.15 + gain


def _syllable(rng: np.random.Generator, sr: int, f0_base: float) -> np.ndarray:
    dur = rng.uniform(0.14, 0.32)
    n = int(dur * sr)
    t = np.arange(n) / sr
    f0_start = f0_base * rng.uniform(0.85, 1.2)
    f0_end = f0_start * rng.uniform(0.75, 1.3)  # the glide
    f0 = f0_start + (f0_end - f0_start) * t / dur + 3.0 * np.sin(2 * np.pi * 5.5 * t)  # plus vibrato
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = _VOWEL_FORMANTS[rng.integers(len(_VOWEL_FORMANTS))]
    wave = np.zeros(n)
    for k in range(1, int(min(5000, sr / 2 - 100) // f0_start)):
        # glottal source (-12 dB/octave) + lip radiation (+6 dB/octave) = 1/k, shaped by the vowel
        amp = _formant_gain(np.array([k * f0_start]), formants)[0] / k
        wave += amp * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    attack, release = int(0.02 * sr), int(0.06 * sr)
    env = np.ones(n)
    env[:attack] = np.linspace(0, 1, attack) ** 2
    env[-release:] = np.linspace(1, 0, release) ** 2
    wave *= env * rng.uniform(0.5, 1.0)
    if rng.random() < 0.3:  # a fricative-like burst before the vowel
        burst = _fricative(rng, sr)
        wave = np.concatenate([burst * np.abs(wave).max() * 0.3, wave])
    return wave


def _fricative(rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(rng.uniform(0.05, 0.1) * sr)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spectrum[(freqs < 2500) | (freqs > min(7000, sr / 2))] = 0
    burst = np.fft.irfft(spectrum, n)
    burst /= np.abs(burst).max() + 1e-12
    return burst * np.hanning(n)


def voice_like(duration_s: float, sr: int = SAMPLE_RATE, *, seed: int = 0, peak: float = 0.5,
               f0: float | None = None, pause_every_s: float = 1.2) -> np.ndarray:
    """A clean voice-like clip of exactly `duration_s` seconds at `sr` Hz.

    Args:
        duration_s: length in seconds (the last syllable is cut or the end padded with silence).
        sr: sample rate in Hz.
        seed: the random seed; the same seed gives the same clip.
        peak: peak amplitude of the result.
        f0: mean pitch in Hz (default: drawn from 90..260 Hz).
        pause_every_s: mean phrase length before a pause of 0.25..0.6 s.
    Returns:
        `(samples,)` float32 with `samples = round(duration_s * sr)`.
    """
    rng = np.random.default_rng(seed)
    f0 = f0 if f0 is not None else rng.uniform(90, 260)
    total = int(round(duration_s * sr))
    pieces, length, since_pause = [np.zeros(int(0.1 * sr))], int(0.1 * sr), 0.0
    while length < total:
        if since_pause > pause_every_s * rng.uniform(0.6, 1.4):
            gap = np.zeros(int(rng.uniform(0.25, 0.6) * sr))
            since_pause = 0.0
        else:
            gap = np.zeros(int(rng.uniform(0.0, 0.05) * sr))
        syl = _syllable(rng, sr, f0)
        pieces += [syl, gap]
        length += len(syl) + len(gap)
        since_pause += (len(syl) + len(gap)) / sr
    wave = np.concatenate(pieces)[:total]
    if len(wave) < total:
        wave = np.pad(wave, (0, total - len(wave)))
    fade = min(int(0.05 * sr), total // 4)  # end in silence, even where a syllable was cut
    if fade:
        wave[-fade:] *= np.linspace(1, 0, fade)
    wave *= peak / (np.abs(wave).max() + 1e-12)
    return wave.astype(np.float32)


def add_white_noise(wave: np.ndarray, snr_db: float, *, seed: int = 0) -> np.ndarray:
    """`wave` plus white Gaussian noise at `snr_db` dB below the clip's mean power (pauses included)."""
    rng = np.random.default_rng(seed)
    power = float(np.mean(np.square(wave, dtype=np.float64)))
    noise = rng.standard_normal(len(wave)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (wave + noise).astype(np.float32)
