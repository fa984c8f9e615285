"""One optimisation step and evaluation per stage, on tiny models and synthetic clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voicefleet.models.builders import sovits_tiny
from voicefleet.models.builders_discriminator import discriminator_tiny
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.platform.training.batches import (
    Example,
    bucketed_batches,
    collate_gpt,
    collate_sovits,
)
from voicefleet.platform.training.stages import GPTStage, OptimConfig, SoVITSStage


def make_examples(n=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        seconds = 1.0 + 0.25 * i
        t = np.arange(int(32000 * seconds)) / 32000
        f0 = 120 + 40 * rng.random()
        wave = (0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(4 * np.pi * f0 * t)).astype(np.float32)
        frames50 = int(seconds * 50)
        out.append(Example(f"clip{i}", wave, rng.standard_normal((768, frames50)).astype(np.float16),
                           rng.integers(0, 732, 8 + i).tolist(), rng.integers(0, 1024, frames50 // 2).tolist(),
                           rng.standard_normal((1024, 8 + i)).astype(np.float32) if i % 2 else None))
    return out


def test_collate_shapes_follow_the_official_padding():
    ex = make_examples(3)
    b = collate_sovits(ex)
    longest = max(len(e.wav32k) for e in ex)
    assert b.spec.shape[-1] % 2 == 0 and b.spec.shape[-1] == b.ssl.shape[-1]
    assert b.wave.shape[-1] >= longest
    assert (b.text[0, len(ex[0].phone_ids):] == 0).all()
    g = collate_gpt(ex)
    assert (g.semantic[0, len(ex[0].semantic):] == 1024).all()
    assert g.bert[0].abs().sum() == 0 and g.bert[1].abs().sum() > 0


def test_bucketed_batches_split_evenly_across_ranks():
    lengths = [5, 50, 7, 48, 9, 52, 6]
    ranks = [list(bucketed_batches(lengths, 2, seed=1, epoch=0, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    seen = {i for r in ranks for b in r for i in b}
    assert seen == set(range(len(lengths)))
    again = list(bucketed_batches(lengths, 2, seed=1, epoch=0, rank=0, world_size=2))
    assert again == ranks[0]
    assert list(bucketed_batches(lengths, 2, seed=1, epoch=1, rank=0, world_size=2)) != ranks[0]


def test_sovits_stage_trains_and_evaluates():
    torch.manual_seed(0)
    g, d = sovits_tiny(), discriminator_tiny()
    torch.nn.init.normal_(g.quantizer.codebook.embed)
    stage = SoVITSStage(g, d, torch.device("cpu"), OptimConfig(lr=2e-4))
    batch = collate_sovits(make_examples(2))
    before = {k: v.clone() for k, v in g.state_dict().items()}
    m = stage.train_step(batch)
    for key in ("disc", "gen", "fm", "mel", "kl", "grad_norm_g"):
        assert np.isfinite(m[key]), key
    after = g.state_dict()
    assert not torch.equal(before["decoder.conv_pre.weight"], after["decoder.conv_pre.weight"])
    assert torch.equal(before["ssl_proj.weight"], after["ssl_proj.weight"])  # frozen
    assert torch.equal(before["quantizer.codebook.embed"], after["quantizer.codebook.embed"])
    lrs = [grp["lr"] for grp in stage.optim_g.param_groups]
    assert lrs[1] == pytest.approx(0.4 * lrs[0])
    val = stage.evaluate([collate_sovits(make_examples(2, seed=1))])
    assert np.isfinite(val["val_recon"]) and val["val_recon"] > 0


def test_non_finite_loss_skips_the_step():
    torch.manual_seed(0)
    g, d = sovits_tiny(), discriminator_tiny()
    stage = SoVITSStage(g, d, torch.device("cpu"), OptimConfig(lr=1e-4))
    batch = collate_sovits(make_examples(2))
    batch.wave[0] = float("nan")
    before = {k: v.clone() for k, v in d.state_dict().items()}
    m = stage.train_step(batch)
    assert m["skipped"] == 1.0 and stage.skipped == 1
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())


def test_gpt_stage_lowers_training_loss():
    torch.manual_seed(0)
    gpt = gpt_tiny()
    stage = GPTStage(gpt, torch.device("cpu"), OptimConfig(lr=1e-3))
    batch = collate_gpt(make_examples(4))
    first = stage.train_step(batch)["ce"]
    for _ in range(15):
        last = stage.train_step(batch)["ce"]
    assert last < first
    val = stage.evaluate([batch])
    assert 0 <= val["val_top1"] <= 1 and val["val_recon"] == val["val_ce"]


def test_mixed_precision_needs_a_gpu():
    with pytest.raises(ValueError, match="GPU"):
        GPTStage(gpt_tiny(), torch.device("cpu"), OptimConfig(lr=1e-3, precision="bf16"))
