"""Mixed precision on CUDA: one SoVITS and one GPT fine-tuning step with autocast against the
same step in fp32, for both precisions `precision="auto"` chooses between on a GPU (bf16 where
the GPU supports it, else fp16 with a GradScaler; `TrainConfig.resolved_precision`).

Same tiny model, same batch, same seed, dropout off, so the two runs differ only in precision.
The losses of the step (computed before its update) must agree within `LOSS_TOL`, and the
mixed-precision step must update the weights with finite values.
"""

from __future__ import annotations

import pytest
import torch

from tests.gpu.common import amp_precisions, make_examples, twins, without_dropout
from voicefleet.models.builders import sovits_tiny_config
from voicefleet.models.builders_discriminator import discriminator_tiny
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.models.sovits import SoVITS
from voicefleet.platform.training.batches import collate_gpt, collate_sovits
from voicefleet.platform.training.stages import GPTStage, OptimConfig, SoVITSStage

pytestmark = pytest.mark.gpu

# |amp - fp32| <= atol + rtol * |fp32| per loss term. bf16 keeps 8 mantissa bits (relative
# rounding ~4e-3 per operation), fp16 11 bits; a forward pass through a few layers stays within
# a few rounding steps of fp32. atol covers terms near zero (KL, a fresh discriminator's loss).
LOSS_TOL = {"bf16": dict(atol=2e-2, rtol=3e-2), "fp16": dict(atol=5e-3, rtol=1e-2)}
# The mel term (x45 L1 between log-mels) and the total that contains it are looser: the decoder
# writes its waveform in the autocast dtype, and rounding an fp32 waveform to bf16 alone moves
# the log-mel L1 by ~3% (quiet bins sit at the rounding noise floor; fp16: ~0.3%).
MEL_RTOL = {"bf16": 1e-1, "fp16": 2e-2}
MAX_FP16_TRIES = 20  # a GradScaler skips steps whose scaled gradients overflow, halving its scale each time


def _close(amp: dict[str, float], fp32: dict[str, float], keys, precision: str) -> list[str]:
    bad = []
    for k in keys:
        tol = dict(LOSS_TOL[precision], **({"rtol": MEL_RTOL[precision]} if k in ("mel", "total") else {}))
        if not abs(amp[k] - fp32[k]) <= tol["atol"] + tol["rtol"] * abs(fp32[k]):
            bad.append(f"{k}: {precision} {amp[k]:.6g} vs fp32 {fp32[k]:.6g} (atol {tol['atol']}, rtol {tol['rtol']})")
    return bad


def _changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if v.is_floating_point())


def _finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point())


def _step_until_applied(stage, batch, model: torch.nn.Module, precision: str) -> None:
    """The step changes the weights; with fp16 the scaler may first skip overflowing steps."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tries = MAX_FP16_TRIES if precision == "fp16" else 1
    for _ in range(tries):
        if _changed(before, model):
            break
        stage.train_step(batch)
    assert _changed(before, model), f"{precision}: no step applied in {tries} tries"
    assert _finite(model), f"{precision}: non-finite weights after the step"
    assert stage.skipped == 0


@pytest.mark.parametrize("precision", amp_precisions())
def test_sovits_step_with_amp_matches_fp32(precision):
    device = torch.device("cuda")
    torch.manual_seed(0)
    config = sovits_tiny_config()
    g = without_dropout(SoVITS(config))
    torch.nn.init.normal_(g.quantizer.codebook.embed)
    d = without_dropout(discriminator_tiny())
    (g32, gamp), (d32, damp) = twins(g, device), twins(d, device)
    batch = collate_sovits(make_examples(2)).to(device)

    results, scaler_skipped_first = {}, False
    for name, (gen, disc, prec) in {"fp32": (g32, d32, "fp32"), precision: (gamp, damp, precision)}.items():
        stage = SoVITSStage(gen, disc, device, OptimConfig(lr=2e-4, precision=prec))
        torch.manual_seed(1)  # the same training slice and posterior noise in both runs
        before = {k: v.clone() for k, v in gen.state_dict().items()}
        scale = stage.scaler.get_scale()
        results[name] = stage.train_step(batch)
        scaler_skipped_first = scaler_skipped_first or stage.scaler.get_scale() < scale
        if prec != "fp32":
            if not _changed(before, gen):  # an fp16 step the scaler skipped: keep stepping
                _step_until_applied(stage, batch, gen, prec)
            assert _finite(gen) and _finite(disc)
    amp, fp32 = results[precision], results["fp32"]
    assert amp["skipped"] == 0 and fp32["skipped"] == 0
    # disc, mel and kl come from the step's first forward passes. gen and fm (and the total holding
    # them) come after the discriminator's update, as officially; when fp16's GradScaler skipped
    # that update (overflowing scaled gradients at its initial scale) they see another
    # discriminator than fp32's, so they are not comparable.
    keys = ("disc", "mel", "kl") + (() if scaler_skipped_first else ("gen", "fm", "total"))
    bad = _close(amp, fp32, keys, precision)
    print({k: (fp32[k], amp[k]) for k in keys}, "scaler skipped the first step:", scaler_skipped_first)
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("precision", amp_precisions())
def test_gpt_step_with_amp_matches_fp32(precision):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = without_dropout(gpt_tiny())
    m32, mamp = twins(model, device)
    batch = collate_gpt(make_examples(2)).to(device)

    results = {}
    for name, (net, prec) in {"fp32": (m32, "fp32"), precision: (mamp, precision)}.items():
        stage = GPTStage(net, device, OptimConfig(lr=1e-3, precision=prec))
        before = {k: v.clone() for k, v in net.state_dict().items()}
        results[name] = stage.train_step(batch)
        if prec != "fp32" and not _changed(before, net):
            _step_until_applied(stage, batch, net, prec)
        assert _finite(net)
    amp, fp32 = results[precision], results["fp32"]
    bad = _close(amp, fp32, ("ce",), precision)
    print({"ce": (fp32["ce"], amp["ce"]), "top1": (fp32["top1"], amp["top1"])})
    assert not bad, "; ".join(bad)
