"""ScaledAdam (the official GPT optimizer) against a hand computation of its published definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voicefleet.platform.training.optim import ScaledAdam

LR, BETAS, EPS = 0.01, (0.9, 0.95), 1e-8
KW = dict(scalar_lr_scale=0.1, param_min_rms=1e-5, param_max_rms=3.0, scalar_max=10.0, size_update_period=4)


def _reference(params: dict[str, np.ndarray], grads: list[dict[str, np.ndarray]], *, clipping_scale, period,
               clip_main) -> dict[str, np.ndarray]:
    """The definition, step by step, in float64 NumPy (one tensor at a time, no batching)."""
    b1, b2 = BETAS
    P, slr = KW["size_update_period"], LR * KW["scalar_lr_scale"]
    p = {k: v.astype(np.float64).copy() for k, v in params.items()}
    delta = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    rms = {k: np.sqrt(np.mean(x ** 2)) for k, x in p.items() if x.size > 1}
    s = {k: np.zeros(P) for k in rms}
    vs = {k: 0.0 for k in rms}
    norms, threshold = np.zeros(period), None
    for t, g in enumerate(grads):
        factor = 1.0
        if clipping_scale is not None and t > 0:
            norm = np.sqrt(sum(np.sum(g[k] ** 2) if p[k].size == 1 else np.sum((g[k] * rms[k]) ** 2) for k in p))
            norms[t % period] = norm
            if t % period == 0:
                threshold = clipping_scale * np.sort(norms)[min(period - 1, (period // 4) * 2)]
            if t >= period:
                factor = min(1.0, threshold / (norm + 1e-20))
        for k in p:
            gs = g[k] * factor
            gm = gs if clip_main else g[k]
            delta[k] *= b1
            if p[k].size == 1:
                v[k] = b2 * v[k] + (1 - b2) * gm ** 2
                delta[k] += -slr * (1 - b1) * gm / (np.sqrt(v[k] / (1 - b2 ** (t + 1))) + EPS)
                p[k] = np.clip(p[k], -KW["scalar_max"], KW["scalar_max"]) + delta[k]
                continue
            s[k][t % P] = np.sum(p[k] * gs)
            if t % P == P - 1:
                rms[k] = np.sqrt(np.mean(p[k] ** 2))
                if t > 0:
                    vs[k] = b2 ** P * vs[k] + (1 - b2 ** P) * np.mean(s[k] ** 2)
                    corr = np.sqrt(1 - (b2 ** P) ** ((t + 1) // P))
                    step = -slr * corr * np.sum(s[k]) / (np.sqrt(vs[k]) + EPS)
                    if rms[k] < KW["param_min_rms"]:
                        step = 0.0
                    elif rms[k] > KW["param_max_rms"]:
                        step = -slr * P
                    delta[k] += (1 - b1) * p[k] * step
            v[k] = b2 * v[k] + (1 - b2) * gm ** 2
            vh = v[k] / (1 - b2 ** (t + 1)) if 1 - b2 ** (t + 1) < 0.99 else v[k]
            delta[k] += -LR * (1 - b1) * max(rms[k], KW["param_min_rms"]) * gm / (np.sqrt(vh) + EPS)
            p[k] = p[k] + delta[k]
    return p


def _run(params, grads, **kw) -> dict[str, np.ndarray]:
    tensors = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in params.items()}
    opt = ScaledAdam(list(tensors.values()), lr=LR, betas=BETAS, eps=EPS, **KW, **kw)
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


def _problem(steps: int, spike_at: int | None = None):
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=5) * 0.1, "alpha": np.array([0.7])}
    grads = [{k: rng.normal(size=v.shape) * (20.0 if t == spike_at else 1.0) for k, v in params.items()}
             for t in range(steps)]
    return params, grads


def test_first_step_is_the_rms_scaled_sign_of_the_gradient():
    params, grads = _problem(1)
    out = _run(params, grads, clipping_scale=2.0, clipping_update_period=1000)
    g, w = grads[0]["w"], params["w"]
    # v_hat = g^2 on step 0, and delta starts at 0: p - lr (1 - beta1) rms(p) g / (|g| + eps)
    expected = w - LR * (1 - BETAS[0]) * np.sqrt(np.mean(w ** 2)) * g / (np.abs(g) + EPS)
    np.testing.assert_allclose(out["w"], expected, rtol=1e-12, atol=1e-15)
    a, ga = params["alpha"], grads[0]["alpha"]
    np.testing.assert_allclose(out["alpha"], a - LR * KW["scalar_lr_scale"] * (1 - BETAS[0]) * ga / (np.abs(ga) + EPS),
                               rtol=1e-12)


@pytest.mark.parametrize("clip_main", [True, False])
def test_steps_with_size_updates_and_clipping_follow_the_definition(clip_main):
    # 10 steps: size updates at steps 3 and 7; clipping threshold from step 2 on; a spike at step 6 is clipped
    params, grads = _problem(10, spike_at=6)
    out = _run(params, grads, clipping_scale=2.0, clipping_update_period=2, clip_main_update=clip_main)
    expected = _reference(params, grads, clipping_scale=2.0, period=2, clip_main=clip_main)
    for k in params:
        np.testing.assert_allclose(out[k], expected[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_clipping_changes_the_spiked_step():
    params, grads = _problem(10, spike_at=6)
    clipped = _run(params, grads, clipping_scale=2.0, clipping_update_period=2)
    unclipped = _run(params, grads, clipping_scale=None)
    assert not np.allclose(clipped["w"], unclipped["w"])
    np.testing.assert_allclose(unclipped["w"], _reference(params, grads, clipping_scale=None, period=2,
                                                          clip_main=True)["w"], rtol=1e-10)


def test_state_round_trip_continues_exactly():
    params, grads = _problem(7)
    whole = _run(params, grads, clipping_scale=2.0, clipping_update_period=2)
    tensors = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in params.items()}
    opt = ScaledAdam(list(tensors.values()), lr=LR, betas=BETAS, eps=EPS, **KW, clipping_scale=2.0,
                     clipping_update_period=2)
    for g in grads[:3]:
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        opt.step()
    again = ScaledAdam(list(tensors.values()), lr=LR, betas=BETAS, eps=EPS, **KW, clipping_scale=2.0,
                       clipping_update_period=2)
    again.load_state_dict(opt.state_dict())
    for g in grads[3:]:
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        again.step()
    for k in params:
        np.testing.assert_allclose(tensors[k].detach().numpy(), whole[k], rtol=1e-12)


def test_bad_betas_are_refused():
    with pytest.raises(ValueError, match="beta1 <= beta2"):
        ScaledAdam([torch.nn.Parameter(torch.zeros(2))], betas=(0.99, 0.9))
