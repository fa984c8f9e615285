"""Non-causal WaveNet stack with gated activations and global conditioning (VITS `WN`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def gated_activation(x: torch.Tensor, cond: torch.Tensor, channels: int) -> torch.Tensor:
    """tanh(first half of x + cond) * sigmoid(second half)."""
    h = x + cond
    return torch.tanh(h[:, :channels]) * torch.sigmoid(h[:, channels:])


class WaveNet(nn.Module):
    """`n_layers` dilated convs with gated units; residual and skip outputs, weight-normed.

    The last layer has no residual half. Dilation of layer i is `dilation_rate ** i`.
    """

    def __init__(self, channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 gin_channels: int = 0, p_dropout: float = 0.0):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"WaveNet kernel_size must be odd, got {kernel_size}")
        self.channels = channels
        self.n_layers = n_layers
        self.drop = nn.Dropout(p_dropout)
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        if gin_channels:
            self.cond_layer = weight_norm(nn.Conv1d(gin_channels, 2 * channels * n_layers, 1))
        for i in range(n_layers):
            dilation = dilation_rate**i
            self.in_layers.append(weight_norm(nn.Conv1d(
                channels, 2 * channels, kernel_size, dilation=dilation, padding=(kernel_size * dilation - dilation) // 2)))
            out = 2 * channels if i < n_layers - 1 else channels
            self.res_skip_layers.append(weight_norm(nn.Conv1d(channels, out, 1)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """x (b, channels, t), mask (b, 1, t), g (b, gin, 1) -> skip sum (b, channels, t)."""
        c = self.channels
        cond = self.cond_layer(g) if g is not None else None
        skip = torch.zeros_like(x)
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            h = in_layer(x)
            g_i = cond[:, 2 * c * i: 2 * c * (i + 1)] if cond is not None else torch.zeros_like(h)
            acts = self.drop(gated_activation(h, g_i, c))
            rs = res_skip(acts)
            if i < self.n_layers - 1:
                x = (x + rs[:, :c]) * mask
                skip = skip + rs[:, c:]
            else:
                skip = skip + rs
        return skip * mask
