"""The sweep objective (full-path, DTW-aligned mel L1) and the search space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.platform.training.synthetic import learnable_examples
from voicefleet.models.builders import sovits_tiny
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.tuning.objective import HeldOut, dtw_mel_l1, voice_reconstruction_loss
from voicefleet.tuning.space import Range, SearchSpace


def test_dtw_ignores_timing_but_not_content():
    rng = np.random.default_rng(0)
    mel = rng.standard_normal((8, 40))
    stretched = np.repeat(mel, 2, axis=1)  # same content, twice as slow
    other = rng.standard_normal((8, 80))
    assert dtw_mel_l1(mel, mel) == 0.0
    assert dtw_mel_l1(mel, stretched) == pytest.approx(0.0, abs=1e-12)
    assert dtw_mel_l1(mel, other) > 0.5
    assert dtw_mel_l1(mel, np.zeros((8, 0))) == float("inf")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    sovits = sovits_tiny().eval()
    torch.nn.init.normal_(sovits.quantizer.codebook.embed)
    return gpt_tiny().eval(), sovits


def test_objective_is_deterministic_and_responds_to_the_gpt_alone(models):
    gpt, sovits = models
    clips = learnable_examples(3, seed=4)
    held = HeldOut(reference=clips[0], clips=clips[1:])
    a = voice_reconstruction_loss(gpt, sovits, held, max_tokens=40)
    assert np.isfinite(a) and a == voice_reconstruction_loss(gpt, sovits, held, max_tokens=40)
    changed = gpt_tiny().eval()
    changed.load_state_dict(gpt.state_dict())
    with torch.no_grad():
        changed.head.weight.add_(0.5 * torch.randn_like(changed.head.weight))  # only the GPT differs
    assert voice_reconstruction_loss(changed, sovits, held, max_tokens=40) != a


def test_search_space_defaults_yaml_and_errors(tmp_path):
    space = SearchSpace()
    assert set(space.dimensions()) == {"sovits_lr", "gpt_lr_ratio", "warmup_fraction"}
    assert space.gpt_lr_ratio.low == 0.2 and space.gpt_lr_ratio.high == 1.0 and space.sovits_lr.log
    path = tmp_path / "space.yaml"
    path.write_text("gpt_lr_ratio: {low: 0.3, high: 0.6}\ntext_low_lr_rate: {low: 0.2, high: 0.6}\n")
    loaded = SearchSpace.from_yaml(path)
    assert loaded.gpt_lr_ratio == Range(low=0.3, high=0.6) and "text_low_lr_rate" in loaded.dimensions()
    assert set(loaded.tune_space()) == set(loaded.dimensions())
    with pytest.raises(ValueError, match="below"):
        Range(low=1.0, high=0.5)
    with pytest.raises(ValueError, match="log"):
        Range(low=0.0, high=1.0, log=True)
    path.write_text("gpt_lr_ratoi: {low: 0.3, high: 0.6}\n")
    with pytest.raises(ValueError):
        SearchSpace.from_yaml(path)
