"""Identify an official weight file and load it with the matching loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from voicefleet.models.checkpoint import CheckpointError, load_official_file


SPEAKER_KEYS = ("conv1.weight", "layer1.0.conv1.weight", "fuse34.local_att.0.weight")  # a bare ERes2NetV2 state dict


def checkpoint_kind(raw: Any) -> str:
    """'gpt', 'sovits', 'discriminator' or 'speaker-verification' from a loaded file's keys;
    CheckpointError otherwise."""
    if isinstance(raw, Mapping) and all(k in raw for k in SPEAKER_KEYS):
        return "speaker-verification"
    weight = raw.get("weight", raw.get("state_dict")) if isinstance(raw, Mapping) else None
    keys = list(weight) if isinstance(weight, Mapping) else []
    if keys and all(k.startswith("model.") for k in keys):
        return "gpt"
    if any(k.startswith("enc_p.") for k in keys):
        return "sovits"
    if keys and all(k.startswith("discriminators.") for k in keys):
        return "discriminator"
    raise CheckpointError(None, "not a GPT-SoVITS weight file (no GPT, SoVITS or discriminator weights found)")


def inspect_checkpoint(path: str | Path) -> dict[str, Any]:
    """A short report (kind, sizes, parameters, info) after a full, checked load."""
    from voicefleet.models.checkpoint.discriminator_io import load_discriminator
    from voicefleet.models.checkpoint.gpt_io import load_gpt
    from voicefleet.models.checkpoint.sovits_io import load_sovits

    path = Path(path)
    raw = load_official_file(path)
    try:
        kind = checkpoint_kind(raw)
    except CheckpointError as e:
        raise CheckpointError(path, str(e)) from None
    weight = raw if kind == "speaker-verification" else raw.get("weight", raw.get("state_dict"))
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in weight.values() if hasattr(v, "dtype")})
    report: dict[str, Any] = {"kind": kind, "stored dtype": ", ".join(dtypes), "tensors": len(weight)}
    if kind == "gpt":
        model, cfg, info = load_gpt(path)
        report.update(version="v2", layers=cfg.n_layer, hidden=cfg.hidden_dim, heads=cfg.head,
                      info=getattr(info, "info", None))
    elif kind == "sovits":
        loaded = load_sovits(path)
        model, cfg = loaded.model, loaded.config
        report.update(version=cfg.version, layout="pretrained (with enc_q)" if loaded.has_posterior else "export",
                      hidden=cfg.hidden_channels, gin=cfg.gin_channels, info=loaded.info)
    elif kind == "speaker-verification":
        from voicefleet.models.checkpoint.speaker_io import load_speaker_verifier

        model = load_speaker_verifier(path)
        report.update(version="v2Pro/v2ProPlus", channels=model.config.m_channels,
                      embedding=model.config.stats_dim)
    else:
        model = load_discriminator(path)
        report.update(periods=list(model.config.periods) if hasattr(model, "config") else "v2")
    report["parameters"] = f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"
    return report
