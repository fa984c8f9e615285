"""VITS-style transformer pieces on channel-first tensors (batch, channels, frames).

The SoVITS text encoder stacks post-norm layers of self-attention with windowed relative
position embeddings (keys and values, shared across heads) and a convolutional feed-forward
block; the MRTE fuses content and text with plain cross-attention of the same form.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Masked attention scores are filled with this finite value (not -inf), as the official model
# does; a fully padded query row then attends uniformly instead of producing NaNs.
MASKED_SCORE = -1e4


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dim of (batch, channels, frames); parameters `gamma`, `beta`."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.channels = channels  # a Python int: a traced graph (ONNX export) keeps it constant
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, -1), (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class ConvAttention(nn.Module):
    """Multi-head attention with 1x1-conv projections and optional relative positions.

    With `window_size`, scores and outputs get learned embeddings of the clipped offset
    j - i in [-window, window] (zero outside), one table shared by all heads.
    """

    def __init__(self, channels: int, out_channels: int, n_heads: int, p_dropout: float = 0.0,
                 window_size: int | None = None):
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"channels {channels} must be divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(p_dropout)
        if window_size is not None:
            std = self.head_dim**-0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.head_dim) * std)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.head_dim) * std)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)  # (b, h, t, d)

    def _offsets(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Index j - i + window into the relative table, and where |j - i| <= window."""
        pos = torch.arange(length, device=device)
        offset = pos.view(1, -1) - pos.view(-1, 1) + self.window_size
        valid = (offset >= 0) & (offset <= 2 * self.window_size)
        return offset.clamp(0, 2 * self.window_size), valid

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (b, c, t_q) attends to context (b, c, t_k); mask (b, 1, t_q, t_k), 0 = blocked."""
        q = self._heads(self.conv_q(x)) / math.sqrt(self.head_dim)
        k = self._heads(self.conv_k(context))
        v = self._heads(self.conv_v(context))
        scores = q @ k.transpose(-2, -1)
        if self.window_size is not None:
            t = q.size(2)
            if k.size(2) != t:
                raise ValueError("relative attention needs queries and keys of the same length")
            index, valid = self._offsets(t, x.device)
            rel = q @ self.emb_rel_k.transpose(-2, -1).unsqueeze(0)  # (b, h, t, 2w+1)
            rel = torch.gather(rel, 3, index.expand(*rel.shape[:2], t, t)) * valid
            scores = scores + rel
        if mask is not None:
            scores = scores.masked_fill(mask == 0, MASKED_SCORE)
        weights = self.drop(F.softmax(scores, dim=-1))
        out = weights @ v
        if self.window_size is not None:
            # Sum the attention weights falling on each relative offset, then mix the value table.
            width = 2 * self.window_size + 1
            per_offset = weights.new_zeros(*weights.shape[:3], width)
            per_offset.scatter_add_(3, index.expand_as(weights), weights * valid)
            out = out + per_offset @ self.emb_rel_v.unsqueeze(0)
        b, h, t, d = out.shape
        return self.conv_o(out.transpose(2, 3).reshape(b, h * d, t))


class ConvFeedForward(nn.Module):
    """conv(k) -> ReLU -> dropout -> conv(k), 'same' padding, masked before each conv."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int, p_dropout: float = 0.0):
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)
        self.drop = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.conv_1(F.pad(x * mask, self.pad))
        x = self.drop(torch.relu(x))
        return self.conv_2(F.pad(x * mask, self.pad)) * mask


class RelativeTransformerEncoder(nn.Module):
    """Post-norm encoder layers: x = norm1(x + attn(x)); x = norm2(x + ffn(x)); masked in and out."""

    def __init__(self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int = 1,
                 p_dropout: float = 0.0, window_size: int = 4):
        super().__init__()
        self.drop = nn.Dropout(p_dropout)
        self.attn_layers = nn.ModuleList(
            ConvAttention(channels, channels, n_heads, p_dropout, window_size) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            ConvFeedForward(channels, filter_channels, kernel_size, p_dropout) for _ in range(n_layers))
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (b, c, t), mask (b, 1, t) -> (b, c, t)."""
        attn_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)
        x = x * mask
        for attn, norm1, ffn, norm2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm1(x + self.drop(attn(x, x, attn_mask)))
            x = norm2(x + self.drop(ffn(x, mask)))
        return x * mask
