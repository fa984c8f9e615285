"""Random LoRA adapter files for the adapter-voice tests."""

from __future__ import annotations

import torch

from voicefleet.models import adapters as lora


def save_random_adapter(model, stage: str, fingerprint: str, path, seed: int, targets: tuple[str, ...] = ()):
    """A rank-4 adapter of `model` (the stage's default targets unless given) with random B
    matrices (so it changes the output), saved at `path`."""
    adapter = lora.Adapter.create(model, lora.AdapterSpec(stage, rank=4, targets=targets), fingerprint)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in adapter.items():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.2)
    return lora.save_adapter(adapter, path)
