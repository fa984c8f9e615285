"""The best checkpoint's weights in the official export formats, and whether GPT-SoVITS's own code
can load a voice of these sizes.

    export_best(config, checkpoint, pretrained_paths, out_dir)  # -> <out_dir>/<run_name>.pth or .ckpt
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from voicefleet.platform.training.checkpointing import load_state
from voicefleet.platform.training.config import TrainConfig

logger = logging.getLogger(__name__)


# What GPT-SoVITS's own SynthesizerTrn builds whatever its config says (GPT_SoVITS/module/models.py,
# mrte_model.py): the text encoder's MRTE() takes its default widths (192 in and out, 512 hidden,
# 4 heads) and adds the 512-wide style vector to its hidden state; HuBERT width, codebook, style
# encoder input and flow sizes are constants. A voice of other sizes loads here but never there.
OFFICIAL_FIXED_SOVITS_SIZES = {"hidden_channels": 192, "mrte_hidden": 512, "mrte_heads": 4, "gin_channels": 512,
                               "ssl_dim": 768, "codebook_size": 1024, "style_input_channels": 704,
                               "flow_layers": 4, "flow_wavenet_layers": 4, "wavenet_kernel_size": 5}


# v2Pro/v2ProPlus: gin is 1024 and the speaker-verification embedding 20480 wide
OFFICIAL_FIXED_PRO_SIZES = {**OFFICIAL_FIXED_SOVITS_SIZES, "gin_channels": 1024, "sv_embedding_dim": 20480}


def official_size_mismatches(sovits_config) -> list[str]:
    """The sizes of a `SoVITSConfig` that GPT-SoVITS's own code cannot build, as "name=ours (official N)";
    empty when its WebUI and api_v2.py can load the voice."""
    fixed = OFFICIAL_FIXED_PRO_SIZES if sovits_config.is_pro else OFFICIAL_FIXED_SOVITS_SIZES
    return [f"{name}={getattr(sovits_config, name)} (official {value})"
            for name, value in fixed.items() if getattr(sovits_config, name) != value]


def warn_if_not_official_size(sovits_config, path: Path | str) -> None:
    """Log a warning when a SoVITS export at `path` has sizes GPT-SoVITS's own loader cannot build."""
    mismatches = official_size_mismatches(sovits_config)
    if mismatches:
        logger.warning("%s is in the official format but not of official size (%s): voicefleet loads it, GPT-SoVITS's "
                       "WebUI and api_v2.py cannot (they build the text encoder's MRTE at fixed widths)",
                       path, ", ".join(mismatches))


def export_best(config: TrainConfig, checkpoint, paths, out_dir: Path, *,
                state: dict[str, Any] | None = None) -> Path:
    """A checkpoint's weights in the official export format (`state`: the checkpoint's run state,
    when the caller has already loaded it)."""
    from voicefleet.models.checkpoint.gpt_io import load_gpt, save_gpt
    from voicefleet.models.checkpoint.sovits_io import load_sovits, save_sovits_export
    from voicefleet.models.pretrained import official_s1_config

    if state is None:
        state = load_state(checkpoint)
    epoch, step = state["epoch"], state["step"]
    if config.adapter_spec() is not None:
        return export_adapter(config, state, paths, out_dir)
    if config.stage == "sovits":
        loaded = load_sovits(paths.sovits_g)
        loaded.model.load_state_dict(state["models"]["generator"])
        hparams = loaded.hparams
        if hparams is not None:
            hparams = {**hparams, "train": {**hparams.get("train", {}), "learning_rate": config.sovits_lr,
                                            "text_low_lr_rate": config.text_low_lr_rate,
                                            "batch_size": config.batch_size, "epochs": config.epochs},
                       "name": config.run_name}
        exported = save_sovits_export(loaded.model, out_dir / f"{config.run_name}.pth", hparams=hparams,
                                      info=f"{epoch}epoch_{step}iteration", name=config.run_name, overwrite=True)
        warn_if_not_official_size(loaded.config, exported)
        return exported
    model, gpt_cfg, info = load_gpt(paths.gpt)
    model.load_state_dict(state["models"]["gpt"])
    official = info.config if isinstance(info.config, dict) and "model" in info.config else official_s1_config(gpt_cfg)
    official = {**official, "train": {**official.get("train", {}), "exp_name": config.run_name,
                                      "epochs": config.epochs, "batch_size": config.batch_size}}
    return save_gpt(model, official, out_dir / f"{config.run_name}.ckpt", info=f"GPT-e{epoch}", overwrite=True)


def export_adapter(config: TrainConfig, state: dict, paths, out_dir: Path) -> Path:
    """An adapter run's best adapter as `<run_name>.lora.safetensors`: the adapter's tensors, its
    rank, alpha and targets, and the fingerprint of the pretrained stage it was trained on."""
    from voicefleet.models import adapters as lora
    from voicefleet.models.checkpoint.gpt_io import load_gpt
    from voicefleet.models.checkpoint.sovits_io import load_sovits

    if config.stage == "sovits":
        model, key = load_sovits(paths.sovits_g).model, "generator"
    else:
        model, key = load_gpt(paths.gpt)[0], "gpt"
    adapter = lora.install_for_training(model, config.adapter_spec())
    model.load_state_dict(state["models"][key])  # the frozen base as loaded, and the trained adapter
    return lora.save_adapter(adapter, out_dir / f"{config.run_name}.lora.safetensors")
