"""HiFi-GAN style multi-period discriminator of SoVITS v2 (official `MultiPeriodDiscriminator`).

One scale discriminator reads the raw waveform with strided, grouped 1-D convs; one period
discriminator per period folds the waveform into `(frames, period)` columns and reads each column
with `(k, 1)` 2-D convs. Every conv is followed by a leaky ReLU (slope 0.1) whose output is a
feature map for the feature-matching loss; a final `post` conv (no activation) gives the scores.

Official module names (`conv_post`) only appear in `checkpoint/discriminator_io.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from voicefleet.models.config import DiscriminatorConfig

LRELU_SLOPE = 0.1

# (kernel, stride, groups, padding) of the scale discriminator's convs, then of its post conv
SCALE_CONV_LAYOUT = ((15, 1, 1, 7), (41, 4, 4, 20), (41, 4, 16, 20), (41, 4, 64, 20), (41, 4, 256, 20), (5, 1, 1, 2))
SCALE_POST_LAYOUT = (3, 1, 1, 1)
# period discriminator: kernel (5, 1); stride (3, 1) for all but the last conv; "same" padding
PERIOD_KERNEL = 5
PERIOD_STRIDES = (3, 3, 3, 3, 1)
PERIOD_POST_KERNEL = 3


def _norm_fn(use_spectral_norm: bool) -> Callable[[nn.Module], nn.Module]:
    return parametrizations.spectral_norm if use_spectral_norm else parametrizations.weight_norm


@dataclass
class DiscriminatorOutput:
    """Scores and feature maps of every sub-discriminator, for real and generated audio.

    Index i runs over sub-discriminators: 0 is the scale discriminator, then one per period.

    Attributes:
        real_scores: i -> `(batch, n_i)` flattened `post` outputs for the real audio.
        fake_scores: the same for the generated audio.
        real_features: i -> list of feature maps: each conv's post-activation output, then the
            `post` output. Scale maps are `(batch, channels, frames)`, period maps
            `(batch, channels, frames, period)`.
        fake_features: the same for the generated audio.
    """

    real_scores: list[torch.Tensor]
    fake_scores: list[torch.Tensor]
    real_features: list[list[torch.Tensor]]
    fake_features: list[list[torch.Tensor]]


def _score(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Conv stack with leaky ReLU, then the 1-channel post conv: flattened scores and every feature map."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = post(x)
    features.append(x)
    return torch.flatten(x, 1), features


class ScaleDiscriminator(nn.Module):
    """Strided grouped 1-D convs over the raw waveform (official `DiscriminatorS`)."""

    def __init__(self, channels: tuple[int, ...], use_spectral_norm: bool = False):
        super().__init__()
        norm = _norm_fn(use_spectral_norm)
        widths = (1, *channels)
        self.convs = nn.ModuleList(
            norm(nn.Conv1d(widths[j], widths[j + 1], kernel, stride, padding=padding, groups=groups))
            for j, (kernel, stride, groups, padding) in enumerate(SCALE_CONV_LAYOUT)
        )
        kernel, stride, groups, padding = SCALE_POST_LAYOUT
        self.post = norm(nn.Conv1d(widths[-1], 1, kernel, stride, padding=padding, groups=groups))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`(batch, 1, samples)` -> scores `(batch, frames)` and the feature maps."""
        return _score(self.convs, self.post, wave)


class PeriodDiscriminator(nn.Module):
    """`(k, 1)` 2-D convs over the waveform folded into columns of `period` samples (`DiscriminatorP`)."""

    def __init__(self, period: int, channels: tuple[int, ...], use_spectral_norm: bool = False):
        super().__init__()
        if period < 1:
            raise ValueError(f"period must be a positive number of samples, got {period}")
        self.period = period
        norm = _norm_fn(use_spectral_norm)
        widths = (1, *channels)
        padding = (PERIOD_KERNEL // 2, 0)
        self.convs = nn.ModuleList(
            norm(nn.Conv2d(widths[j], widths[j + 1], (PERIOD_KERNEL, 1), (stride, 1), padding=padding))
            for j, stride in enumerate(PERIOD_STRIDES)
        )
        self.post = norm(nn.Conv2d(widths[-1], 1, (PERIOD_POST_KERNEL, 1), 1, padding=(PERIOD_POST_KERNEL // 2, 0)))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`(batch, 1, samples)` -> scores `(batch, n)` and feature maps `(batch, channels, frames, period)`."""
        batch, channels, samples = wave.shape
        remainder = samples % self.period
        if remainder:
            # reflect-pad the end up to a whole number of periods
            wave = F.pad(wave, (0, self.period - remainder), mode="reflect")
            samples += self.period - remainder
        return _score(self.convs, self.post, wave.view(batch, channels, samples // self.period, self.period))


class MultiPeriodDiscriminator(nn.Module):
    """The SoVITS v2 discriminator: `discriminators[0]` is the scale one, then one per period."""

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.config = config
        self.discriminators = nn.ModuleList(
            [ScaleDiscriminator(tuple(config.s_channels), config.use_spectral_norm)]
            + [PeriodDiscriminator(p, tuple(config.p_channels), config.use_spectral_norm) for p in config.periods]
        )

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> DiscriminatorOutput:
        """Score real and generated audio, each `(batch, 1, samples)`.

        Real and fake go through each sub-discriminator in separate calls, as officially.
        """
        for name, wave in (("real", real), ("fake", fake)):
            if wave.dim() != 3 or wave.shape[1] != 1:
                raise ValueError(f"{name} audio must be (batch, 1, samples), got shape {list(wave.shape)}")
        out = DiscriminatorOutput([], [], [], [])
        for disc in self.discriminators:
            real_score, real_features = disc(real)
            fake_score, fake_features = disc(fake)
            out.real_scores.append(real_score)
            out.fake_scores.append(fake_score)
            out.real_features.append(real_features)
            out.fake_features.append(fake_features)
        return out
