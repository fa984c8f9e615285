"""One SoVITS step and one GPT step of the `official` recipe on the tiny compat models, against the
official formulas: the losses GPT-SoVITS's own step computed (compat `s2.npz` 6.3-6.4, `s1.npz`
7.1) and the update its optimizers make (AdamW; ScaledAdam's first step by hand).

Sizes, configs and loss weights come from the fixture folder, so any fixture set of the same
layout works. The SoVITS forward gets the fixture's two random draws injected, and both models run
without dropout (the official GPT hard-codes 0.1), as the fixtures were made (eval mode).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.conftest import assert_close
from voicefleet.models.checkpoint.discriminator_io import load_discriminator
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.models.config import DiscriminatorConfig
from voicefleet.platform.training.batches import GPTBatch, SoVITSBatch
from voicefleet.platform.training.config import OFFICIAL_SCALED_ADAM, SOVITS_ADAMW, TrainConfig
from voicefleet.platform.training.scheduler import StepSchedule
from voicefleet.platform.training.stages import GPTStage, OptimConfig, SoVITSStage

LOSS_TOL = dict(atol=0.0, rtol=1e-4)  # compat README section 8
CPU = torch.device("cpu")


class _Eval(nn.Module):
    """A model kept in eval mode (no dropout, as the fixtures were made) behind the `.module`
    attribute the stages unwrap as they unwrap DDP."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = model

    def train(self, mode: bool = True):
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, *args):
        return self.module(*args)


class _Injected(_Eval):
    """The generator with the fixture's posterior noise and slice draws injected."""

    def __init__(self, generator: nn.Module, noise: torch.Tensor, uniform: torch.Tensor):
        super().__init__(generator)
        self.noise, self.uniform = noise, uniform

    def forward(self, *args):
        return self.module(*args, posterior_noise=self.noise, slice_uniform=self.uniform)


@pytest.fixture(scope="module")
def s2_train(compat_configs) -> dict:
    return compat_configs["s2_config"]["train"]


def _sovits(compat_dir, compat_configs, s2):
    generator = _Injected(load_sovits(compat_dir / "tiny_s2G.pth").model, s2["tr_rng_enc_q_eps"],
                          s2["tr_rng_slice_u"])
    override = compat_configs["discriminator_override"]
    config = DiscriminatorConfig(s_channels=tuple(override["s_channels"]), p_channels=tuple(override["p_channels"]))
    return generator, load_discriminator(compat_dir / "tiny_s2D.pth", config)


def _sovits_batch(s2) -> SoVITSBatch:
    return SoVITSBatch(s2["tr_ssl"], s2["tr_spec"], s2["tr_spec_lengths"], s2["tr_y"], s2["tr_text"],
                       s2["tr_text_lengths"])


def _official_sovits_stage(generator, discriminator, s2_train) -> tuple[SoVITSStage, TrainConfig]:
    cfg = TrainConfig(stage="sovits", run_name="x", recipe="official", sovits_lr=s2_train["learning_rate"],
                      text_low_lr_rate=s2_train["text_low_lr_rate"])
    stage = SoVITSStage(generator, discriminator, CPU, OptimConfig(lr=cfg.lr, grad_clip=cfg.grad_clip,
                                                                   recipe=cfg.recipe),
                        text_low_lr_rate=cfg.text_low_lr_rate, c_mel=s2_train["c_mel"], c_kl=s2_train["c_kl"])
    for opt in stage.optimizers:  # the rate of the first epoch, as the run sets it
        StepSchedule(opt, cfg, total_steps=10, steps_per_epoch=10)
    return stage, cfg


def test_sovits_step_losses_are_the_official_ones(compat_dir, compat_configs, s2, s2_train):
    generator, discriminator = _sovits(compat_dir, compat_configs, s2)
    stage, _ = _official_sovits_stage(generator, discriminator, s2_train)
    with torch.no_grad():
        fwd = stage.generator_pass(_sovits_batch(s2))
        loss_d = stage.discriminator_loss(fwd)
        parts = stage.generator_losses(fwd)
    assert torch.equal(fwd.out.slice_starts, s2["tr_ids_slice"])
    assert_close(loss_d, s2["loss_disc"], **LOSS_TOL, name="loss_disc")
    for ours, theirs in [("gen", "loss_gen"), ("fm", "loss_fm"), ("mel", "loss_mel"), ("kl", "loss_kl"),
                         ("commit", "tr_kl_ssl"), ("total", "loss_gen_all")]:
        assert_close(parts[ours], s2[theirs], **LOSS_TOL, name=theirs)


def _adamw_first_step(p0: torch.Tensor, grad: torch.Tensor | None, lr: float) -> torch.Tensor:
    """AdamW's first update: both moments equal their first sample after bias correction, so the
    step is lr x (weight decay x p + g / (|g| + eps)); a parameter without a gradient is untouched."""
    if grad is None:
        return p0
    p0, grad = p0.double(), grad.double()
    return p0 * (1 - lr * SOVITS_ADAMW["weight_decay"]) - lr * grad / (grad.abs() + SOVITS_ADAMW["eps"])


def test_official_sovits_step_is_adamw_on_each_loss_alone_without_clipping(compat_dir, compat_configs, s2, s2_train):
    generator, discriminator = _sovits(compat_dir, compat_configs, s2)
    g0, d0 = copy.deepcopy(generator), copy.deepcopy(discriminator)
    stage, cfg = _official_sovits_stage(generator, discriminator, s2_train)
    lr = cfg.rate(0, total_steps=10, steps_per_epoch=10)
    assert lr == pytest.approx(s2_train["learning_rate"] * cfg.official.lr_decay)  # stepped once before epoch 1
    group_lrs = [g["lr"] for g in stage.optim_g.param_groups]
    assert group_lrs == pytest.approx([lr, lr * s2_train["text_low_lr_rate"]])
    for opt in stage.optimizers:
        assert opt.defaults["betas"] == SOVITS_ADAMW["betas"] and opt.defaults["eps"] == SOVITS_ADAMW["eps"]
    batch = _sovits_batch(s2)
    metrics = stage.train_step(batch)
    assert metrics["skipped"] == 0.0

    # the discriminator: the gradients of its own loss on the starting weights
    ref = SoVITSStage(copy.deepcopy(g0), copy.deepcopy(d0), CPU, OptimConfig(lr=1.0))
    d_params = [p for p in ref.net_d.parameters() if p.requires_grad]
    d_grads = torch.autograd.grad(ref.discriminator_loss(ref.generator_pass(batch)), d_params, allow_unused=True)
    for (name, p1), p0, grad in zip(discriminator.named_parameters(), d_params, d_grads):
        assert_close(p1, _adamw_first_step(p0.detach(), grad, lr), atol=2e-7, rtol=1e-5, name=f"D {name}")

    # the generator: the gradients of the generator loss through the stepped discriminator
    ref = SoVITSStage(copy.deepcopy(g0), copy.deepcopy(discriminator), CPU, OptimConfig(lr=1.0))
    total = ref.generator_losses(ref.generator_pass(batch))["total"]
    text_side = {id(p) for g in stage.optim_g.param_groups[1:] for p in g["params"]}
    ours = dict(generator.named_parameters())
    trained = [(n, p) for n, p in ref.net_g.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(total, [p for _, p in trained], allow_unused=True)
    for (name, p0), grad in zip(trained, grads):
        p_lr = lr * s2_train["text_low_lr_rate"] if id(ours[name]) in text_side else lr
        assert_close(ours[name], _adamw_first_step(p0.detach(), grad, p_lr), atol=2e-7, rtol=1e-5, name=f"G {name}")
    # the frozen parts did not move
    for name, p in generator.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, dict(g0.named_parameters())[name]), name


def _gpt_batch(s1, tag: str) -> GPTBatch:
    return GPTBatch(s1[f"{tag}_x"], s1[f"{tag}_x_lens"], s1[f"{tag}_bert"], s1[f"{tag}_y"], s1[f"{tag}_y_lens"])


def _official_gpt_stage(gpt, accumulate: int) -> tuple[GPTStage, TrainConfig]:
    cfg = TrainConfig(stage="gpt", run_name="x", recipe="official", accumulate=accumulate)
    stage = GPTStage(_Eval(gpt), CPU, OptimConfig(lr=cfg.lr, grad_clip=cfg.grad_clip, accumulate=cfg.accumulate,
                                           recipe=cfg.recipe))
    stage.schedule = StepSchedule(stage.optim, cfg, total_steps=10, steps_per_epoch=10)
    return stage, cfg


@pytest.mark.parametrize("tag", ["tf1", "tf2"])
def test_gpt_step_loss_is_the_official_summed_cross_entropy_and_logs_top3(compat_dir, s1, tag):
    gpt, _, _ = load_gpt(compat_dir / "tiny_s1.ckpt")
    stage, _ = _official_gpt_stage(gpt, accumulate=1)
    metrics = stage.train_step(_gpt_batch(s1, tag))
    assert_close(metrics["loss"], s1[f"{tag}_loss"], **LOSS_TOL, name=f"{tag}_loss")
    assert_close(metrics["top3"], s1[f"{tag}_acc"], atol=1e-6, rtol=0, name=f"{tag}_acc")
    assert metrics["ce"] == pytest.approx(metrics["loss"] / s1[f"{tag}_targets"].numel())


def test_official_gpt_window_sums_its_micro_batches_into_one_scaled_adam_step(compat_dir, s1):
    gpt, _, _ = load_gpt(compat_dir / "tiny_s1.ckpt")
    start = copy.deepcopy(gpt)
    stage, cfg = _official_gpt_stage(gpt, accumulate=2)
    assert stage.optim.param_groups[0]["lr"] == cfg.official.gpt_first_lr  # the scheduler has not stepped yet
    stage.train_step(_gpt_batch(s1, "tf1"), last_micro=False)
    metrics = stage.train_step(_gpt_batch(s1, "tf2"), last_micro=True)
    assert metrics["skipped"] == 0.0

    ref = copy.deepcopy(start).eval()
    params = [p for p in ref.parameters() if p.requires_grad]
    summed = sum(ref(*(s1[f"{tag}_{k}"] for k in ("x", "x_lens", "y", "y_lens", "bert"))).loss for tag in ("tf1", "tf2"))
    grads = torch.autograd.grad(summed, params, allow_unused=True)
    lr, (beta1, _), eps = cfg.official.gpt_first_lr, OFFICIAL_SCALED_ADAM["betas"], OFFICIAL_SCALED_ADAM["eps"]
    for (name, p1), p0, grad in zip(gpt.named_parameters(), params, grads):
        p0 = p0.detach().double()
        g = torch.zeros_like(p0) if grad is None else grad.double()
        if p0.numel() == 1:  # plain Adam at lr x scalar_lr_scale, after the clamp
            step = lr * OFFICIAL_SCALED_ADAM["scalar_lr_scale"] * (1 - beta1) * g / (g.abs() + eps)
            expected = p0.clamp(-OFFICIAL_SCALED_ADAM["scalar_max"], OFFICIAL_SCALED_ADAM["scalar_max"]) - step
        else:  # step 0: no clipping yet, v_hat = g^2, the update scaled by the tensor's rms
            rms = p0.pow(2).mean().sqrt().clamp(min=OFFICIAL_SCALED_ADAM["param_min_rms"])
            expected = p0 - lr * (1 - beta1) * rms * g / (g.abs() + eps)
        assert_close(p1, expected, atol=2e-7, rtol=1e-5, name=name)
    stage.schedule.step()
    assert stage.optim.param_groups[0]["lr"] == pytest.approx(cfg.official.gpt_lr)  # later steps: the pinned rate
