"""Vector quantizer with an EMA-updated Euclidean codebook (SoVITS semantic tokens).

SoVITS v2 uses a single codebook (1024 x 768) on projected HuBERT features: the code of a
frame is the nearest codebook row. The codebook buffers (`inited`, `cluster_size`, `embed`,
`embed_avg`) follow the official layout so pretrained files load unchanged. During
fine-tuning the quantizer is frozen (official default); when it is trained, the codebook is
updated by exponential moving averages, as in VQ-VAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    """quantized (b, dim, t); codes (n_q=1, b, t); commit_loss scalar."""

    quantized: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor


class EMACodebook(nn.Module):
    def __init__(self, dim: int, size: int, decay: float = 0.99, eps: float = 1e-5, dead_code_threshold: float = 2.0):
        super().__init__()
        self.size = size
        self.decay = decay
        self.eps = eps
        self.dead_code_threshold = dead_code_threshold
        # Official codebooks start empty and are filled by k-means on the first training batch.
        self.register_buffer("inited", torch.zeros(1))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed", torch.zeros(size, dim))
        self.register_buffer("embed_avg", torch.zeros(size, dim))

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """(n, dim) -> (n,) index of the nearest codebook row (squared Euclidean distance)."""
        embed = self.embed.to(x.dtype)
        dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed.pow(2).sum(1).unsqueeze(0)
        return dist.argmin(dim=-1)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, iters: int = 50) -> None:
        """k-means initialisation on a batch of vectors (n, dim); single-process."""
        n = x.shape[0]
        idx = torch.randperm(n, device=x.device)[: self.size] if n >= self.size else torch.randint(0, n, (self.size,), device=x.device)
        centroids = x[idx].clone()
        counts = torch.zeros(self.size, device=x.device)
        for _ in range(iters):
            assign = torch.cdist(x, centroids).argmin(dim=1)
            counts = torch.bincount(assign, minlength=self.size).to(x.dtype)
            sums = torch.zeros_like(centroids).index_add_(0, assign, x)
            centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        self.embed.copy_(centroids)
        self.embed_avg.copy_(centroids)
        self.cluster_size.copy_(counts)
        self.inited.fill_(1)

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        onehot = F.one_hot(codes, self.size).to(x.dtype)
        counts, sums = onehot.sum(0), x.t() @ onehot
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums.t(), alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.size * self.eps) * n
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))
        dead = self.cluster_size < self.dead_code_threshold
        if dead.any():
            # Re-seed unused codes with random vectors of this batch. Under DDP every rank must
            # make the same choice, so rank 0 draws and broadcasts.
            picks = x[torch.randint(0, x.shape[0], (int(dead.sum()),), device=x.device)]
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.broadcast(picks, src=0)
            self.embed[dead] = picks


class VectorQuantizer(nn.Module):
    """One-level residual vector quantizer over (b, dim, t) features."""

    def __init__(self, dim: int = 768, codebook_size: int = 1024, commitment_weight: float = 1.0):
        super().__init__()
        self.codebook = EMACodebook(dim, codebook_size)
        self.commitment_weight = commitment_weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(b, dim, t) -> codes (1, b, t)."""
        b, d, t = x.shape
        return self.codebook.nearest(x.transpose(1, 2).reshape(-1, d)).view(1, b, t)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (1, b, t) -> (b, dim, t)."""
        return F.embedding(codes[0], self.codebook.embed).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        b, d, t = x.shape
        flat = x.transpose(1, 2).reshape(-1, d)
        if self.training and not bool(self.codebook.inited):
            self.codebook.init_from(flat.detach())
        codes = self.codebook.nearest(flat)
        quantized = F.embedding(codes, self.codebook.embed)
        loss = x.new_zeros(())
        if self.training:
            self.codebook.ema_update(flat.detach(), codes)
            loss = F.mse_loss(quantized.detach(), flat) * self.commitment_weight
            quantized = flat + (quantized - flat).detach()  # straight-through gradient
        return QuantizerOutput(quantized.view(b, t, d).transpose(1, 2), codes.view(1, b, t), loss)
