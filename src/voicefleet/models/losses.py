"""VITS / SoVITS v2 training losses, numerically as official `module/losses.py` and `s2_train.py`.

Every loss casts its inputs to float32 first (the official code does too), so they can be fed
half-precision activations from an autocast region. Sums run in the official order.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F


class DiscriminatorLoss(NamedTuple):
    """`total` carries the graph; the per-discriminator parts are detached 0-d tensors for logging.

    (The official code returns them as Python floats via `.item()`; a tensor avoids one device sync
    per discriminator per step. Call `.item()` when logging.)
    """

    total: torch.Tensor
    real: list[torch.Tensor]
    fake: list[torch.Tensor]


class GeneratorLoss(NamedTuple):
    """`total` and the per-discriminator terms (both with graph, as officially)."""

    total: torch.Tensor
    per_discriminator: list[torch.Tensor]


def discriminator_loss(real_scores: Sequence[torch.Tensor], fake_scores: Sequence[torch.Tensor]) -> DiscriminatorLoss:
    """Least-squares GAN loss for the discriminator: sum over i of mean((1 - r_i)^2) + mean(g_i^2).

    Args:
        real_scores: i -> `(batch, n_i)` scores of real audio.
        fake_scores: i -> `(batch, n_i)` scores of (detached) generated audio.
    """
    if len(real_scores) != len(fake_scores):
        raise ValueError(f"got {len(real_scores)} real and {len(fake_scores)} fake score tensors")
    total: torch.Tensor | float = 0.0
    real_parts, fake_parts = [], []
    for real, fake in zip(real_scores, fake_scores):
        real_part = torch.mean((1 - real.float()) ** 2)
        fake_part = torch.mean(fake.float() ** 2)
        total = total + (real_part + fake_part)
        real_parts.append(real_part.detach())
        fake_parts.append(fake_part.detach())
    return DiscriminatorLoss(torch.as_tensor(total), real_parts, fake_parts)


def generator_loss(fake_scores: Sequence[torch.Tensor]) -> GeneratorLoss:
    """Least-squares GAN loss for the generator: sum over i of mean((1 - g_i)^2).

    Args:
        fake_scores: i -> `(batch, n_i)` scores of generated audio.
    """
    total: torch.Tensor | float = 0.0
    parts = []
    for fake in fake_scores:
        part = torch.mean((1 - fake.float()) ** 2)
        parts.append(part)
        total = total + part
    return GeneratorLoss(torch.as_tensor(total), parts)


def feature_loss(real_features: Sequence[Sequence[torch.Tensor]],
                 fake_features: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Feature matching: 2 * sum over every feature map of mean |real - fake| (real detached).

    Args:
        real_features, fake_features: i -> j -> feature map of sub-discriminator i, layer j.
    """
    total: torch.Tensor | float = 0.0
    for real_maps, fake_maps in zip(real_features, fake_features):
        for real, fake in zip(real_maps, fake_maps):
            total = total + torch.mean(torch.abs(real.float().detach() - fake.float()))
    return torch.as_tensor(total) * 2


def kl_loss(z_p: torch.Tensor, logs_q: torch.Tensor, m_p: torch.Tensor, logs_p: torch.Tensor,
            z_mask: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per valid latent element, with z_p a sample of q mapped through the flow.

    Computes sum(mask * (logs_p - logs_q - 1/2 + (z_p - m_p)^2 / (2 exp(2 logs_p)))) / sum(mask).

    Args:
        z_p, logs_q: `(batch, channels, frames)` flowed posterior sample and posterior log-std.
        m_p, logs_p: `(batch, channels, frames)` prior mean and log-std.
        z_mask: `(batch, 1, frames)` 1 for valid frames, 0 for padding.
    """
    z_p, logs_q, m_p, logs_p, z_mask = (t.float() for t in (z_p, logs_q, m_p, logs_p, z_mask))
    kl = logs_p - logs_q - 0.5
    kl = kl + 0.5 * ((z_p - m_p) ** 2) * torch.exp(-2.0 * logs_p)
    return torch.sum(kl * z_mask) / torch.sum(z_mask)


def mel_l1(target_mel: torch.Tensor, predicted_mel: torch.Tensor) -> torch.Tensor:
    """Mean absolute log-mel difference, `(batch, n_mels, frames)` each (s2 multiplies it by c_mel = 45)."""
    if target_mel.shape != predicted_mel.shape:
        raise ValueError(f"mel shapes differ: target {list(target_mel.shape)}, predicted {list(predicted_mel.shape)}")
    return F.l1_loss(predicted_mel.float(), target_mel.float())
