"""Synthetic clips and model set-up shared by the GPU tests and benchmarks/train_gpu.py.

Imports only torch, numpy and voicefleet modules that need no Ray (GPU machines may have no Ray).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from voicefleet.platform.training.batches import Example

SAMPLE_RATE = 32000


def make_examples(n: int = 2, seed: int = 0, seconds: float = 1.0) -> list[Example]:
    """`n` clips of `seconds` (+0.25 s per clip): a two-partial tone, random HuBERT features, phones,
    semantic tokens and (every other clip) BERT features."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = seconds + 0.25 * i
        t = np.arange(int(SAMPLE_RATE * length)) / SAMPLE_RATE
        f0 = 120 + 40 * rng.random()
        wave = (0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(4 * np.pi * f0 * t)).astype(np.float32)
        frames50 = int(length * 50)
        n_phones = 8 + 4 * i
        out.append(Example(f"clip{i}", wave, rng.standard_normal((768, frames50)).astype(np.float16),
                           rng.integers(0, 732, n_phones).tolist(), rng.integers(0, 1024, frames50 // 2).tolist(),
                           rng.standard_normal((1024, n_phones)).astype(np.float32) if i % 2 else None))
    return out


def without_dropout(model: nn.Module) -> nn.Module:
    """Turn every dropout of `model` off (modules and functional rates), in place.

    Two runs of one step that should differ only in precision must not draw different dropout
    masks: mask generation may depend on the dtype of the tensor it is drawn for."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0
        if isinstance(getattr(module, "p_dropout", None), float):
            module.p_dropout = 0.0
    return model


def twins(model: nn.Module, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Two identical copies of `model` on `device`."""
    return copy.deepcopy(model).to(device), copy.deepcopy(model).to(device)


def amp_precisions() -> list[str]:
    """The mixed precisions this GPU runs: what `precision="auto"` picks (bf16 where supported,
    `TrainConfig.resolved_precision`) and fp16 with a GradScaler (the fallback)."""
    return (["bf16"] if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else []) + ["fp16"]
