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


def write_random_voices(pretrained, folder, count: int, sovits_targets: tuple[str, ...] = ()) -> list[dict]:
    """Adapter files of `count` random voices over the pretrained GPT and SoVITS of `pretrained`:
    one {"gpt": path, "sovits": path} per voice, each voice with its own seeds."""
    from voicefleet.models.checkpoint.gpt_io import load_gpt
    from voicefleet.models.checkpoint.sovits_io import load_sovits

    gpt = load_gpt(pretrained.gpt)[0]
    sovits = load_sovits(pretrained.sovits_g).model
    fp = {"gpt": lora.base_fingerprint_of(gpt, "gpt"), "sovits": lora.base_fingerprint_of(sovits, "sovits")}
    return [{"gpt": save_random_adapter(gpt, "gpt", fp["gpt"], folder / f"v{i}.gpt.lora.safetensors", 2 * i),
             "sovits": save_random_adapter(sovits, "sovits", fp["sovits"], folder / f"v{i}.sovits.lora.safetensors",
                                           2 * i + 1, sovits_targets)}
            for i in range(count)]
