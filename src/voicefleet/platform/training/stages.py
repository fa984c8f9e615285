"""One optimisation step and one evaluation for each fine-tuning stage, in plain PyTorch.

`SoVITSStage` trains the generator against the multi-period discriminator as the official s2
fine-tuning does (AdamW betas 0.8/0.99 eps 1e-9; mel x45 + KL x1 + feature matching + LSGAN;
SSL projection and quantizer frozen; text embedding, text encoder and MRTE at `text_low_lr_rate`
of the base rate), in both recipes. `GPTStage` trains the GPT with next-token cross-entropy
ending in EOS: the `official` recipe with ScaledAdam on the cross-entropy summed over targets and
micro-batches (as GPT-SoVITS's s1 training does), the `voicefleet` recipe with AdamW on the mean
per target.

The stabilisers are options: mixed precision (bf16, or fp16 with a GradScaler; GPU only),
gradient clipping, gradient accumulation, and skipping (and counting) steps whose gradients are
not finite. Ray Train wraps these stages in `worker.py`; they run the same on one CPU.

Each optimizer applies the gradients of its own loss and nothing else: its gradients are cleared
before the first backward of an accumulation window (not after the step, where a later backward
could still add to them), every backward names the parameters it feeds (so the generator loss,
which runs through the discriminator, leaves no gradient there), and DDP models synchronise only
on the window's last micro-batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Iterable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from voicefleet.models import losses
from voicefleet.models.audio import mel_spectrogram, spec_to_mel
from voicefleet.models.modules.masks import slice_segments
from voicefleet.platform.training.batches import GPTBatch, SoVITSBatch
from voicefleet.platform.training.config import GPT_ADAMW, OFFICIAL_SCALED_ADAM, SOVITS_ADAMW
from voicefleet.platform.training.optim import ScaledAdam
from voicefleet.platform.training.schedules import Recipe

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass
class OptimConfig:
    lr: float
    grad_clip: float | None = 1.0
    accumulate: int = 1
    precision: Precision = "fp32"
    recipe: Recipe = "voicefleet"


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


class _Stage:
    """Shared step mechanics: autocast, scaler, accumulation windows, clipping, non-finite skip.

    A window is `cfg.accumulate` calls of `train_step`, the last one with `last_micro=True`. Each
    micro-batch adds loss / accumulate to the gradients; the last one steps. A window whose
    gradients are not finite (a non-finite loss in any micro-batch, or an fp16 overflow) steps no
    optimizer and counts as skipped. The verdict comes from the gradients after DDP has averaged
    them, so every rank skips the same windows and their collectives stay in step.
    """

    def __init__(self, device: torch.device, cfg: OptimConfig, models: list[nn.Module]):
        self.device = device
        self.cfg = cfg
        if cfg.precision != "fp32" and device.type != "cuda":
            raise ValueError(f"mixed precision {cfg.precision} needs a GPU; use fp32 on CPU")
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
        self.models = models
        self.micro = 0  # micro-batches done in the current window
        self.skipped = 0
        self.adapter = None  # the LoRA adapter an adapter run trains (the worker applies it), else None

    def autocast(self):
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16)

    def _window(self, last_micro: bool) -> contextlib.ExitStack:
        """Context for one micro-batch: DDP models skip their all-reduce except on the last one
        (DDP wants both the forward and the backward inside `no_sync`)."""
        stack = contextlib.ExitStack()
        if not last_micro:
            for model in self.models:
                if hasattr(model, "no_sync"):
                    stack.enter_context(model.no_sync())
        return stack

    def _backward(self, loss: torch.Tensor, params: list[nn.Parameter], optimizer: torch.optim.Optimizer, *,
                  mean_over_window: bool = True) -> None:
        """Adds this micro-batch's share of `loss`'s gradients to `params`, and to no other tensor.

        A non-finite loss still runs its backward (a rank that skipped it would leave the others
        waiting in the all-reduce), with NaN gradients, so the all-reduced window reads as
        non-finite on every rank even where this loss's gradients alone would have been finite."""
        if self.micro == 0:
            optimizer.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(loss.detach())):
            loss = loss * float("nan")
        if mean_over_window:
            loss = loss / self.cfg.accumulate
        self.scaler.scale(loss).backward(inputs=params)

    def _step(self, params: list[nn.Parameter], optimizer: torch.optim.Optimizer) -> float:
        """Unscale, clip (unless `grad_clip` is None: then the norm is only measured, as officially)
        and step on the window's gradients; returns their norm before clipping. A non-finite norm
        steps nothing (the next window clears the gradients)."""
        self.scaler.unscale_(optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip or float("inf")))
        if math.isfinite(norm):
            self.scaler.step(optimizer)
        return norm

    def _end_micro(self, last_micro: bool, norms: dict[str, float], metrics: dict[str, float]) -> dict[str, float]:
        """Closes the micro-batch; on the last one records the norms and the window's verdict."""
        self.micro = 0 if last_micro else self.micro + 1
        metrics["skipped"] = 0.0
        if not last_micro:
            return metrics
        self.scaler.update()
        metrics.update(norms)
        if not all(math.isfinite(v) for v in norms.values()):
            self.skipped += 1
            metrics["skipped"] = 1.0
            logger.warning("non-finite loss or gradients (%s); step skipped (%d so far)", metrics, self.skipped)
        return metrics


@dataclass
class GeneratorPass:
    """One SoVITS training forward: the model's output, the real and generated wave slices
    (batch, 1, segment samples) and their log-mels (batch, mels, segment frames)."""

    out: object  # the generator's training output
    y: torch.Tensor
    y_hat: torch.Tensor
    y_mel: torch.Tensor
    y_hat_mel: torch.Tensor


class SoVITSStage(_Stage):
    def __init__(self, net_g: nn.Module, net_d: nn.Module, device: torch.device, cfg: OptimConfig, *,
                 text_low_lr_rate: float = 0.4, c_mel: float = 45.0, c_kl: float = 1.0):
        super().__init__(device, cfg, [net_g, net_d])
        self.net_g, self.net_d = net_g, net_d
        self.c_mel, self.c_kl = c_mel, c_kl
        g = unwrap(net_g)
        g.ssl_proj.requires_grad_(False)
        g.quantizer.requires_grad_(False)
        text_side = {id(p) for m in (g.text_encoder.text_embedding, g.text_encoder.encoder_text, g.text_encoder.mrte)
                     for p in m.parameters()}
        base = [p for p in net_g.parameters() if p.requires_grad and id(p) not in text_side]
        text = [p for p in net_g.parameters() if p.requires_grad and id(p) in text_side]
        self.optim_g = torch.optim.AdamW([{"params": base, "lr": cfg.lr},
                                          {"params": text, "lr": cfg.lr * text_low_lr_rate}],
                                         lr=cfg.lr, **SOVITS_ADAMW)
        self.d_params = [p for p in net_d.parameters() if p.requires_grad]
        self.optim_d = torch.optim.AdamW(self.d_params, lr=cfg.lr, **SOVITS_ADAMW)
        self.g_params = base + text

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optim_g, self.optim_d]

    def train_step(self, batch: SoVITSBatch, last_micro: bool = True) -> dict[str, float]:
        """One micro-batch, in the official order: the discriminator's backward (and, on the last
        micro-batch, its step) on detached fakes, then the generator's loss through the (stepped)
        discriminator. With accumulation the discriminator steps in the last micro-batch, so only
        that one's generator loss sees the stepped discriminator; earlier ones see the window's
        starting one."""
        with self._window(last_micro):
            return self._train_step(batch, last_micro)

    def _train_step(self, batch: SoVITSBatch, last_micro: bool) -> dict[str, float]:
        self.net_g.train()
        self.net_d.train()
        fwd = self.generator_pass(batch)
        # discriminator first, on detached fakes; its backward runs before the generator's forward
        # through it, as officially (and as DDP needs: one forward per backward)
        loss_d = self.discriminator_loss(fwd)
        self._backward(loss_d, self.d_params, self.optim_d)
        norms = {"grad_norm_d": self._step(self.d_params, self.optim_d)} if last_micro else {}
        parts = self.generator_losses(fwd)
        # only the generator's parameters: the path through the discriminator adds nothing to its gradients
        self._backward(parts["total"], self.g_params, self.optim_g)
        if last_micro:
            norms["grad_norm_g"] = self._step(self.g_params, self.optim_g)
        metrics = {"disc": float(loss_d.detach()), **{k: float(v.detach()) for k, v in parts.items()}}
        return self._end_micro(last_micro, norms, metrics)

    def generator_pass(self, batch: SoVITSBatch) -> "GeneratorPass":
        """The generator's training forward and the sliced targets its losses compare against."""
        g = unwrap(self.net_g)
        with self.autocast():
            out = self.net_g(batch.ssl, batch.spec, batch.spec_lengths, batch.text, batch.text_lengths, batch.sv)
        # mels and losses in fp32
        y_mel = slice_segments(spec_to_mel(batch.spec.float()), out.slice_starts, g.config.segment_frames)
        y_hat = out.wave.float()
        y = slice_segments(batch.wave, out.slice_starts * g.config.audio.hop_length, g.config.segment_size)
        return GeneratorPass(out, y, y_hat, y_mel, mel_spectrogram(y_hat.squeeze(1)))

    def discriminator_loss(self, fwd: "GeneratorPass") -> torch.Tensor:
        """LSGAN discriminator loss on the real slices and the detached generated ones."""
        with self.autocast():
            d = self.net_d(fwd.y, fwd.y_hat.detach())
        return losses.discriminator_loss(d.real_scores, d.fake_scores).total

    def generator_losses(self, fwd: "GeneratorPass") -> dict[str, torch.Tensor]:
        """The official generator loss and its parts: gen (LSGAN), fm, mel (x c_mel), kl (x c_kl),
        commit (the quantizer's; 0 while it is frozen) and their sum, total."""
        # the generator's pass goes through the bare discriminator: its loss only feeds the generator
        # (the backward names the generator's parameters), and a pass through the DDP wrapper
        # would leave the discriminator's reducer waiting for gradients that never come, so its next
        # backward would all-reduce even inside `no_sync`
        out = fwd.out
        with self.autocast():
            d = unwrap(self.net_d)(fwd.y, fwd.y_hat)
        parts = {"gen": losses.generator_loss(d.fake_scores).total,
                 "fm": losses.feature_loss(d.real_features, d.fake_features),
                 "mel": losses.mel_l1(fwd.y_mel, fwd.y_hat_mel) * self.c_mel,
                 "kl": losses.kl_loss(out.z_p, out.post_log_std, out.prior_mean, out.prior_log_std, out.mask) * self.c_kl,
                 "commit": out.commit_loss.float().reshape(())}
        parts["total"] = parts["gen"] + parts["fm"] + parts["mel"] + parts["commit"] + parts["kl"]
        return parts

    @torch.no_grad()
    def evaluate(self, batches: Iterable[SoVITSBatch]) -> dict[str, float]:
        """Validation reconstruction: decode each clip from its own codes, text and style with the
        prior mean (no noise); mean L1 between log-mels over every valid frame."""
        g = unwrap(self.net_g)
        g.eval()
        total, frames = 0.0, 0
        for batch in batches:
            for k in range(batch.ssl.shape[0]):
                n = int(batch.spec_lengths[k])
                spec = batch.spec[k:k + 1, :, :n]
                codes = g.extract_latent(batch.ssl[k:k + 1, :, :n - n % 2])
                text = batch.text[k:k + 1, : int(batch.text_lengths[k])]
                sv = batch.sv[k:k + 1] if batch.sv is not None else None  # v2Pro: the clip's own embedding
                wave = g.decode(codes, text, spec, noise_scale=0.0, sv=sv)
                mel_hat = mel_spectrogram(wave[:, 0].float())
                mel = spec_to_mel(spec.float())
                m = min(mel.shape[-1], mel_hat.shape[-1])
                total += float((mel[..., :m] - mel_hat[..., :m]).abs().mean()) * m
                frames += m
        return {"val_recon": total / max(frames, 1)}


class GPTStage(_Stage):
    """official recipe: ScaledAdam (`OFFICIAL_SCALED_ADAM`, its clipping factor on the log-scale
    gradients only, as GPT-SoVITS's copy does) on the summed cross-entropy, micro-batches summed;
    voicefleet recipe: AdamW on the per-target mean, micro-batches averaged."""

    def __init__(self, gpt: nn.Module, device: torch.device, cfg: OptimConfig):
        super().__init__(device, cfg, [gpt])
        self.gpt = gpt
        self.params = [p for p in gpt.parameters() if p.requires_grad]
        self.official = cfg.recipe == "official"
        if self.official:
            self.optim = ScaledAdam(self.params, lr=cfg.lr, clip_main_update=False, **OFFICIAL_SCALED_ADAM)
        else:
            self.optim = torch.optim.AdamW(self.params, lr=cfg.lr, **GPT_ADAMW)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optim]

    def train_step(self, batch: GPTBatch, last_micro: bool = True) -> dict[str, float]:
        with self._window(last_micro):
            self.gpt.train()
            with self.autocast():
                out = self.gpt(batch.phonemes, batch.phoneme_lens, batch.semantic, batch.semantic_lens, batch.bert)
            n_targets = max(1, int(out.targets.numel()))
            summed = out.loss.float()
            # official: the sum over targets, and over the window's micro-batches (manual_backward per batch)
            loss = summed if self.official else summed / n_targets
            self._backward(loss, self.params, self.optim, mean_over_window=not self.official)
            norms = {"grad_norm": self._step(self.params, self.optim)} if last_micro else {}
        metrics = {"loss": float(loss.detach()), "ce": float(summed.detach()) / n_targets,
                   "top1": float(out.top1_acc), "top3": float(out.top3_acc)}
        return self._end_micro(last_micro, norms, metrics)

    @torch.no_grad()
    def evaluate(self, batches: Iterable[GPTBatch]) -> dict[str, float]:
        """Validation token cross-entropy (per target, EOS included) and top-1 accuracy."""
        model = unwrap(self.gpt)
        model.eval()
        ce, acc, n = 0.0, 0.0, 0
        for batch in batches:
            out = model(batch.phonemes, batch.phoneme_lens, batch.semantic, batch.semantic_lens, batch.bert,
                        official_pad_mask_quirk=False)
            count = int(out.targets.numel())
            ce += float(F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]).float(),
                                        out.targets.reshape(-1), reduction="sum"))
            acc += float(out.top1_acc) * count
            n += count
        n = max(n, 1)
        return {"val_recon": ce / n, "val_ce": ce / n, "val_top1": acc / n}
