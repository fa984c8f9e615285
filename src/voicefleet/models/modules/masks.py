"""Length masks and random segment slicing used by the VITS-style models."""

from __future__ import annotations

import torch


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """(batch,) lengths -> (batch, max_length) bool mask, True at valid positions."""
    if max_length is None:
        max_length = int(lengths.max())
    positions = torch.arange(max_length, dtype=lengths.dtype, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def length_mask(lengths: torch.Tensor, max_length: int, dtype: torch.dtype) -> torch.Tensor:
    """(batch,) lengths -> (batch, 1, max_length) float mask of 1s and 0s."""
    return sequence_mask(lengths, max_length).unsqueeze(1).to(dtype)


def slice_segments(x: torch.Tensor, starts: torch.Tensor, size: int) -> torch.Tensor:
    """Cut `size` frames from each row of (batch, channels, frames) at the given starts."""
    index = starts.view(-1, 1, 1).to(x.device) + torch.arange(size, device=x.device).view(1, 1, -1)
    return torch.gather(x, 2, index.expand(x.size(0), x.size(1), size))


def random_segment_starts(lengths: torch.Tensor, size: int, uniform: torch.Tensor | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Start frames floor(u * (length - size + 1)) with u ~ U[0, 1), one per row.

    `uniform` injects the draw (tests reproduce a recorded one); otherwise it comes from
    `generator` (or the global RNG, as the official trainer does).
    """
    if uniform is None:
        uniform = torch.rand(lengths.shape[0], generator=generator, device="cpu")
    uniform = uniform.to(lengths.device)
    # rows shorter than `size` start at 0 (their slice runs into the zero padding)
    return (uniform * (lengths - size + 1).clamp(min=1)).to(torch.long)
