"""The gradients each optimizer applies are exactly those of its own loss.

Every test captures the gradients at `optimizer.step` (a step pre-hook), after a first full
iteration has run, and compares them with the gradients of that optimizer's loss alone,
recomputed on deep copies of the models with the same random state. A gradient left over from
an earlier backward (the generator loss's gradients on the discriminator, an earlier window's
micro-batches) shows up as a difference.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.platform.training.test_stages import make_examples
from voicefleet.models import losses
from voicefleet.models.audio import mel_spectrogram, spec_to_mel
from voicefleet.models.builders import sovits_tiny
from voicefleet.models.builders_discriminator import discriminator_tiny
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.models.modules.masks import slice_segments
from voicefleet.platform.training.batches import collate_gpt, collate_sovits
from voicefleet.platform.training.stages import GPTStage, OptimConfig, SoVITSStage

CPU = torch.device("cpu")


def capture_steps(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """A list that receives, at every `optimizer.step`, the gradients it is about to apply, by parameter name."""
    names = {id(p): n for n, p in model.named_parameters()}
    applied: list[dict[str, torch.Tensor]] = []

    def hook(opt, args, kwargs):
        applied.append({names[id(p)]: p.grad.detach().clone() for group in opt.param_groups for p in group["params"]
                        if p.grad is not None})

    optimizer.register_step_pre_hook(hook)
    return applied


def trainable(model: nn.Module) -> tuple[list[str], list[nn.Parameter]]:
    pairs = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in pairs], [p for _, p in pairs]


def grads_of(loss: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
    names, params = trainable(model)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: g for n, g in zip(names, grads) if g is not None}


def mean_of(grads: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: sum(g[k] for g in grads) / len(grads) for k in grads[0]}


def norm(grads: dict[str, torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])))


def assert_same_grads(applied: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Equal up to float rounding (summation order differs), measured against each tensor's own scale
    (floored at a millionth of the whole gradient's norm: some gradients, like an attention key bias's,
    are zero in exact arithmetic and rounding noise in practice)."""
    assert set(applied) == set(expected), f"{what}: parameters differ: {set(applied) ^ set(expected)}"
    floor = 1e-6 * norm(expected)
    error = {k: float((applied[k] - expected[k]).abs().max() / (expected[k].abs().max() + floor)) for k in applied}
    worst = max(error, key=error.get)
    assert error[worst] < 1e-4, (f"{what}: applied gradient norm {norm(applied):.4g}, its loss alone gives "
                                 f"{norm(expected):.4g} (largest relative difference {error[worst]:.2g} in {worst})")


# -- SoVITS: generator against the multi-period discriminator ------------------------------------------------


def sovits_models():
    torch.manual_seed(0)
    g, d = sovits_tiny(), discriminator_tiny()
    torch.nn.init.normal_(g.quantizer.codebook.embed)
    return g.train(), d.train()


def sovits_forward(g, batch):
    out = g(batch.ssl, batch.spec, batch.spec_lengths, batch.text, batch.text_lengths)
    y = slice_segments(batch.wave, out.slice_starts * g.config.audio.hop_length, g.config.segment_size)
    return out, y


def disc_loss_grads(g, d, batch, seed) -> dict[str, torch.Tensor]:
    """Gradients of the discriminator loss alone, on copies of the models."""
    g, d = copy.deepcopy(g), copy.deepcopy(d)
    torch.manual_seed(seed)
    out, y = sovits_forward(g, batch)
    scores = d(y, out.wave.detach())
    return grads_of(losses.discriminator_loss(scores.real_scores, scores.fake_scores).total, d)


def gen_loss_grads(g, d, batch, seed) -> dict[str, torch.Tensor]:
    """Gradients of the official s2 generator loss alone (LSGAN + feature matching + 45 mel + commit + KL)."""
    g, d = copy.deepcopy(g), copy.deepcopy(d)
    torch.manual_seed(seed)
    out, y = sovits_forward(g, batch)
    y_mel = slice_segments(spec_to_mel(batch.spec), out.slice_starts, g.config.segment_frames)
    scores = d(y, out.wave)
    loss = (losses.generator_loss(scores.fake_scores).total + losses.feature_loss(scores.real_features,
                                                                                   scores.fake_features)
            + 45.0 * losses.mel_l1(y_mel, mel_spectrogram(out.wave.squeeze(1))) + out.commit_loss
            + losses.kl_loss(out.z_p, out.post_log_std, out.prior_mean, out.prior_log_std, out.mask))
    return grads_of(loss, g)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_sovits_optimizers_apply_only_their_own_loss_gradients(accumulate):
    g, d = sovits_models()
    stage = SoVITSStage(g, d, CPU, OptimConfig(lr=2e-4, grad_clip=None, accumulate=accumulate))
    applied_g, applied_d = capture_steps(stage.optim_g, g), capture_steps(stage.optim_d, d)
    batches = [collate_sovits(make_examples(2, seed=s)) for s in range(accumulate)]

    def window(seed):
        for k, batch in enumerate(batches):
            torch.manual_seed(seed + k)
            m = stage.train_step(batch, last_micro=k == accumulate - 1)
            assert m["skipped"] == 0.0
        return m

    window(100)  # a first full iteration leaves whatever it leaves behind
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    # the discriminator steps in the last micro-batch's discriminator phase, before that micro-batch's
    # generator loss goes through it (as officially); earlier micro-batches see the window's first one
    d_seen: list[nn.Module] = []
    for k, batch in enumerate(batches):
        torch.manual_seed(200 + k)
        m = stage.train_step(batch, last_micro=k == accumulate - 1)
        d_seen.append(copy.deepcopy(d))
    assert len(applied_d) == len(applied_g) == 2
    expected_d = mean_of([disc_loss_grads(g0, d0, b, 200 + k) for k, b in enumerate(batches)])
    assert_same_grads(applied_d[-1], expected_d, "discriminator")
    assert m["grad_norm_d"] == pytest.approx(norm(expected_d), rel=1e-4)
    expected_g = mean_of([gen_loss_grads(g0, d_seen[k], b, 200 + k) for k, b in enumerate(batches)])
    assert_same_grads(applied_g[-1], expected_g, "generator")
    assert m["grad_norm_g"] == pytest.approx(norm(expected_g), rel=1e-4)


def test_sovits_generator_backward_adds_nothing_to_the_discriminator_gradients():
    g, d = sovits_models()
    stage = SoVITSStage(g, d, CPU, OptimConfig(lr=2e-4))
    after_d_step: list[list[torch.Tensor]] = []
    stage.optim_d.register_step_post_hook(lambda opt, args, kwargs: after_d_step.append(
        [p.grad.clone() for p in d.parameters()]))
    torch.manual_seed(1)
    stage.train_step(collate_sovits(make_examples(2)))
    assert after_d_step, "the discriminator did not step"
    assert all(torch.equal(p.grad, before) for p, before in zip(d.parameters(), after_d_step[-1]))


def test_clipping_scales_the_applied_discriminator_gradients_of_its_own_loss():
    g, d = sovits_models()
    clip = 1e-3  # far below the tiny model's gradient norms, so the clip always acts
    stage = SoVITSStage(g, d, CPU, OptimConfig(lr=2e-4, grad_clip=clip))
    applied_d = capture_steps(stage.optim_d, d)
    batch = collate_sovits(make_examples(2))
    torch.manual_seed(1)
    stage.train_step(batch)
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    torch.manual_seed(2)
    stage.train_step(batch)
    expected = disc_loss_grads(g0, d0, batch, 2)
    scale = clip / (norm(expected) + 1e-6)
    assert_same_grads(applied_d[-1], {k: v * scale for k, v in expected.items()}, "clipped discriminator")


# -- GPT: next-token cross-entropy ----------------------------------------------------------------------------


def gpt_loss_grads(gpt, batch, seed) -> dict[str, torch.Tensor]:
    gpt = copy.deepcopy(gpt)
    torch.manual_seed(seed)
    out = gpt(batch.phonemes, batch.phoneme_lens, batch.semantic, batch.semantic_lens, batch.bert)
    return grads_of(out.loss.float() / out.targets.numel(), gpt)


@pytest.mark.parametrize("accumulate", [1, 3])
def test_gpt_optimizer_applies_only_its_own_loss_gradients(accumulate):
    torch.manual_seed(0)
    gpt = gpt_tiny().train()
    stage = GPTStage(gpt, CPU, OptimConfig(lr=1e-3, grad_clip=None, accumulate=accumulate))
    applied = capture_steps(stage.optim, gpt)
    batches = [collate_gpt(make_examples(2, seed=s)) for s in range(accumulate)]
    for round_seed in (100, 200):
        before = copy.deepcopy(gpt)
        for k, batch in enumerate(batches):
            torch.manual_seed(round_seed + k)
            m = stage.train_step(batch, last_micro=k == accumulate - 1)
    assert len(applied) == 2
    expected = mean_of([gpt_loss_grads(before, b, 200 + k) for k, b in enumerate(batches)])
    assert_same_grads(applied[-1], expected, "gpt")
    assert m["grad_norm"] == pytest.approx(norm(expected), rel=1e-4)


def nan_phonemes(batch):
    """The same batch with non-finite BERT features, so its loss is NaN."""
    batch = copy.deepcopy(batch)
    batch.bert.fill_(float("nan"))
    return batch


def test_a_non_finite_micro_batch_skips_its_whole_window_and_leaves_nothing_behind():
    torch.manual_seed(0)
    gpt = gpt_tiny().train()
    stage = GPTStage(gpt, CPU, OptimConfig(lr=1e-3, grad_clip=None, accumulate=2))
    applied = capture_steps(stage.optim, gpt)
    batches = [collate_gpt(make_examples(2, seed=s)) for s in range(2)]
    before = copy.deepcopy(gpt)
    torch.manual_seed(100)
    first = stage.train_step(nan_phonemes(batches[0]), last_micro=False)
    assert first["ce"] != first["ce"]  # NaN: the injection reached the loss
    torch.manual_seed(101)
    m = stage.train_step(batches[1], last_micro=True)
    assert m["skipped"] == 1.0 and stage.skipped == 1 and applied == []
    assert all(torch.equal(p, q) for p, q in zip(gpt.parameters(), before.parameters()))
    for k, batch in enumerate(batches):
        torch.manual_seed(200 + k)
        m = stage.train_step(batch, last_micro=k == 1)
    assert m["skipped"] == 0.0 and len(applied) == 1
    expected = mean_of([gpt_loss_grads(before, b, 200 + k) for k, b in enumerate(batches)])
    assert_same_grads(applied[-1], expected, "gpt after a skipped window")


def test_a_non_finite_loss_skips_its_window_even_when_its_gradients_are_finite():
    weight = nn.Parameter(torch.ones(3))
    stage = GPTStage(nn.Linear(1, 1), CPU, OptimConfig(lr=0.1))
    stage.params, stage.optim = [weight], torch.optim.SGD([weight], lr=0.1)
    stage._backward(weight.sum() + torch.tensor(float("inf")), stage.params, stage.optim)  # d/dw = 1 each
    norms = {"grad_norm": stage._step(stage.params, stage.optim)}
    assert stage._end_micro(True, norms, {})["skipped"] == 1.0
    assert torch.equal(weight.detach(), torch.ones(3))


def test_a_skipped_fp16_window_lowers_the_loss_scale_and_training_goes_on():
    # the fp16 GradScaler path without a GPU: a CPU scaler on an fp32 model
    torch.manual_seed(0)
    gpt = gpt_tiny().train()
    stage = GPTStage(gpt, CPU, OptimConfig(lr=1e-3, accumulate=1))
    stage.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    applied = capture_steps(stage.optim, gpt)
    batch = collate_gpt(make_examples(2))
    assert stage.train_step(nan_phonemes(batch))["skipped"] == 1.0
    assert stage.scaler.get_scale() == 2.0 ** 9 and applied == []
    assert stage.train_step(batch)["skipped"] == 0.0 and len(applied) == 1


# -- DDP: one all-reduce per window, none from the generator's pass through the discriminator --------------


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group: DDP's reducer and communication hooks run as on many ranks."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def count_all_reduces(model: nn.Module, log: list[tuple[str, str]], name: str, phase: list[str]) -> None:
    """Logs (model name, phase) for every bucket the DDP model all-reduces."""

    def hook(state, bucket):
        log.append((name, phase[0]))
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    model.register_comm_hook(None, hook)


def test_ddp_models_synchronise_once_per_window(process_group):
    from torch.nn.parallel import DistributedDataParallel as DDP

    g, d = sovits_models()
    g, d = DDP(g, find_unused_parameters=True), DDP(d)
    stage = SoVITSStage(g, d, CPU, OptimConfig(lr=2e-4, grad_clip=None, accumulate=2))
    log: list[tuple[str, str]] = []
    phase = [""]
    count_all_reduces(g, log, "generator", phase)
    count_all_reduces(d, log, "discriminator", phase)
    stage.optim_d.register_step_post_hook(lambda opt, args, kwargs: phase.__setitem__(0, phase[0] + " after d step"))
    applied_d = capture_steps(stage.optim_d, d)
    batches = [collate_sovits(make_examples(2, seed=s)) for s in range(2)]
    per_window = []
    for window in range(2):
        if window == 1:
            g0, d0 = copy.deepcopy(g.module), copy.deepcopy(d.module)
        for k, batch in enumerate(batches):
            phase[0] = f"micro {k}"
            torch.manual_seed(100 * window + k)
            assert stage.train_step(batch, last_micro=k == 1)["skipped"] == 0.0
        per_window.append(log[:])
        log.clear()
    for events in per_window:
        assert {p for _, p in events} <= {"micro 1", "micro 1 after d step"}, events  # no sync before the last
        assert ("discriminator", "micro 1") in events and ("generator", "micro 1 after d step") in events
        assert ("discriminator", "micro 1 after d step") not in events  # the generator loss stops at its params
    expected = mean_of([disc_loss_grads(g0, d0, b, 100 + k) for k, b in enumerate(batches)])
    assert_same_grads({k.removeprefix("module."): v for k, v in applied_d[-1].items()}, expected, "ddp discriminator")
