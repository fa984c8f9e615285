"""Audio front end parity with official s2 (compat `spec.npz`) and audio loading."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile
import torch

from tests.conftest import assert_close, load_npz
from voicefleet.models import audio
from voicefleet.models.audio import (
    hann_window, linear_spectrogram, load_audio, mel_basis, mel_spectrogram, num_frames, spec_to_mel,
)
from voicefleet.models.config import AudioConfig

# compat README section 8: linear spectrograms and log-mels
SPEC_TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def spec_npz(compat_dir):
    return load_npz(compat_dir, "spec.npz")


@pytest.fixture(scope="module")
def audio_cfg(compat_configs) -> AudioConfig:
    return AudioConfig.from_official(compat_configs["s2_config"]["data"])


def test_spectrogram_parity(spec_npz, audio_cfg):
    for wave_name, spec_name in (("wave", "spec"), ("wave2", "spec2")):
        spec = linear_spectrogram(torch.from_numpy(spec_npz[wave_name]), audio_cfg)
        assert spec.dtype == torch.float32
        assert_close(spec, spec_npz[spec_name], **SPEC_TOL, name=spec_name)


def test_mel_parity(spec_npz, audio_cfg):
    wave = torch.from_numpy(spec_npz["wave"])
    assert_close(mel_spectrogram(wave, audio_cfg), spec_npz["mel"], **SPEC_TOL, name="mel")
    spec = torch.from_numpy(spec_npz["spec"])
    assert_close(spec_to_mel(spec, audio_cfg), spec_npz["mel_from_spec"], **SPEC_TOL, name="mel_from_spec")


def test_filterbank_and_window(spec_npz, audio_cfg):
    assert_close(mel_basis(audio_cfg), spec_npz["mel_basis"], atol=1e-7, rtol=1e-6, name="mel_basis")
    assert_close(hann_window(audio_cfg.win_length), spec_npz["hann_window"], atol=1e-7, rtol=1e-6, name="hann_window")


def test_frame_count(spec_npz, audio_cfg):
    for wave_name, spec_name in (("wave", "spec"), ("wave2", "spec2")):
        assert num_frames(spec_npz[wave_name].shape[-1], audio_cfg) == spec_npz[spec_name].shape[-1]
    hop, n_fft = audio_cfg.hop_length, audio_cfg.filter_length
    pad = (n_fft - hop) // 2
    torch.manual_seed(0)
    for n in (n_fft, 3 * hop, 3 * hop + 1, 5 * hop - 1, 7 * hop + hop // 2):
        expected = (n + 2 * pad - n_fft) // hop + 1
        assert num_frames(n, audio_cfg) == expected
        assert linear_spectrogram(torch.randn(2, n) * 0.1, audio_cfg).shape == (2, audio_cfg.spec_channels, expected)


def test_rejects_bad_shapes(audio_cfg):
    with pytest.raises(ValueError, match="batch, samples"):
        linear_spectrogram(torch.zeros(1, 1, 4000), audio_cfg)
    with pytest.raises(ValueError, match="samples"):
        linear_spectrogram(torch.zeros(1, 10), audio_cfg)
    with pytest.raises(ValueError, match="spec must be"):
        spec_to_mel(torch.zeros(1, 7, 3), audio_cfg)


def test_cache_reuse(spec_npz, audio_cfg):
    audio.clear_caches()
    wave = torch.from_numpy(spec_npz["wave"])
    mel_spectrogram(wave, audio_cfg)
    before_window = audio._cached_hann_window.cache_info()
    before_basis = audio._cached_mel_basis.cache_info()
    mel_spectrogram(wave, audio_cfg)
    assert audio._cached_hann_window.cache_info().hits == before_window.hits + 1
    assert audio._cached_mel_basis.cache_info().hits == before_basis.hits + 1
    assert audio._cached_mel_basis.cache_info().currsize == before_basis.currsize
    assert mel_basis(audio_cfg) is mel_basis(audio_cfg)
    assert audio._cached_mel_basis.cache_info().maxsize is not None  # bounded


def test_threads_agree(spec_npz, audio_cfg):
    audio.clear_caches()
    wave = torch.from_numpy(spec_npz["wave"])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: mel_spectrogram(wave, audio_cfg), range(8)))
    for mel in results:
        assert torch.equal(mel, results[0])


def test_cache_built_in_inference_mode_supports_backward(spec_npz, audio_cfg):
    audio.clear_caches()
    wave = torch.from_numpy(spec_npz["wave"])
    with torch.inference_mode():
        mel_spectrogram(wave, audio_cfg)
    trainable = wave.clone().requires_grad_(True)
    mel_spectrogram(trainable, audio_cfg).mean().backward()
    assert trainable.grad is not None and torch.isfinite(trainable.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_float32(spec_npz, audio_cfg, dtype):
    wave = torch.from_numpy(spec_npz["wave"]).to(dtype)
    mel = mel_spectrogram(wave, audio_cfg)
    assert mel.dtype == torch.float32
    assert torch.equal(mel, mel_spectrogram(wave.float(), audio_cfg))


def test_autocast_does_not_change_result(spec_npz, audio_cfg):
    wave = torch.from_numpy(spec_npz["wave"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mel = mel_spectrogram(wave, audio_cfg)
    assert mel.dtype == torch.float32
    assert torch.equal(mel, mel_spectrogram(wave, audio_cfg))


def _sine(sr: int, seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_load_audio_resamples_and_downmixes(tmp_path):
    src_sr, target_sr, freq = 44100, 32000, 440.0
    mono = _sine(src_sr, 0.5, freq)
    stereo = np.stack([mono * 1.5, mono * 0.5], axis=1)  # channel mean = mono
    path = tmp_path / "tone.wav"
    soundfile.write(path, stereo, src_sr, subtype="FLOAT")

    wave = load_audio(path, target_sr)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - round(len(mono) * target_sr / src_sr)) <= 1
    expected = _sine(target_sr, len(wave) / target_sr, freq)
    middle = slice(len(wave) // 8, -len(wave) // 8)  # away from the resampler's edge effects
    np.testing.assert_allclose(wave[middle], expected[middle], atol=2e-3)

    np.testing.assert_array_equal(load_audio(path.read_bytes(), target_sr), wave)
    np.testing.assert_array_equal(load_audio(path, src_sr), stereo.mean(axis=1, dtype=np.float32))


def test_load_audio_rejects_non_audio(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    with pytest.raises(ValueError, match="notes.wav"):
        load_audio(bad, 32000)
    with pytest.raises(ValueError, match="bytes"):
        load_audio(b"\x00\x01garbage" * 10, 32000)
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav", 32000)
    with pytest.raises(ValueError, match="target_sr"):
        load_audio(b"", 0)
