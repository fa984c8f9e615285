"""Adapter (LoRA) fine-tuning: only the adapter trains, in both stages and both recipes; on Ray
Train the run exports an adapter file bound to the pretrained stage it was trained on."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch

from tests.platform.training.synthetic import learnable_examples, write_dataset
from tests.platform.training.test_stages import make_examples
from voicefleet.models import adapters as lora
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.platform.training.batches import collate_gpt, collate_sovits
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.worker import build_stage


def _files(tiny_pretrained) -> dict[str, str]:
    return {"gpt": str(tiny_pretrained.gpt), "sovits_g": str(tiny_pretrained.sovits_g),
            "sovits_d": str(tiny_pretrained.sovits_d)}


def test_config_checks_targets_per_stage():
    cfg = TrainConfig(stage="sovits", run_name="a", adapter="lora", lora_rank=4, lora_targets=["flow", "decoder"])
    assert cfg.adapter_spec() == lora.AdapterSpec("sovits", 4, lora.DEFAULT_ALPHA, ("flow", "decoder"))
    assert cfg.settings()["adapter"]["targets"] == ["flow", "decoder"]
    assert TrainConfig(stage="gpt", run_name="a").adapter_spec() is None
    with pytest.raises(ValueError, match="unknown gpt adapter target"):
        TrainConfig(stage="gpt", run_name="a", adapter="lora", lora_targets=["flow"])


@pytest.mark.parametrize("stage", ["sovits", "gpt"])
@pytest.mark.parametrize("recipe", ["voicefleet", "official"])
def test_only_the_adapter_trains(tiny_pretrained, stage, recipe):
    torch.manual_seed(0)
    cfg = TrainConfig(stage=stage, run_name="a", recipe=recipe, adapter="lora", lora_rank=4, accumulate=1,
                      sovits_lr=1e-3)
    built, models, collate = build_stage(cfg, _files(tiny_pretrained), torch.device("cpu"), lambda m, **_: m)
    model = models["generator" if stage == "sovits" else "gpt"]
    adapter = built.adapter
    assert adapter is lora.adapter_of(model) and adapter.spec == cfg.adapter_spec()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in adapter.parameters()}
    first_optimizer = built.optimizers[0]
    assert {id(p) for g in first_optimizer.param_groups for p in g["params"]} == trainable
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = collate(make_examples(2))
    with lora.use_adapter(adapter):
        for _ in range(2):  # B starts at 0: A's gradient is 0 until B has moved once
            metrics = built.train_step(batch)
    assert not metrics["skipped"]
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(f"{lora.ADAPTER_MODULE}.") for k in changed), sorted(changed)[:5]
    assert any(k.endswith("lora_A") for k in changed) and any(k.endswith("lora_B") for k in changed)


@pytest.mark.slow
def test_adapter_runs_on_ray_train_export_small_adapter_files(ray_session, tiny_pretrained, tmp_path):
    from voicefleet.platform.training.api import train_stage

    train, val = learnable_examples(6, seed=0), learnable_examples(2, seed=1, prefix="val")
    dataset = write_dataset(tmp_path / "dataset", train + val, ["train"] * 6 + ["val"] * 2)
    exported = {}
    for stage in ("sovits", "gpt"):
        cfg = TrainConfig(stage=stage, run_name=f"{stage}-{uuid.uuid4().hex[:8]}", storage_path=str(tmp_path / "runs"),
                          num_workers=1, batch_size=2, epochs=100, max_steps=6, eval_every=3, checkpoint_every=3,
                          sovits_lr=1e-3, gpt_lr_ratio=1.0, adapter="lora", lora_rank=4)
        result = train_stage(cfg, dataset, tiny_pretrained.root)
        assert result.steps == 6 and result.exported.endswith(".lora.safetensors")
        assert json.loads(Path(result.output_dir, "report.json").read_text())["settings"]["adapter"]["rank"] == 4
        exported[stage] = lora.load_adapter(result.exported)
        assert exported[stage].spec == cfg.adapter_spec()
        assert any(t.abs().max() > 0 for k, t in exported[stage].tensors.items() if k.endswith("lora_B"))
    # bound to the pretrained stage it was trained on, and much smaller than that stage
    sovits = load_sovits(tiny_pretrained.sovits_g).model
    gpt = load_gpt(tiny_pretrained.gpt)[0]
    assert exported["sovits"].build(sovits).names and exported["gpt"].build(gpt).names
    with pytest.raises(lora.AdapterError, match="different gpt base"):
        torch.manual_seed(99)
        from voicefleet.models.builders_gpt import gpt_tiny
        exported["gpt"].build(gpt_tiny())
    for stage, model in (("sovits", sovits), ("gpt", gpt)):
        full = sum(p.numel() * 2 for n, p in model.state_dict().items() if not n.startswith("posterior_encoder."))
        assert exported[stage].nbytes() < 0.25 * full  # tiny models: the 5% bound holds at full size
