"""Clip checks, the spectral-entropy noise measure and its calibration, the official normalisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import soxr

from voicefleet.platform.data import quality
from voicefleet.platform.data.quality import QualityThresholds, RejectReason, check_clip
from voicefleet.platform.data.stages import wav_truncation
from voicefleet.platform.data.synthetic import add_white_noise, voice_like


def test_calibrated_threshold_separates_clean_from_noisy_clips():
    """The module docstring's calibration on a fresh draw (other seeds than the documented run).

    Clean clips (also with a noise floor 40 dB down) must score below the default threshold and
    the same clips with white noise at 0-10 dB SNR above it; 20 dB is allowed on either side.
    """
    calibration = quality.calibrate_spectral_entropy(n_clips=16, snrs_db=(0.0, 5.0, 10.0), seed=7)
    threshold = quality.DEFAULT_MAX_SPECTRAL_ENTROPY
    assert calibration.separates(threshold)
    margin = min(min(v) for v in calibration.noisy.values()) - max(calibration.clean + calibration.clean_noise_floor)
    assert margin > 0.05, f"classes only {margin:.3f} apart"
    # more noise, more entropy
    means = [np.mean(calibration.noisy[s]) for s in (10.0, 5.0, 0.0)]
    assert np.mean(calibration.clean) < means[0] < means[1] < means[2]


def test_spectral_entropy_bounds():
    sr = 16000
    t = np.arange(sr) / sr
    tone = np.sin(2 * np.pi * 1000 * t)
    noise = np.random.default_rng(0).standard_normal(sr)
    assert quality.spectral_entropy(tone) < 0.3
    assert 0.9 < quality.spectral_entropy(noise) <= 1.0
    assert quality.spectral_entropy(np.zeros(sr)) == 0.0
    assert quality.spectral_entropy(noise * 1000) == pytest.approx(quality.spectral_entropy(noise), abs=1e-9)


def _check(wave, **thresholds):
    return check_clip(np.asarray(wave, dtype=np.float32), None, QualityThresholds(**thresholds))


def test_checks_pass_a_clean_clip():
    report = _check(voice_like(2.0, seed=1))
    assert report.reason is None and report.duration_s == pytest.approx(2.0)
    assert report.spectral_entropy < quality.DEFAULT_MAX_SPECTRAL_ENTROPY


@pytest.mark.parametrize("make, reason", [
    (lambda: voice_like(0.5, seed=1), RejectReason.TOO_SHORT),
    (lambda: voice_like(55.0, seed=1), RejectReason.TOO_LONG),
    (lambda: np.zeros(32000), RejectReason.SILENT),
    (lambda: voice_like(2.0, seed=1) * 10 ** (-60 / 20), RejectReason.SILENT),  # peak -66 dBFS
    (lambda: voice_like(2.0, seed=1, peak=2.5), RejectReason.CLIPPED),  # official rule: peak > 2.2
    (lambda: np.clip(voice_like(2.0, seed=1) * 8, -1, 1), RejectReason.CLIPPED),  # 16-bit clipping
    (lambda: add_white_noise(voice_like(3.0, seed=1, peak=0.3), 0.0), RejectReason.NOISY),
])
def test_each_check_rejects_its_case(make, reason):
    assert _check(make()).reason is reason


def test_duration_bounds_are_inclusive_and_configurable():
    assert _check(voice_like(0.6, seed=2)).reason is None
    assert _check(voice_like(2.0, seed=2), max_duration_s=1.5).reason is RejectReason.TOO_LONG
    assert _check(add_white_noise(voice_like(3.0, seed=1), 0.0), max_spectral_entropy=1.0).reason is None


def test_peak_below_official_limit_is_kept():
    assert _check(voice_like(2.0, seed=3, peak=2.0)).reason is None  # float audio may exceed 1.0


def test_normalisation_is_the_official_mix():
    x = voice_like(1.0, seed=4, peak=0.4)
    y = quality.normalize_loudness(x)
    expected = x / np.abs(x).max() * (0.95 * 0.5) + 0.5 * x  # 2-get-hubert-wav32k.py, maxx 0.95, alpha 0.5
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)
    assert y.dtype == np.float32 and np.abs(y).max() == pytest.approx(0.95 * 0.5 + 0.5 * 0.4, rel=1e-6)
    with pytest.raises(ValueError, match="silent"):
        quality.normalize_loudness(np.zeros(100))


def test_hubert_input_is_scaled_by_1145_14_and_resampled():
    y = quality.normalize_loudness(voice_like(1.0, seed=5))
    h = quality.hubert_input(y)
    np.testing.assert_allclose(h, soxr.resample(y * np.float32(1145.14), 32000, 16000, quality="HQ"), rtol=1e-6)
    assert len(h) == 16000 and 400 < np.abs(h).max() < 1145.14


def test_pcm16_rounds_and_clips():
    out = quality.to_pcm16(np.array([0.0, 0.5, -1.0, 1.0, 1.5, 2 / 32768 * 0.6]))
    assert out.tolist() == [0, 16384, -32768, 32767, 32767, 1]


def test_wav_truncation_detection():
    buf = io.BytesIO()
    sf.write(buf, voice_like(0.5, seed=1), 32000, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    assert wav_truncation(data) is None
    assert "declares" in wav_truncation(data[: len(data) // 2])
    assert wav_truncation(b"fLaC" + data[4:]) is None  # only RIFF/WAVE is inspected


def test_flat_tops_find_clipping_not_loudness():
    x = voice_like(2.0, seed=1)
    assert quality.flat_top_fraction(x) < 1e-3
    assert quality.flat_top_fraction(x * 4.0) < 1e-3  # float audio beyond full scale, but no plateaus
    clipped = np.clip(x * 8.0, -1.0, 1.0)
    assert quality.flat_top_fraction(clipped) > 0.05
    assert quality.flat_top_fraction(np.stack([x, clipped], axis=1)) > 0.05  # the worst channel counts
    quiet = np.round(x * 0.02 * 32768) / 32768  # quiet 16-bit audio repeats its peak value: not checked
    assert quality.flat_top_fraction(quiet) == 0.0
