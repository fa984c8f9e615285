"""Official SoVITS generator files (v2, v2Pro, v2ProPlus): pretrained `s2G*.pth` and exported voice `.pth`.

* pretrained: `{'weight': full state dict incl. enc_q.*, 'config'?, 'info'?}`, fp32 or fp16;
* export (what GPT-SoVITS's WebUI writes per voice, and what we export): `OrderedDict(weight,
  config, info)` with `weight` = every key except `enc_q.*` in float16, `config` = a
  `utils.HParams` of the full s2 config, `info` = "<epoch>epoch_<step>iteration". v2Pro and
  v2ProPlus exports carry the version tag `05` / `06` in place of the zip header `PK`.

The model version comes from the file (`checkpoint.versions`), never from a flag: the config's
`version` field is overridden as the official loader does.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from voicefleet.models.config import V2PRO_MODEL, ConfigError, SoVITSConfig
from voicefleet.models.sovits import SoVITS
from voicefleet.models.checkpoint.errors import CheckpointError
from voicefleet.models.checkpoint.keymap import KeyMap, check_state_dict
from voicefleet.models.checkpoint.pickle_io import HParams, load_official_file, save_official_file, to_plain
from voicefleet.models.checkpoint.versions import VERSION_HEADS, header_version, same_family, sovits_version

logger = logging.getLogger(__name__)

POSTERIOR_PREFIX = "enc_q."  # official prefix of the posterior encoder, absent from exports
V1_SYMBOLS = 322


def sovits_keymap(config: SoVITSConfig) -> KeyMap:
    """The official <-> voicefleet key table for a SoVITS generator."""
    rules = [
        ("enc_p.", "text_encoder."),
        ("enc_p.mrte.c_pre.", "text_encoder.mrte.content_pre."),
        ("enc_p.mrte.c_post.", "text_encoder.mrte.content_post."),
        ("dec.", "decoder."),
        (POSTERIOR_PREFIX, "posterior_encoder."),
        ("ref_enc.spectral.0.fc.", "style_encoder.spectral_in."),
        ("ref_enc.spectral.3.fc.", "style_encoder.spectral_out."),
        ("ref_enc.slf_attn.", "style_encoder.attention."),
        ("ref_enc.fc.fc.", "style_encoder.out."),
        ("ssl_proj.", "ssl_proj."),
        ("quantizer.vq.layers.0._codebook.", "quantizer.codebook."),
    ]
    if config.is_pro:
        rules += [("sv_emb.", "speaker_projection."), ("ge_to512.", "style_to_mrte."), ("prelu.", "style_activation.")]
    rules += [(f"ref_enc.temporal.{i}.conv1.conv.", f"style_encoder.temporal.{i}.conv.") for i in range(2)]
    # Official flows interleave parameter-free Flip modules: coupling i sits at index 2i.
    rules += [(f"flow.flows.{2 * i}.", f"flow.flows.{i}.") for i in range(config.flow_layers)]
    return KeyMap(rules)


def sovits_state_to_official(state: Mapping[str, torch.Tensor], config: SoVITSConfig) -> dict[str, torch.Tensor]:
    return sovits_keymap(config).to_official(state)


def sovits_state_from_official(state: Mapping[str, torch.Tensor], config: SoVITSConfig, *,
                               path: str | Path | None = None) -> dict[str, torch.Tensor]:
    return sovits_keymap(config).to_ours(state, path=path)


# where the official training config points at the pretrained generator and discriminator
_PRETRAINED_S2 = {
    "v2": ("gsv-v2final-pretrained/s2G2333k.pth", "gsv-v2final-pretrained/s2D2333k.pth"),
    "v2Pro": ("v2Pro/s2Gv2Pro.pth", "v2Pro/s2Dv2Pro.pth"),
    "v2ProPlus": ("v2Pro/s2Gv2ProPlus.pth", "v2Pro/s2Dv2ProPlus.pth"),
}


def official_s2_hparams(config: SoVITSConfig, *, name: str = "voice", train: Mapping[str, Any] | None = None) -> dict:
    """The full s2 config dict as the official training flow writes it into an export."""
    audio = config.audio
    version = config.version
    s2g, s2d = _PRETRAINED_S2[version]
    return {
        "train": {
            "log_interval": 100, "eval_interval": 500, "seed": 1234, "epochs": 8, "learning_rate": 0.0001,
            "betas": [0.8, 0.99], "eps": 1e-09, "batch_size": 4, "fp16_run": True, "lr_decay": 0.999875,
            "segment_size": config.segment_size, "init_lr_ratio": 1, "warmup_epochs": 0, "c_mel": 45,
            "c_kl": 1.0, "text_low_lr_rate": 0.4, "grad_ckpt": False,
            "pretrained_s2G": f"GPT_SoVITS/pretrained_models/{s2g}",
            "pretrained_s2D": f"GPT_SoVITS/pretrained_models/{s2d}",
            "if_save_latest": True, "if_save_every_weights": True, "save_every_epoch": 4, "gpu_numbers": "0",
            "lora_rank": "32",
            **dict(train or {}),
        },
        "data": {
            "max_wav_value": 32768.0, "sampling_rate": audio.sampling_rate, "filter_length": audio.filter_length,
            "hop_length": audio.hop_length, "win_length": audio.win_length, "n_mel_channels": audio.n_mel_channels,
            "mel_fmin": audio.mel_fmin, "mel_fmax": audio.mel_fmax, "add_blank": True,
            "n_speakers": config.n_speakers, "cleaned_text": True, "exp_dir": f"logs/{name}",
        },
        "model": config.to_official_model(),
        "s2_ckpt_dir": f"logs/{name}",
        "content_module": "cnhubert",
        "save_weight_dir": f"SoVITS_weights_{version}",
        "name": name,
        "version": version,
        "pretrain": None,
        "resume_step": None,
    }


def _describe_foreign(weight: Mapping[str, Any]) -> str | None:
    keys = list(weight)
    if keys and all(k.startswith("model.") for k in keys):
        return "a GPT (s1) checkpoint, not a SoVITS generator"
    if keys and all(k.startswith("discriminators.") for k in keys):
        return "a SoVITS discriminator (s2D) file, not a generator"
    if not any(k.startswith("enc_p.") for k in keys):
        return "not a SoVITS generator (no 'enc_p.*' keys)"
    return None


def _config_from_file(path: Path, raw: Any, weight: Mapping[str, torch.Tensor]) -> tuple[SoVITSConfig, dict | None]:
    hps = raw.get("config") if isinstance(raw, Mapping) else None
    plain = to_plain(hps) if hps is not None else None
    if plain is not None and (not isinstance(plain, dict) or "model" not in plain):
        raise CheckpointError(path, "its 'config' has no 'model' section", key="config")
    emb = weight.get("enc_p.text_embedding.weight")
    if emb is not None and emb.shape[0] == V1_SYMBOLS:
        raise CheckpointError(path, "is a GPT-SoVITS v1 model (322 phoneme symbols); voicefleet reads v2, "
                                    "v2Pro and v2ProPlus models", key="enc_p.text_embedding.weight")
    version = sovits_version(path, weight, (plain or {}).get("model", {}).get("version"))
    if version not in V2PRO_MODEL and version != "v2":
        raise CheckpointError(path, f"is a GPT-SoVITS {version} SoVITS model; voicefleet reads v2, v2Pro and "
                                    "v2ProPlus models")
    if plain is None:
        logger.info("%s has no config; assuming the official %s sizes", path, version)
        return SoVITSConfig(version=version, **V2PRO_MODEL.get(version, {})), None
    model = dict(plain["model"])
    # The official loader forces these two; the file's values are ignored.
    model["semantic_frame_rate"] = "25hz"
    model["version"] = version
    try:
        cfg = SoVITSConfig.from_official(model, data=plain.get("data"), train=plain.get("train"))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(path, f"its config cannot build a {version} model: {e}", key="config") from None
    if cfg.is_pro:
        # the MRTE width is fixed by the file's `ge_to512` (512 officially), not by the config
        to_mrte = weight.get("ge_to512.weight")
        if to_mrte is not None and to_mrte.shape[0] != cfg.mrte_hidden:
            cfg = dataclasses.replace(cfg, mrte_hidden_channels=int(to_mrte.shape[0]))
        # and the embedding width by `sv_emb` (20480 officially; narrower in tiny random folders)
        projection = weight.get("sv_emb.weight")
        if projection is not None and projection.shape[-1] != cfg.sv_embedding_dim:
            cfg = dataclasses.replace(cfg, sv_embedding_dim=int(projection.shape[-1]))
    return cfg, plain


def sovits_file_version(path: str | Path) -> str:
    """"v2", "v2Pro" or "v2ProPlus" of a SoVITS generator file, by the official rules (a tagged
    file is answered from its first bytes; a `PK` file is read for its keys and config)."""
    path = Path(path)
    tagged = header_version(path)
    if tagged in V2PRO_MODEL:
        return tagged
    raw = load_official_file(path)
    weight = raw.get("weight") if isinstance(raw, Mapping) else None
    if not isinstance(weight, Mapping) or _describe_foreign(weight):
        raise CheckpointError(path, "is not a SoVITS generator file")
    return _config_from_file(path, raw, weight)[0].version


@dataclass
class LoadedSoVITS:
    """A generator loaded from an official file; `hparams` is the file's full config as plain dicts."""

    model: SoVITS
    config: SoVITSConfig
    hparams: dict | None
    info: str | None
    has_posterior: bool  # False for exports: enc_q is not in the file (not needed to synthesise)

    @property
    def version(self) -> str:
        """"v2", "v2Pro" or "v2ProPlus", as detected from the file."""
        return self.config.version


def load_sovits(path: str | Path, *, config: SoVITSConfig | None = None,
                expect_version: str | None = None) -> LoadedSoVITS:
    """Load a pretrained s2G or an exported SoVITS `.pth` onto the CPU in float32.

    The version (v2, v2Pro, v2ProPlus) is detected from the file (`checkpoint.versions`).
    `expect_version` refuses a file of another family (v2 where v2Pro/v2ProPlus is expected and
    the reverse) with a message naming both versions. Every key and shape is checked against the
    model built from the file's config before any weight is copied; anything else raises
    `CheckpointError` naming the file and the key. The file is only read.
    """
    path = Path(path)
    raw = load_official_file(path)
    if not isinstance(raw, Mapping) or "weight" not in raw:
        found = list(raw.keys())[:5] if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(path, f"is not a SoVITS weight file: expected a dict with 'weight', found {found}")
    weight = raw["weight"]
    if not isinstance(weight, Mapping):
        raise CheckpointError(path, "its 'weight' is not a state dict", key="weight")
    foreign = _describe_foreign(weight)
    if foreign:
        raise CheckpointError(path, f"is {foreign}")
    file_cfg, hparams = _config_from_file(path, raw, weight)
    if expect_version is not None and not same_family(file_cfg.version, expect_version):
        raise CheckpointError(path, f"is a GPT-SoVITS {file_cfg.version} SoVITS model, but a {expect_version} model "
                                    f"is expected here; give a {expect_version} file (or use {file_cfg.version} "
                                    f"files throughout)")
    cfg = config or file_cfg
    model = SoVITS(cfg)
    state = sovits_state_from_official(weight, cfg, path=path)
    has_posterior = any(k.startswith(POSTERIOR_PREFIX) for k in weight)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(state, expected, path=path, kind="SoVITS generator",
                     allow_missing=() if has_posterior else ("posterior_encoder.",))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=has_posterior)
    info = raw.get("info") if isinstance(raw.get("info"), str) else None
    logger.info("loaded SoVITS %s %s from %s (%s)", cfg.version, "pretrained" if has_posterior else "export", path,
                info or "no info")
    return LoadedSoVITS(model.eval(), cfg, hparams, info, has_posterior)


def save_sovits_export(model: SoVITS, path: str | Path, *, hparams: Mapping[str, Any] | None = None,
                       info: str = "0epoch_0iteration", name: str = "voice", overwrite: bool = False) -> Path:
    """Write a voice in the official export layout that GPT-SoVITS's inference loads.

    `hparams` is the full s2 config (e.g. the one loaded with the pretrained model); by default
    it is built from the model's config. Weights are float16 without `enc_q.*`. v2Pro/v2ProPlus
    files get the official version tag (`05`/`06`) in place of `PK`, so GPT-SoVITS detects them.
    """
    official = sovits_state_to_official(model.state_dict(), model.config)
    weight = {k: v.detach().to("cpu", torch.float16) for k, v in official.items() if not k.startswith(POSTERIOR_PREFIX)}
    hps = copy.deepcopy(dict(hparams)) if hparams is not None else official_s2_hparams(model.config, name=name)
    hps["model"] = {**hps.get("model", {}), **model.config.to_official_model()}
    version = model.config.version
    if model.config.is_pro or hps.get("version") in VERSION_HEADS:  # the file's config says what it holds
        hps["version"] = version
        hps["save_weight_dir"] = f"SoVITS_weights_{version}"
    return save_official_file(OrderedDict(weight=weight, config=HParams(**hps), info=info), path, overwrite=overwrite,
                              head=VERSION_HEADS.get(version))


def save_sovits_pretrained(model: SoVITS, path: str | Path, *, hparams: Mapping[str, Any] | None = None,
                           info: str = "pretrained", dtype: torch.dtype = torch.float32,
                           overwrite: bool = False) -> Path:
    """Write a full generator (with `enc_q.*`) as a pretrained s2G file: a starting point for training."""
    official = sovits_state_to_official(model.state_dict(), model.config)
    weight = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu())
              for k, v in official.items()}
    hps = dict(hparams) if hparams is not None else official_s2_hparams(model.config)
    return save_official_file({"weight": weight, "config": HParams(**hps), "info": info}, path, overwrite=overwrite)
