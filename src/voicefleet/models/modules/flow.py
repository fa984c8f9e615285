"""Volume-preserving normalising flow of mean-only affine coupling layers (VITS prior flow)."""

from __future__ import annotations

import torch
from torch import nn

from voicefleet.models.modules.wavenet import WaveNet


class MeanOnlyCoupling(nn.Module):
    """x1 <- x1 + m(x0), with m from a WaveNet on the first half; the inverse subtracts it."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int,
                 n_layers: int, gin_channels: int = 0):
        super().__init__()
        if channels % 2:
            raise ValueError(f"coupling channels must be even, got {channels}")
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden_channels, 1)
        self.enc = WaveNet(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half, 1)
        # Zero-initialised so a fresh flow starts as the identity.
        nn.init.zeros_(self.post.weight)
        nn.init.zeros_(self.post.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None = None,
                reverse: bool = False) -> torch.Tensor:
        x0, x1 = x.split(self.half, dim=1)
        m = self.post(self.enc(self.pre(x0) * mask, mask, g=g)) * mask
        x1 = (x1 - m) * mask if reverse else m + x1 * mask
        return torch.cat([x0, x1], dim=1)


class CouplingFlow(nn.Module):
    """`n_flows` coupling layers, each followed by a channel flip (the log-determinant is 0)."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int,
                 n_layers: int, n_flows: int = 4, gin_channels: int = 0):
        super().__init__()
        self.flows = nn.ModuleList(
            MeanOnlyCoupling(channels, hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
            for _ in range(n_flows))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None = None,
                reverse: bool = False) -> torch.Tensor:
        """(b, channels, t) -> (b, channels, t); `reverse` maps prior samples back to latents."""
        if not reverse:
            for layer in self.flows:
                x = torch.flip(layer(x, mask, g=g), [1])
        else:
            for layer in reversed(self.flows):
                x = layer(torch.flip(x, [1]), mask, g=g, reverse=True)
        return x
