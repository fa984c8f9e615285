"""Synthetic prepared clips with learnable structure: tokens follow phonemes, audio follows tokens."""

from __future__ import annotations

import numpy as np

from voicefleet.platform.training.batches import Example


def learnable_examples(n: int, seed: int = 0, prefix: str = "clip") -> list[Example]:
    """Each phoneme id maps to two semantic tokens and a pitch, the same in every clip."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        phones = rng.integers(100, 140, int(rng.integers(6, 11))).tolist()
        semantic = [2 * p % 1024 for p in phones for _ in range(2)] + [(2 * p + 1) % 1024 for p in phones]
        frames25 = len(semantic)
        sr, hop25 = 32000, 1280
        t = np.arange(frames25 * hop25) / sr
        f0 = np.repeat([80 + 3 * (s % 40) for s in semantic], hop25)
        wave = (0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sr) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        hubert = np.repeat(np.stack([np.sin(np.arange(768) * (s % 40 + 1) / 100) for s in semantic], 1), 2, axis=1)
        bert = rng.standard_normal((1024, len(phones))).astype(np.float32) if i % 2 else None
        out.append(Example(f"{prefix}{i:03d}", wave, hubert.astype(np.float16), phones, semantic, bert))
    return out
