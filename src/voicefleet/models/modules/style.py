"""Mel style encoder: a reference spectrogram -> one global style vector (b, out_dim, 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GatedConv(nn.Module):
    """Residual conv + gated linear unit: x + dropout(a * sigmoid(b))."""

    def __init__(self, channels: int, kernel_size: int, p_dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, padding=(kernel_size - 1) // 2)
        self.drop = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return x + self.drop(a * torch.sigmoid(b))


class StyleSelfAttention(nn.Module):
    """Multi-head self-attention with a residual, on (b, t, c).

    Scores are divided by sqrt(model width), not sqrt(head width): the official encoder's
    scaling, which its weights were trained with.
    """

    def __init__(self, channels: int, n_heads: int, p_dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.scale = math.sqrt(channels)
        self.w_qs = nn.Linear(channels, channels)
        self.w_ks = nn.Linear(channels, channels)
        self.w_vs = nn.Linear(channels, channels)
        self.fc = nn.Linear(channels, channels)
        self.drop = nn.Dropout(p_dropout)
        self.attn_drop = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        heads = lambda y: y.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.w_qs(x)), heads(self.w_ks(x)), heads(self.w_vs(x))
        scores = q @ k.transpose(-2, -1) / self.scale
        if key_padding is not None:
            scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
        out = self.attn_drop(F.softmax(scores, dim=-1)) @ v
        return self.drop(self.fc(out.transpose(1, 2).reshape(b, t, c))) + x


class MelStyleEncoder(nn.Module):
    """Spectral MLP (Mish) -> 2 gated convs -> self-attention -> linear -> masked time average."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 128, kernel_size: int = 5,
                 n_heads: int = 2, p_dropout: float = 0.1):
        super().__init__()
        self.spectral_in = nn.Linear(in_channels, hidden)
        self.spectral_out = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(p_dropout)
        self.temporal = nn.Sequential(GatedConv(hidden, kernel_size, p_dropout),
                                      GatedConv(hidden, kernel_size, p_dropout))
        self.attention = StyleSelfAttention(hidden, n_heads, p_dropout)
        self.out = nn.Linear(hidden, out_channels)

    def forward(self, spec: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """spec (b, in_channels, t), mask (b, 1, t) of 1/0 -> style (b, out_channels, 1)."""
        x = spec.transpose(1, 2)
        padding = (mask.int() == 0).squeeze(1) if mask is not None else None
        x = self.drop(F.mish(self.spectral_in(x)))
        x = self.drop(F.mish(self.spectral_out(x)))
        x = self.temporal(x.transpose(1, 2)).transpose(1, 2)
        if padding is not None:
            x = x.masked_fill(padding.unsqueeze(-1), 0)
        x = self.out(self.attention(x, padding))
        if padding is None:
            return x.mean(dim=1).unsqueeze(-1)
        lengths = (~padding).sum(dim=1).view(-1, 1, 1)
        pooled = (x.masked_fill(padding.unsqueeze(-1), 0).float() / lengths).sum(dim=1)
        return pooled.to(x.dtype).unsqueeze(-1)
