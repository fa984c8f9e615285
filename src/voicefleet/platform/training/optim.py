"""ScaledAdam: the GPT optimizer of GPT-SoVITS's own training (its `AR/modules/optim.py`), written
from its published definition.

ScaledAdam is Adam whose update of each tensor is proportional to that tensor's size: a parameter
is treated as `p = underlying * exp(scale)`, the update of `underlying` is Adam's normalised step
times the tensor's root-mean-square value, and `scale` is learnt too, in log space, with its own
Adam-like rule, kept between `param_min_rms` and `param_max_rms`. Scalars get plain Adam at
`lr x scalar_lr_scale`, clamped to +-`scalar_max`. Per tensor of more than one element, with
g the gradient and t the step (0-based), `P = size_update_period`:

    delta   <- beta1 * delta
    s[t % P] = sum(p * g)                                  # gradient w.r.t. the log-scale
    if t % P == P - 1:                                     # every P steps
        rms <- rms(p)
        if t > 0:  v_s <- beta2^P v_s + (1 - beta2^P) mean(s^2)
                   step_s = -lr * scalar_lr_scale * sqrt(1 - beta2^(P * ((t + 1) // P))) * sum(s) / (sqrt(v_s) + eps)
                   (0 where rms < param_min_rms; -lr * scalar_lr_scale * P where rms > param_max_rms)
                   delta <- delta + (1 - beta1) * p * step_s
    v <- beta2 v + (1 - beta2) g^2;  v_hat = v / (1 - beta2^(t + 1)) while that divisor is below 0.99, else v
    delta <- delta - lr (1 - beta1) max(rms, param_min_rms) g / (sqrt(v_hat) + eps)
    p <- p + delta

`rms` starts as the tensor's rms at the first step; there is no first-moment bias correction (a
slower start, on purpose). For scalars: `delta <- beta1 delta - lr scalar_lr_scale (1 - beta1) g /
(sqrt(v / (1 - beta2^(t+1))) + eps)`, then p is clamped and `p <- p + delta`.

Update clipping, when `clipping_scale` is set: from step 1 on, the norm of the "normalised"
gradient (each tensor's gradient times its recorded rms; scalars as they are) is recorded; every
`clipping_update_period` steps the threshold becomes `clipping_scale` x the median of the last
period's norms, and from step `clipping_update_period` on, a step whose norm exceeds the
threshold has its gradient scaled down to it. GPT-SoVITS's copy of the optimizer applies that
factor only to the log-scale gradients `s` (it scales a local copy of the gradient that the main
update does not read); `clip_main_update=False` reproduces that, `True` (the definition) clips the
whole update. With the official period of 1000 steps, short fine-tunes never reach it.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor


class ScaledAdam(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 3e-2, *, betas: tuple[float, float] = (0.9, 0.98),
                 clipping_scale: float | None = None, clipping_update_period: int = 100, scalar_lr_scale: float = 0.1,
                 eps: float = 1e-8, param_min_rms: float = 1e-5, param_max_rms: float = 3.0, scalar_max: float = 10.0,
                 size_update_period: int = 4, clip_main_update: bool = True):
        if not 0 < betas[0] <= betas[1] < 1:
            raise ValueError(f"ScaledAdam needs 0 < beta1 <= beta2 < 1, got betas={betas}")
        if lr <= 0 or size_update_period < 1 or clipping_update_period < 1:
            raise ValueError(f"ScaledAdam needs lr > 0 and periods >= 1 (lr={lr}, size_update_period="
                             f"{size_update_period}, clipping_update_period={clipping_update_period})")
        defaults = dict(lr=lr, betas=tuple(betas), clipping_scale=clipping_scale,
                        clipping_update_period=clipping_update_period, scalar_lr_scale=scalar_lr_scale, eps=eps,
                        param_min_rms=param_min_rms, param_max_rms=param_max_rms, scalar_max=scalar_max,
                        size_update_period=size_update_period, clip_main_update=clip_main_update)
        super().__init__(params, defaults)
        for group in self.param_groups:
            # the group's step count and clipping record (plain numbers: saved with the param groups)
            group.setdefault("step", 0)
            group.setdefault("model_norms", [0.0] * clipping_update_period)
            group.setdefault("norm_threshold", None)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = group["params"]
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self._init_state(p)
            factor = self._clipping_factor(group, params, grads)
            for p, g in zip(params, grads):
                self._step_one(group, p, g, factor)
            group["step"] += 1
        return loss

    def _init_state(self, p: Tensor) -> None:
        state = self.state[p]
        state["delta"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
        if p.numel() > 1:
            state["param_rms"] = p.pow(2).mean().sqrt()
            state["scale_exp_avg_sq"] = torch.zeros((), device=p.device, dtype=p.dtype)
            state["scale_grads"] = torch.zeros(self.defaults["size_update_period"], device=p.device, dtype=p.dtype)

    def _clipping_factor(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> float:
        """The factor (<= 1) this step's gradients are scaled by; 1 until a threshold exists."""
        step, period = group["step"], group["clipping_update_period"]
        if group["clipping_scale"] is None or step == 0:
            return 1.0
        sumsq = sum(float((g.pow(2).sum() if p.numel() == 1 else (g * self.state[p]["param_rms"]).pow(2).sum()))
                    for p, g in zip(params, grads))
        norm = sumsq ** 0.5
        group["model_norms"][step % period] = norm
        if step % period == 0:
            ordered = sorted(group["model_norms"])
            group["norm_threshold"] = group["clipping_scale"] * ordered[min(period - 1, (period // 4) * 2)]
        if step < period or group["norm_threshold"] is None:
            return 1.0
        return min(1.0, group["norm_threshold"] / (norm + 1e-20))

    def _step_one(self, group: dict, p: Tensor, grad: Tensor, factor: float) -> None:
        state, step = self.state[p], group["step"]
        lr, eps = group["lr"], group["eps"]
        beta1, beta2 = group["betas"]
        scaled = grad * factor if factor != 1.0 else grad
        main = scaled if group["clip_main_update"] else grad
        delta = state["delta"]
        delta.mul_(beta1)
        if p.numel() == 1:
            state["exp_avg_sq"].mul_(beta2).addcmul_(main, main, value=1 - beta2)
            denom = (state["exp_avg_sq"] / (1 - beta2 ** (step + 1))).sqrt() + eps
            delta.add_(main / denom, alpha=-lr * group["scalar_lr_scale"] * (1 - beta1))
            p.clamp_(min=-group["scalar_max"], max=group["scalar_max"])
            p.add_(delta)
            return
        period = group["size_update_period"]
        state["scale_grads"][step % period] = (p * scaled).sum()
        if step % period == period - 1:
            state["param_rms"].copy_(p.pow(2).mean().sqrt())
            if step > 0:
                self._size_update(group, p, state)
        exp_avg_sq = state["exp_avg_sq"].mul_(beta2).addcmul_(main, main, value=1 - beta2)
        correction = 1 - beta2 ** (step + 1)
        if correction < 0.99:
            exp_avg_sq = exp_avg_sq / correction
        rms = state["param_rms"].clamp(min=group["param_min_rms"])
        delta.add_(main / (exp_avg_sq.sqrt() + eps) * (-lr * (1 - beta1) * rms))
        p.add_(delta)

    def _size_update(self, group: dict, p: Tensor, state: dict) -> None:
        """Learn the tensor's overall scale (in log space) from the last `size_update_period` steps."""
        beta1, beta2 = group["betas"]
        period = group["size_update_period"]
        size_lr = group["lr"] * group["scalar_lr_scale"]
        beta2_period = beta2 ** period  # the scale is updated once per period: a faster decay
        grads = state["scale_grads"]
        state["scale_exp_avg_sq"].mul_(beta2_period).add_(grads.pow(2).mean(), alpha=1 - beta2_period)
        size_steps = (group["step"] + 1) // period
        correction = (1 - beta2_period ** size_steps) ** 0.5
        scale_step = -size_lr * correction * grads.sum() / (state["scale_exp_avg_sq"].sqrt() + group["eps"])
        rms = state["param_rms"]
        if rms < group["param_min_rms"]:  # too small: shrink no further
            scale_step = torch.zeros_like(scale_step)
        elif rms > group["param_max_rms"]:  # too large: shrink at a fixed rate
            scale_step = torch.full_like(scale_step, -size_lr * period)
        state["delta"].add_(p * scale_step, alpha=1 - beta1)
