"""The sweep objective of a v2ProPlus voice decodes with the reference clip's prepared
speaker-verification embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voicefleet.models.builders import sovits_tiny_v2proplus_config
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.models.sovits import SoVITS
from voicefleet.tuning.objective import HeldOut, synthesize_held_out

from tests.platform.training.synthetic import learnable_examples


def test_held_out_synthesis_uses_the_references_embedding():
    torch.manual_seed(0)
    gpt, sovits = gpt_tiny(), SoVITS(sovits_tiny_v2proplus_config())
    reference, clip = learnable_examples(2)
    held_out = HeldOut(reference, [clip])
    with pytest.raises(ValueError, match="speaker-verification embedding"):
        synthesize_held_out(gpt, sovits, held_out, max_tokens=8)  # a v2Pro reference needs one
    rng = np.random.default_rng(0)
    reference.sv = rng.standard_normal(sovits.config.sv_embedding_dim).astype(np.float32)
    (wave,) = synthesize_held_out(gpt, sovits, held_out, max_tokens=8)
    assert wave is not None and np.isfinite(wave).all()
    reference.sv = reference.sv * 5 + 1
    (other,) = synthesize_held_out(gpt, sovits, held_out, max_tokens=8)
    assert not np.array_equal(wave, other)  # the embedding reaches the decode
