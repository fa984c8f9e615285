"""The v2 acoustic model's audio front end: linear and log-mel spectrograms, and audio loading.

The spectrograms reproduce official s2 (`module/mel_processing.py`) numerically:

* the waveform is reflect-padded by (n_fft - hop) / 2 samples on both sides and the STFT runs with
  `center=False` and a periodic Hann window, so a wave of N samples gives
  floor((N + (n_fft - hop) - n_fft) / hop) + 1 frames (N / hop for the usual multiples of hop);
* the magnitude is sqrt(re^2 + im^2 + 1e-8), so it never drops below 1e-4;
* the mel filterbank is librosa's (Slaney scale and area norm), and the log-mel is
  ln(max(mel, 1e-5)).

Everything is computed in float32, whatever the input dtype, with autocast switched off, and the
outputs are float32. (The official code computes in the input's dtype, so under fp16 autocast its
training mel of generated audio is a half-precision STFT; float32 is what it computes for float32
input, which is what the fixtures record, and is accurate enough for the mel loss.)

The Hann window and mel basis are cached per (device, dtype, settings) in a bounded LRU cache, so
serving many devices or configs cannot grow memory without limit. The cached tensors are shared:
treat them as read-only.
"""

from __future__ import annotations

import functools
import logging

import librosa
import torch
import torch.nn.functional as F

# audio files are decoded without torch (the ONNX engine reads them too); importable from here
from voicefleet.models.audio_files import load_audio  # noqa: F401
from voicefleet.models.config import AudioConfig

logger = logging.getLogger(__name__)

MAGNITUDE_EPS = 1e-8  # added under the square root of the STFT power, as the official code does
LOG_CLAMP = 1e-5  # mel energies are clamped here before the natural log
_CACHE_SIZE = 16  # distinct (device, dtype, settings) combinations kept per cached tensor kind
_COMPUTE_DTYPE = torch.float32


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_hann_window(win_length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # A tensor made inside inference_mode cannot be saved for backward later; build a normal one.
    with torch.inference_mode(False), torch.no_grad():
        return torch.hann_window(win_length, periodic=True, dtype=dtype, device=device)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_mel_basis(sampling_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None,
                      device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    basis = librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    with torch.inference_mode(False), torch.no_grad():
        return torch.from_numpy(basis).to(device=device, dtype=dtype)


def hann_window(win_length: int, device: torch.device | str = "cpu",
                dtype: torch.dtype = _COMPUTE_DTYPE) -> torch.Tensor:
    """The periodic Hann window `(win_length,)`, cached per (win_length, device, dtype)."""
    return _cached_hann_window(int(win_length), torch.device(device), dtype)


def mel_basis(cfg: AudioConfig = AudioConfig(), device: torch.device | str = "cpu",
              dtype: torch.dtype = _COMPUTE_DTYPE) -> torch.Tensor:
    """librosa's Slaney mel filterbank `(n_mels, n_fft // 2 + 1)`, cached per (settings, device, dtype)."""
    return _cached_mel_basis(cfg.sampling_rate, cfg.filter_length, cfg.n_mel_channels, float(cfg.mel_fmin),
                             None if cfg.mel_fmax is None else float(cfg.mel_fmax), torch.device(device), dtype)


def clear_caches() -> None:
    """Drop every cached window and mel basis (e.g. after moving work off a device)."""
    _cached_hann_window.cache_clear()
    _cached_mel_basis.cache_clear()


def num_frames(n_samples: int, cfg: AudioConfig = AudioConfig()) -> int:
    """Frames `linear_spectrogram` gives for `n_samples` samples: floor((N + 2 * pad - n_fft) / hop) + 1."""
    pad = (cfg.filter_length - cfg.hop_length) // 2
    return (n_samples + 2 * pad - cfg.filter_length) // cfg.hop_length + 1


def _check_wave(wave: torch.Tensor, cfg: AudioConfig) -> None:
    if wave.dim() != 2:
        raise ValueError(f"wave must be (batch, samples), got shape {list(wave.shape)}")
    pad = (cfg.filter_length - cfg.hop_length) // 2
    # reflect padding needs more samples than it pads, and the STFT needs one full window
    if wave.shape[-1] <= pad or wave.shape[-1] + 2 * pad < cfg.filter_length:
        raise ValueError(f"wave has {wave.shape[-1]} samples; at least {max(pad + 1, cfg.filter_length - 2 * pad)} "
                         f"are needed for n_fft={cfg.filter_length}, hop={cfg.hop_length}")


def linear_spectrogram(wave: torch.Tensor, cfg: AudioConfig = AudioConfig()) -> torch.Tensor:
    """Magnitude spectrogram as official s2 computes it (`spectrogram_torch`, center=False).

    Args:
        wave: `(batch, samples)`, amplitudes in [-1, 1]; any float dtype.
    Returns:
        `(batch, n_fft // 2 + 1, frames)` float32, frames = `num_frames(samples, cfg)`.
    """
    _check_wave(wave, cfg)
    # The official code warns (prints) when |wave| > 1.2; checking needs a device sync per call, so
    # we leave range checks to data loading.
    with torch.autocast(wave.device.type, enabled=False):
        x = wave.to(_COMPUTE_DTYPE)
        pad = (cfg.filter_length - cfg.hop_length) // 2
        x = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        stft = torch.stft(
            x, cfg.filter_length, hop_length=cfg.hop_length, win_length=cfg.win_length,
            window=hann_window(cfg.win_length, x.device, x.dtype), center=False, normalized=False,
            onesided=True, return_complex=True,
        )
        # re^2 + im^2 summed over a trailing (re, im) axis: the same float32 operations, in the same
        # order, as the official real-valued STFT path, so the result is bit-identical.
        power = torch.view_as_real(stft).pow(2).sum(-1)
        return torch.sqrt(power + MAGNITUDE_EPS)


def spec_to_mel(spec: torch.Tensor, cfg: AudioConfig = AudioConfig()) -> torch.Tensor:
    """Log-mel spectrogram from a linear one (official `spec_to_mel_torch`, the s2 training target).

    Args:
        spec: `(batch, n_fft // 2 + 1, frames)` magnitudes from `linear_spectrogram`.
    Returns:
        `(batch, n_mels, frames)` float32 natural-log mel energies, clamped at ln(1e-5).
    """
    if spec.dim() != 3 or spec.shape[1] != cfg.spec_channels:
        raise ValueError(f"spec must be (batch, {cfg.spec_channels}, frames), got shape {list(spec.shape)}")
    with torch.autocast(spec.device.type, enabled=False):
        spec = spec.to(_COMPUTE_DTYPE)
        mel = torch.matmul(mel_basis(cfg, spec.device, spec.dtype), spec)
        return torch.log(torch.clamp(mel, min=LOG_CLAMP))


def mel_spectrogram(wave: torch.Tensor, cfg: AudioConfig = AudioConfig()) -> torch.Tensor:
    """Log-mel spectrogram of a waveform (official `mel_spectrogram_torch`, used on generated audio).

    Args:
        wave: `(batch, samples)`, any float dtype.
    Returns:
        `(batch, n_mels, frames)` float32.
    """
    return spec_to_mel(linear_spectrogram(wave, cfg), cfg)
