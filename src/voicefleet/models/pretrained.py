"""The official pretrained folder (`GPT_SoVITS/pretrained_models`) and random stand-ins for it.

Layout, exactly as GPT-SoVITS ships it::

    <dir>/chinese-hubert-base/                 transformers HuBERT folder
    <dir>/chinese-roberta-wwm-ext-large/       transformers BERT folder
    <dir>/gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt   GPT
    <dir>/gsv-v2final-pretrained/s2G2333k.pth  SoVITS generator (with enc_q)
    <dir>/gsv-v2final-pretrained/s2D2333k.pth  SoVITS discriminator
    <dir>/s1v3.ckpt                            GPT of v2Pro and v2ProPlus
    <dir>/v2Pro/s2Gv2Pro.pth, s2Dv2Pro.pth     v2Pro SoVITS generator and discriminator
    <dir>/v2Pro/s2Gv2ProPlus.pth, s2Dv2ProPlus.pth   the same for v2ProPlus
    <dir>/sv/pretrained_eres2netv2w24s4ep4.ckpt      speaker verification (v2Pro and v2ProPlus)

One folder may hold several versions, as the official one does; `find_pretrained` takes the
version to use (`version=`), or picks the first complete one of v2, v2ProPlus, v2Pro.

`init_pretrained` writes a complete folder of random-initialised models in that layout, at
tiny size (tests, demos) or full size (benchmarks: random weights cost the same as real ones),
for one version.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from voicefleet.models.builders import SOVITS_CONFIGS, speaker_verifier, speaker_verifier_tiny
from voicefleet.models.builders_discriminator import (discriminator_tiny, discriminator_tiny_v2pro, discriminator_v2,
                                                      discriminator_v2pro)
from voicefleet.models.builders_gpt import gpt_tiny, gpt_v2
from voicefleet.models.checkpoint.discriminator_io import save_discriminator
from voicefleet.models.checkpoint.files import atomic_folder
from voicefleet.models.checkpoint.gpt_io import save_gpt
from voicefleet.models.checkpoint.sovits_io import official_s2_hparams, save_sovits_pretrained
from voicefleet.models.checkpoint.speaker_io import save_speaker_verifier
from voicefleet.models.config import SOVITS_VERSIONS, GPTConfig
from voicefleet.models.sovits import SoVITS
from voicefleet.models.feature_folders import write_full_bert, write_full_hubert, write_tiny_bert, write_tiny_hubert

logger = logging.getLogger(__name__)

HUBERT_DIR = "chinese-hubert-base"
BERT_DIR = "chinese-roberta-wwm-ext-large"
V2_DIR = "gsv-v2final-pretrained"
GPT_FILE = "s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"
SOVITS_G_FILE = "s2G2333k.pth"
SOVITS_D_FILE = "s2D2333k.pth"
PRO_DIR = "v2Pro"
PRO_GPT_FILE = "s1v3.ckpt"
SV_FILE = "sv/pretrained_eres2netv2w24s4ep4.ckpt"
# version -> (GPT, SoVITS generator, discriminator), relative to the folder
LAYOUT = {
    "v2": (f"{V2_DIR}/{GPT_FILE}", f"{V2_DIR}/{SOVITS_G_FILE}", f"{V2_DIR}/{SOVITS_D_FILE}"),
    "v2Pro": (PRO_GPT_FILE, f"{PRO_DIR}/s2Gv2Pro.pth", f"{PRO_DIR}/s2Dv2Pro.pth"),
    "v2ProPlus": (PRO_GPT_FILE, f"{PRO_DIR}/s2Gv2ProPlus.pth", f"{PRO_DIR}/s2Dv2ProPlus.pth"),
}
AUTO_ORDER = ("v2", "v2ProPlus", "v2Pro")  # which version an unspecified folder gives, when complete


class PretrainedError(FileNotFoundError):
    """A pretrained folder is missing or incomplete."""


@dataclass(frozen=True)
class PretrainedPaths:
    """Where each official pretrained part lives; every path is absolute.

    Absolute because the paths travel to other processes (Ray Train workers, Serve replicas)
    that run in another working directory, where a relative path names nothing.
    """

    root: Path
    hubert: Path
    bert: Path
    gpt: Path
    sovits_g: Path
    sovits_d: Path
    version: str = "v2"
    sv: Path | None = None  # the speaker-verification network (v2Pro and v2ProPlus only)

    @classmethod
    def of(cls, root: str | Path, version: str = "v2") -> "PretrainedPaths":
        if version not in LAYOUT:
            raise ValueError(f"unknown model version {version!r}; choose one of {', '.join(LAYOUT)}")
        root = Path(root).expanduser().resolve()
        gpt, sovits_g, sovits_d = (root / part for part in LAYOUT[version])
        sv = root / SV_FILE if version != "v2" else None
        return cls(root, root / HUBERT_DIR, root / BERT_DIR, gpt, sovits_g, sovits_d, version, sv)

    def missing(self) -> list[str]:
        parts = [(self.hubert, True), (self.bert, True), (self.gpt, False), (self.sovits_g, False),
                 (self.sovits_d, False)] + ([(self.sv, False)] if self.sv is not None else [])
        return [str(p.relative_to(self.root)) + ("/" if is_dir else "")
                for p, is_dir in parts if not (p.is_dir() if is_dir else p.is_file())]


def _auto_version(root: Path, need_discriminator: bool) -> str:
    """The first version in `AUTO_ORDER` whose files are all there; else the one with most of them."""
    def gaps(version: str) -> list[str]:
        return [m for m in PretrainedPaths.of(root, version).missing()
                if need_discriminator or not m.endswith(LAYOUT[version][2])]
    for version in AUTO_ORDER:
        if not gaps(version):
            return version
    return min(AUTO_ORDER, key=lambda v: len(gaps(v)))


def find_pretrained(root: str | Path, *, need_discriminator: bool = False,
                    version: str | None = None) -> PretrainedPaths:
    """Resolve an official pretrained folder to absolute paths, or fail with one message listing
    what is missing. `version` picks the model version (default: the first complete one of v2,
    v2ProPlus, v2Pro)."""
    if version is not None and version not in LAYOUT:
        raise PretrainedError(f"unknown model version {version!r}; choose one of {', '.join(LAYOUT)}")
    resolved = Path(root).expanduser().resolve()
    if version is None and resolved.is_dir():
        version = _auto_version(resolved, need_discriminator)
    paths = PretrainedPaths.of(resolved, version or "v2")
    if not paths.root.is_dir():
        raise PretrainedError(f"pretrained folder {paths.root} does not exist "
                              f"(create a tiny one with: voicefleet init-pretrained --tiny {paths.root})")
    missing = [m for m in paths.missing() if need_discriminator or not m.endswith(LAYOUT[paths.version][2])]
    if missing:
        raise PretrainedError(f"pretrained folder {paths.root} is incomplete for {paths.version}: missing "
                              f"{', '.join(missing)} (expected the GPT-SoVITS 'pretrained_models' layout)")
    return paths


def official_s1_config(model: GPTConfig, *, name: str = "voice", version: str = "v2") -> dict:
    """The GPT config dict (s1longer-v2.yaml plus the WebUI's fields) stored in a `.ckpt`."""
    return {
        "train": {"seed": 1234, "epochs": 15, "batch_size": 8, "save_every_n_epoch": 5, "precision": "16-mixed",
                  "gradient_clip": 1.0, "if_save_every_weights": True, "if_save_latest": True, "if_dpo": False,
                  "half_weights_save_dir": f"GPT_weights_{version}", "exp_name": name},
        "optimizer": {"lr": 0.01, "lr_init": 1e-05, "lr_end": 0.0001, "warmup_steps": 2000, "decay_steps": 40000},
        "data": {"max_eval_sample": 8, "max_sec": 54, "num_workers": 4, "pad_val": 1024},
        "model": model.to_official(),
        "inference": {"top_k": 15},
    }


def init_pretrained(root: str | Path, size: Literal["tiny", "full"] = "tiny", *, seed: int = 0,
                    overwrite: bool = False, version: str = "v2") -> PretrainedPaths:
    """Write a random-initialised pretrained folder of one `version` in the official layout and
    return its paths.

    Everything is written to a temporary folder beside `root` and moved into place at the end
    (`atomic_folder`), so an interrupted run leaves nothing half-written. An existing non-empty
    `root` is kept unless `overwrite` is true; then it is removed only once the new folder is in
    place.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())) and not overwrite:
        raise FileExistsError(f"{root} already exists and is not empty; pass overwrite to replace it")
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    if version not in SOVITS_VERSIONS:
        raise ValueError(f"version must be one of {', '.join(SOVITS_VERSIONS)}, got {version!r}")
    pro = version != "v2"
    with atomic_folder(root, replace=overwrite) as staging:
        paths = PretrainedPaths.of(staging, version)
        for part in (paths.gpt, paths.sovits_g) + ((paths.sv,) if paths.sv else ()):
            part.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        logger.info("writing %s random HuBERT and BERT folders", size)
        sovits_config = SOVITS_CONFIGS[size, version]()
        verifier = None
        if pro:
            verifier = (speaker_verifier_tiny() if size == "tiny" else speaker_verifier()).eval()
            # the tiny verifier's embedding is narrower than the official 20480: the tiny SoVITS takes it
            sovits_config = dataclasses.replace(sovits_config, sv_embedding_dim=verifier.config.stats_dim)
        sovits = SoVITS(sovits_config)
        if size == "tiny":
            write_tiny_hubert(paths.hubert, seed=seed)
            write_tiny_bert(paths.bert, seed=seed)
            disc, gpt = (discriminator_tiny_v2pro() if pro else discriminator_tiny()), gpt_tiny()
        else:
            write_full_hubert(paths.hubert, seed=seed)
            write_full_bert(paths.bert, seed=seed)
            disc, gpt = (discriminator_v2pro() if pro else discriminator_v2()), gpt_v2()
        # A fresh official codebook is all zeros until k-means runs on data; fill it so that
        # different features map to different codes, as in a trained model.
        with torch.no_grad():
            codebook = sovits.quantizer.codebook
            codebook.embed.normal_()
            codebook.embed_avg.copy_(codebook.embed)
            codebook.cluster_size.fill_(1.0)
            codebook.inited.fill_(1)
        logger.info("writing %s GPT, SoVITS generator and discriminator", size)
        save_gpt(gpt, official_s1_config(gpt.config, version=version), paths.gpt, info="GPT-e0")
        save_sovits_pretrained(sovits, paths.sovits_g, info="0epoch_0iteration",
                               hparams=official_s2_hparams(sovits.config))
        save_discriminator(disc, paths.sovits_d)
        if paths.sv is not None and verifier is not None:
            logger.info("writing the %s speaker-verification network", size)
            save_speaker_verifier(verifier, paths.sv)
    logger.info("%s pretrained folder ready at %s", version, root)
    return PretrainedPaths.of(root, version)
