"""Fine-tuning a SoVITS from a v2Pro/v2ProPlus pretrained folder is refused in one line, before Ray starts."""

from __future__ import annotations

import pytest

from voicefleet.platform.training.api import TrainingError, check_sovits_trainable, train_stage
from voicefleet.platform.training.config import TrainConfig


def test_v2proplus_sovits_training_is_refused_early(tiny_pretrained_v2proplus, tiny_pretrained, tmp_path):
    config = TrainConfig(stage="sovits", run_name="pro", storage_path=str(tmp_path / "runs"))
    with pytest.raises(TrainingError, match=r"fine-tuning a v2ProPlus SoVITS is not available yet .*v2 pretrained"):
        train_stage(config, tmp_path / "no-dataset", tiny_pretrained_v2proplus.root)
    assert not (tmp_path / "runs").exists()
    check_sovits_trainable(tiny_pretrained)  # v2 trains
