"""The speaker-verification front end of GPT-SoVITS v2Pro: 32 kHz -> 16 kHz -> Kaldi fbank.

Both steps are plain torch, written to give the numbers the official pipeline computes:

* `resample` is a windowed-sinc polyphase resampler with the defaults of torchaudio's
  `transforms.Resample` (Hann-windowed sinc, 6 zero crossings each side, rolloff 0.99). The
  kernel is computed in float64 and used in float32, as torchaudio does.
* `kaldi_fbank` is Kaldi's `compute-fbank-feats` with the settings the official call
  `fbank(wav, num_mel_bins=80, sample_frequency=16000, dither=0)` leaves at their defaults:
  25 ms / 10 ms frames with `snip_edges`, DC removal per frame, pre-emphasis 0.97, the Povey
  window, a 512-point power spectrum, 80 triangular mel bins from 20 Hz to Nyquist, natural log
  floored at float32 epsilon, no energy term and no mean normalisation.

`speaker_features` chains them the way the official inference and `2-get-sv.py` do:
(batch, samples at 32 kHz) -> (batch, frames, 80).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from voicefleet.models.config import SAMPLE_RATE, SV_SAMPLE_RATE
FBANK_BINS = 80
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512  # the frame length rounded up to a power of two
PREEMPHASIS = 0.97
POVEY_POWER = 0.85  # the Povey window is a symmetric Hann window raised to this power
MEL_LOW_HZ = 20.0


@lru_cache(maxsize=8)
def sinc_resample_kernel(orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
                         rolloff: float = 0.99) -> tuple[torch.Tensor, int]:
    """The polyphase kernel (new, 1, 2 * width + orig) and `width`, for rates reduced by their gcd.

    One row per output phase; each row is a Hann-windowed sinc sampled at the input positions
    around that phase, low-passed at `rolloff` times the lower Nyquist rate.
    """
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    cutoff = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + taps) * cutoff
    t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernel = sinc * window * (cutoff / orig)
    return kernel.to(torch.float32), width


def resample(wave: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Resample (..., samples) from `orig_freq` to `new_freq` Hz: (..., ceil(samples * new / orig))."""
    if orig_freq == new_freq:
        return wave
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    kernel, width = sinc_resample_kernel(orig_freq, new_freq)
    shape = wave.shape
    flat = wave.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel.to(wave.device, wave.dtype), stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    out = out[..., : math.ceil(new * length / orig)]
    return out.reshape(*shape[:-1], out.shape[-1])


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log(1.0 + freq / 700.0)


@lru_cache(maxsize=4)
def mel_banks(num_bins: int = FBANK_BINS, fft_size: int = FFT_SIZE, sample_rate: int = SV_SAMPLE_RATE,
              low_hz: float = MEL_LOW_HZ) -> torch.Tensor:
    """Kaldi's triangular mel filters (num_bins, fft_size // 2), float32, up to the Nyquist rate.

    Triangles are equally spaced on the mel scale mel = 1127 ln(1 + f / 700); the Nyquist bin
    is not covered (`kaldi_fbank` appends a zero column for it).
    """
    nyquist = 0.5 * sample_rate
    mel_low = 1127.0 * math.log(1.0 + low_hz / 700.0)
    mel_high = 1127.0 * math.log(1.0 + nyquist / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    mel = _mel((sample_rate / fft_size) * torch.arange(fft_size // 2)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0.0)


@lru_cache(maxsize=4)
def povey_window(length: int = FRAME_LENGTH) -> torch.Tensor:
    """The Povey window (length,): a symmetric Hann window to the power 0.85, float32."""
    return torch.hann_window(length, periodic=False, dtype=torch.float32).pow(POVEY_POWER)


def kaldi_fbank(wave: torch.Tensor) -> torch.Tensor:
    """Log mel filterbank of one 16 kHz waveform (samples,) in -1..1 -> (frames, 80).

    frames = 1 + (samples - 400) // 160 (Kaldi's `snip_edges`); a clip shorter than one frame
    gives (0, 80).
    """
    if wave.dim() != 1:
        raise ValueError(f"kaldi_fbank takes one waveform (samples,), got shape {list(wave.shape)}")
    n = wave.shape[0]
    dtype, device = wave.dtype, wave.device
    if n < FRAME_LENGTH:
        return wave.new_zeros(0, FBANK_BINS)
    count = 1 + (n - FRAME_LENGTH) // FRAME_SHIFT
    frames = wave.as_strided((count, FRAME_LENGTH), (FRAME_SHIFT * wave.stride(0), wave.stride(0)))
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # the first sample is its own predecessor
    frames = (frames - PREEMPHASIS * previous) * povey_window().to(device, dtype)
    frames = F.pad(frames, (0, FFT_SIZE - FRAME_LENGTH))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = F.pad(mel_banks().to(device, dtype), (0, 1))  # zero weight on the Nyquist bin
    energies = power @ banks.T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()


def speaker_features(wave_32k: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """(batch, samples) at `sample_rate` -> fbank features (batch, frames, 80) of the 16 kHz audio.

    Rows must have the same length (they are stacked), as in the official batched call.
    """
    if wave_32k.dim() != 2:
        raise ValueError(f"speaker_features takes (batch, samples), got shape {list(wave_32k.shape)}")
    wave_16k = resample(wave_32k, sample_rate, SV_SAMPLE_RATE)
    return torch.stack([kaldi_fbank(row) for row in wave_16k])
