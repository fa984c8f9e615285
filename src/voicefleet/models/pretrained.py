"""The official pretrained folder (`GPT_SoVITS/pretrained_models`) and random stand-ins for it.

Layout, exactly as GPT-SoVITS ships it::

    <dir>/chinese-hubert-base/                 transformers HuBERT folder
    <dir>/chinese-roberta-wwm-ext-large/       transformers BERT folder
    <dir>/gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt   GPT
    <dir>/gsv-v2final-pretrained/s2G2333k.pth  SoVITS generator (with enc_q)
    <dir>/gsv-v2final-pretrained/s2D2333k.pth  SoVITS discriminator

`init_pretrained` writes a complete folder of random-initialised models in that layout, at
tiny size (tests, demos) or full size (benchmarks: random weights cost the same as real ones).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from voicefleet.models.builders import sovits_tiny, sovits_v2
from voicefleet.models.builders_discriminator import discriminator_tiny, discriminator_v2
from voicefleet.models.builders_gpt import gpt_tiny, gpt_v2
from voicefleet.models.checkpoint.discriminator_io import save_discriminator
from voicefleet.models.checkpoint.files import atomic_folder
from voicefleet.models.checkpoint.gpt_io import save_gpt
from voicefleet.models.checkpoint.sovits_io import save_sovits_pretrained
from voicefleet.models.config import GPTConfig
from voicefleet.models.feature_folders import write_full_bert, write_full_hubert, write_tiny_bert, write_tiny_hubert

logger = logging.getLogger(__name__)

HUBERT_DIR = "chinese-hubert-base"
BERT_DIR = "chinese-roberta-wwm-ext-large"
V2_DIR = "gsv-v2final-pretrained"
GPT_FILE = "s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"
SOVITS_G_FILE = "s2G2333k.pth"
SOVITS_D_FILE = "s2D2333k.pth"


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

    @classmethod
    def of(cls, root: str | Path) -> "PretrainedPaths":
        root = Path(root).expanduser().resolve()
        v2 = root / V2_DIR
        return cls(root, root / HUBERT_DIR, root / BERT_DIR, v2 / GPT_FILE, v2 / SOVITS_G_FILE, v2 / SOVITS_D_FILE)

    def missing(self) -> list[str]:
        parts = [(self.hubert, True), (self.bert, True), (self.gpt, False), (self.sovits_g, False),
                 (self.sovits_d, False)]
        return [str(p.relative_to(self.root)) + ("/" if is_dir else "")
                for p, is_dir in parts if not (p.is_dir() if is_dir else p.is_file())]


def find_pretrained(root: str | Path, *, need_discriminator: bool = False) -> PretrainedPaths:
    """Resolve an official pretrained folder to absolute paths, or fail with one message listing
    what is missing."""
    paths = PretrainedPaths.of(root)
    if not paths.root.is_dir():
        raise PretrainedError(f"pretrained folder {paths.root} does not exist "
                              f"(create a tiny one with: voicefleet init-pretrained --tiny {paths.root})")
    missing = [m for m in paths.missing() if need_discriminator or not m.endswith(SOVITS_D_FILE)]
    if missing:
        raise PretrainedError(f"pretrained folder {paths.root} is incomplete: missing {', '.join(missing)} "
                              f"(expected the GPT-SoVITS 'pretrained_models' layout)")
    return paths


def official_s1_config(model: GPTConfig, *, name: str = "voice") -> dict:
    """The GPT config dict (s1longer-v2.yaml plus the WebUI's fields) stored in a `.ckpt`."""
    return {
        "train": {"seed": 1234, "epochs": 15, "batch_size": 8, "save_every_n_epoch": 5, "precision": "16-mixed",
                  "gradient_clip": 1.0, "if_save_every_weights": True, "if_save_latest": True, "if_dpo": False,
                  "half_weights_save_dir": "GPT_weights_v2", "exp_name": name},
        "optimizer": {"lr": 0.01, "lr_init": 1e-05, "lr_end": 0.0001, "warmup_steps": 2000, "decay_steps": 40000},
        "data": {"max_eval_sample": 8, "max_sec": 54, "num_workers": 4, "pad_val": 1024},
        "model": model.to_official(),
        "inference": {"top_k": 15},
    }


def init_pretrained(root: str | Path, size: Literal["tiny", "full"] = "tiny", *, seed: int = 0,
                    overwrite: bool = False) -> PretrainedPaths:
    """Write a random-initialised pretrained folder in the official layout and return its paths.

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
    with atomic_folder(root, replace=overwrite) as staging:
        paths = PretrainedPaths.of(staging)
        paths.gpt.parent.mkdir(parents=True)
        torch.manual_seed(seed)
        logger.info("writing %s random HuBERT and BERT folders", size)
        if size == "tiny":
            write_tiny_hubert(paths.hubert, seed=seed)
            write_tiny_bert(paths.bert, seed=seed)
            sovits, disc, gpt = sovits_tiny(), discriminator_tiny(), gpt_tiny()
        else:
            write_full_hubert(paths.hubert, seed=seed)
            write_full_bert(paths.bert, seed=seed)
            sovits, disc, gpt = sovits_v2(), discriminator_v2(), gpt_v2()
        # A fresh official codebook is all zeros until k-means runs on data; fill it so that
        # different features map to different codes, as in a trained model.
        with torch.no_grad():
            codebook = sovits.quantizer.codebook
            codebook.embed.normal_()
            codebook.embed_avg.copy_(codebook.embed)
            codebook.cluster_size.fill_(1.0)
            codebook.inited.fill_(1)
        logger.info("writing %s GPT, SoVITS generator and discriminator", size)
        save_gpt(gpt, official_s1_config(gpt.config), paths.gpt, info="GPT-e0")
        save_sovits_pretrained(sovits, paths.sovits_g, info="0epoch_0iteration")
        save_discriminator(disc, paths.sovits_d)
    logger.info("pretrained folder ready at %s", root)
    return PretrainedPaths.of(root)
