"""One optimisation step and one evaluation for each fine-tuning stage, in plain PyTorch.

`SoVITSStage` trains the generator against the multi-period discriminator as the official s2
fine-tuning does (AdamW betas 0.8/0.99 eps 1e-9; mel x45 + KL x1 + feature matching + LSGAN;
SSL projection and quantizer frozen; text embedding, text encoder and MRTE at `text_low_lr_rate`
of the base rate). `GPTStage` trains the GPT with next-token cross-entropy ending in EOS.

The stabilisers are options: mixed precision (bf16, or fp16 with a GradScaler; GPU only),
gradient clipping, gradient accumulation, and skipping (and counting) steps whose loss is not
finite. Ray Train wraps these stages in `worker.py`; they run the same on one CPU.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from voicefleet.models import losses
from voicefleet.models.audio import mel_spectrogram, spec_to_mel
from voicefleet.models.modules.masks import slice_segments
from voicefleet.platform.training.batches import GPTBatch, SoVITSBatch

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass
class OptimConfig:
    lr: float
    grad_clip: float | None = 1.0
    accumulate: int = 1
    precision: Precision = "fp32"


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


class _Stage:
    """Shared step mechanics: autocast, scaler, accumulation, clipping, non-finite skip."""

    def __init__(self, device: torch.device, cfg: OptimConfig):
        self.device = device
        self.cfg = cfg
        if cfg.precision != "fp32" and device.type != "cuda":
            raise ValueError(f"mixed precision {cfg.precision} needs a GPU; use fp32 on CPU")
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
        self.micro = 0
        self.skipped = 0

    def autocast(self):
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16)

    def _backward_step(self, loss: torch.Tensor, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
                       last_micro: bool) -> float | None:
        """Backward (scaled by 1/accumulate); step on the last micro-batch. Returns the grad norm."""
        self.scaler.scale(loss / self.cfg.accumulate).backward()
        if not last_micro:
            return None
        self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip if self.cfg.grad_clip else float("inf"))
        self.scaler.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def _finite(self, *values: torch.Tensor) -> bool:
        return all(bool(torch.isfinite(v).all()) for v in values)


class SoVITSStage(_Stage):
    def __init__(self, net_g: nn.Module, net_d: nn.Module, device: torch.device, cfg: OptimConfig, *,
                 text_low_lr_rate: float = 0.4, c_mel: float = 45.0, c_kl: float = 1.0):
        super().__init__(device, cfg)
        self.net_g, self.net_d = net_g, net_d
        self.c_mel, self.c_kl = c_mel, c_kl
        g = unwrap(net_g)
        g.ssl_proj.requires_grad_(False)
        g.quantizer.requires_grad_(False)
        text_side = {id(p) for m in (g.text_encoder.text_embedding, g.text_encoder.encoder_text, g.text_encoder.mrte)
                     for p in m.parameters()}
        base = [p for p in net_g.parameters() if p.requires_grad and id(p) not in text_side]
        text = [p for p in net_g.parameters() if p.requires_grad and id(p) in text_side]
        betas, eps = (0.8, 0.99), 1e-9
        self.optim_g = torch.optim.AdamW([{"params": base, "lr": cfg.lr},
                                          {"params": text, "lr": cfg.lr * text_low_lr_rate}],
                                         lr=cfg.lr, betas=betas, eps=eps)
        self.optim_d = torch.optim.AdamW(net_d.parameters(), lr=cfg.lr, betas=betas, eps=eps)
        self.g_params = base + text

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optim_g, self.optim_d]

    def train_step(self, batch: SoVITSBatch, last_micro: bool = True) -> dict[str, float]:
        g = unwrap(self.net_g)
        self.net_g.train()
        self.net_d.train()
        frames = g.config.segment_frames
        hop = g.config.audio.hop_length
        with self.autocast():
            out = self.net_g(batch.ssl, batch.spec, batch.spec_lengths, batch.text, batch.text_lengths)
        # mels and losses in fp32, as officially
        y_mel = slice_segments(spec_to_mel(batch.spec.float()), out.slice_starts, frames)
        y_hat = out.wave.float()
        y_hat_mel = mel_spectrogram(y_hat.squeeze(1))
        y = slice_segments(batch.wave, out.slice_starts * hop, g.config.segment_size)
        metrics: dict[str, float] = {"skipped": 0.0}
        # discriminator first, on detached fakes; its backward runs before the generator's forward
        # through it, as officially (and as DDP needs: one forward per backward)
        with self.autocast():
            d = self.net_d(y, y_hat.detach())
        loss_d = losses.discriminator_loss(d.real_scores, d.fake_scores).total
        metrics["disc"] = float(loss_d.detach())
        if not self._finite(loss_d):
            return self._skip(metrics)
        norm_d = self._backward_step(loss_d, list(self.net_d.parameters()), self.optim_d, last_micro)
        with self.autocast():
            d = self.net_d(y, y_hat)
        loss_gen = losses.generator_loss(d.fake_scores).total
        loss_fm = losses.feature_loss(d.real_features, d.fake_features)
        loss_mel = losses.mel_l1(y_mel, y_hat_mel) * self.c_mel
        loss_kl = losses.kl_loss(out.z_p, out.post_log_std, out.prior_mean, out.prior_log_std, out.mask) * self.c_kl
        loss_g = loss_gen + loss_fm + loss_mel + out.commit_loss + loss_kl
        metrics.update(gen=float(loss_gen.detach()), fm=float(loss_fm.detach()), mel=float(loss_mel.detach()),
                       kl=float(loss_kl.detach()),
                       total=float(loss_g.detach()))
        if not self._finite(loss_g):
            return self._skip(metrics)
        norm_g = self._backward_step(loss_g, self.g_params, self.optim_g, last_micro)
        if last_micro:
            self.scaler.update()
            metrics.update(grad_norm_g=norm_g, grad_norm_d=norm_d)
        return metrics

    def _skip(self, metrics: dict[str, float]) -> dict[str, float]:
        """Never train on a non-finite loss: drop this step's gradients and count it."""
        self.skipped += 1
        self.optim_g.zero_grad(set_to_none=True)
        self.optim_d.zero_grad(set_to_none=True)
        metrics["skipped"] = 1.0
        logger.warning("non-finite loss (%s); step skipped (%d so far)", metrics, self.skipped)
        return metrics

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
                wave = g.decode(codes, text, spec, noise_scale=0.0)
                mel_hat = mel_spectrogram(wave[:, 0].float())
                mel = spec_to_mel(spec.float())
                m = min(mel.shape[-1], mel_hat.shape[-1])
                total += float((mel[..., :m] - mel_hat[..., :m]).abs().mean()) * m
                frames += m
        return {"val_recon": total / max(frames, 1)}


class GPTStage(_Stage):
    def __init__(self, gpt: nn.Module, device: torch.device, cfg: OptimConfig):
        super().__init__(device, cfg)
        self.gpt = gpt
        self.optim = torch.optim.AdamW(gpt.parameters(), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optim]

    def train_step(self, batch: GPTBatch, last_micro: bool = True) -> dict[str, float]:
        self.gpt.train()
        with self.autocast():
            out = self.gpt(batch.phonemes, batch.phoneme_lens, batch.semantic, batch.semantic_lens, batch.bert)
        n_targets = max(1, int(out.targets.numel()))
        loss = out.loss.float() / n_targets  # the official sum, normalised per target for stable rates
        if not self._finite(loss):
            self.skipped += 1
            self.optim.zero_grad(set_to_none=True)
            self.scaler.update()
            return {"skipped": 1.0, "ce": float(loss.detach())}
        norm = self._backward_step(loss, list(self.gpt.parameters()), self.optim, last_micro)
        if last_micro:
            self.scaler.update()
        metrics = {"ce": float(loss.detach()), "top1": float(out.top1_acc), "skipped": 0.0}
        if norm is not None:
            metrics["grad_norm"] = norm
        return metrics

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
