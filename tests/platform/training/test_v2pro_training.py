"""Fine-tuning a v2Pro/v2ProPlus SoVITS: batches carry each clip's speaker-verification embedding,
the training forward and the validation decode use it, and a dataset of the other version is
refused in one line before Ray starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from voicefleet.models.builders import sovits_tiny_v2proplus_config
from voicefleet.models.builders_discriminator import discriminator_tiny_v2pro
from voicefleet.models.sovits import SoVITS
from voicefleet.platform.training.api import TrainingError, check_sovits_trainable, train_stage
from voicefleet.platform.training.batches import collate_sovits
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.data import load_examples
from voicefleet.platform.training.stages import OptimConfig, SoVITSStage

from .synthetic import learnable_examples, write_dataset
from .test_stages import make_examples


def _with_sv(examples, dim, seed=0):
    rng = np.random.default_rng(seed)
    for e in examples:
        e.sv = rng.standard_normal(dim).astype(np.float32)
    return examples


def _pro_stage():
    torch.manual_seed(0)
    g = SoVITS(sovits_tiny_v2proplus_config())
    torch.nn.init.normal_(g.quantizer.codebook.embed)
    return g, SoVITSStage(g, discriminator_tiny_v2pro(), torch.device("cpu"), OptimConfig(lr=2e-4))


def test_pro_batches_carry_the_embeddings_and_a_mix_is_refused():
    dim = sovits_tiny_v2proplus_config().sv_embedding_dim
    ex = _with_sv(make_examples(3), dim)
    batch = collate_sovits(ex)
    assert batch.sv.shape == (3, dim)
    assert torch.equal(batch.sv[1], torch.from_numpy(ex[1].sv))
    assert collate_sovits(make_examples(2)).sv is None  # v2 datasets
    ex[0].sv = None
    with pytest.raises(ValueError, match="2 of 3 clips have a speaker-verification embedding"):
        collate_sovits(ex)


def test_v2proplus_stage_trains_and_evaluates_with_the_clips_embeddings():
    g, stage = _pro_stage()
    dim = g.config.sv_embedding_dim
    batch = collate_sovits(_with_sv(make_examples(2), dim))
    before = g.speaker_projection.weight.detach().clone()
    m = stage.train_step(batch)
    for key in ("disc", "gen", "fm", "mel", "kl", "grad_norm_g"):
        assert np.isfinite(m[key]), key
    # the embedding's projection is trained: the forward used the batch's embeddings
    assert not torch.equal(before, g.speaker_projection.weight)
    val_batch = collate_sovits(_with_sv(make_examples(2, seed=1), dim, seed=1))
    val = stage.evaluate([val_batch])
    assert np.isfinite(val["val_recon"]) and val["val_recon"] > 0
    # the validation decode takes each clip's own embedding: other embeddings, another score
    val_batch.sv = val_batch.sv.flip(0) * 3
    assert stage.evaluate([val_batch])["val_recon"] != val["val_recon"]


def _dataset(folder, *, sv_dim=None, version="v2"):
    examples = learnable_examples(3)
    if sv_dim:
        _with_sv(examples, sv_dim)
    write_dataset(folder, examples, ["train", "train", "val"])
    manifest = {"schema": {"sv_embedding": bool(sv_dim)}, "model_version": version}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def test_examples_load_with_their_embeddings(tmp_path):
    folder = _dataset(tmp_path / "pro", sv_dim=64, version="v2ProPlus")
    examples = load_examples(folder)
    assert all(e.sv is not None and e.sv.shape == (64,) for e in examples)
    assert all(e.sv is None for e in load_examples(_dataset(tmp_path / "v2")))


def test_a_dataset_of_the_other_version_is_refused_in_one_line(tiny_pretrained_v2proplus, tiny_pretrained, tmp_path):
    v2_data, pro_data = _dataset(tmp_path / "v2"), _dataset(tmp_path / "pro", sv_dim=64, version="v2ProPlus")
    listing = sorted(p.name for p in tmp_path.rglob("*"))
    config = TrainConfig(stage="sovits", run_name="pro", storage_path=str(tmp_path / "runs"))
    with pytest.raises(TrainingError, match=r"prepared with a v2 pretrained folder .* prepare it again with the "
                                            r"v2ProPlus pretrained folder"):
        train_stage(config, v2_data, tiny_pretrained_v2proplus.root)
    with pytest.raises(TrainingError, match=r"prepared with a v2ProPlus pretrained folder but .* is v2"):
        train_stage(config, pro_data, tiny_pretrained.root)
    assert not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == listing  # nothing the user gave changed
    check_sovits_trainable(tiny_pretrained_v2proplus, pro_data)  # matching versions train
    check_sovits_trainable(tiny_pretrained, v2_data)


def test_a_folder_of_several_versions_trains_the_datasets_version(tiny_pretrained_v2proplus, tiny_pretrained,
                                                                  tmp_path):
    import shutil

    from voicefleet.models.pretrained import PretrainedError
    from voicefleet.platform.data import prepare_dataset
    from voicefleet.platform.training.api import find_training_pretrained

    both = tmp_path / "pretrained_models"
    shutil.copytree(tiny_pretrained.root, both)
    for part in ("s1v3.ckpt", "v2Pro", "sv"):
        src = tiny_pretrained_v2proplus.root / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, both / part)
    pro_data = _dataset(tmp_path / "pro", sv_dim=64, version="v2ProPlus")
    paths = find_training_pretrained(both, pro_data, need_discriminator=True)
    assert paths.version == "v2ProPlus" and paths.gpt.name == "s1v3.ckpt"
    assert find_training_pretrained(both, _dataset(tmp_path / "v2"), need_discriminator=True).version == "v2"
    # a folder without the dataset's version: its own, and the mismatch is explained by the check
    assert find_training_pretrained(tiny_pretrained.root, pro_data, need_discriminator=True).version == "v2"
    listing = tmp_path / "voice.list"
    listing.write_text("a.wav|spk|zh|你好。\n", encoding="utf-8")
    with pytest.raises(PretrainedError, match="unknown model version 'v3'"):
        prepare_dataset(listing, both, tmp_path / "out", version="v3")
    assert not (tmp_path / "out").exists()
