"""The reduced-precision CPU path stays close to fp32 and leaves the original models untouched."""

from __future__ import annotations

import torch

from voicefleet.models.builders import sovits_tiny
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.models.fast import Int8Bf16Linear, optimize_for_cpu_inference, quantize_gpt


def test_int8_bf16_linear_matches_fp32_for_few_and_many_rows():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    fast = Int8Bf16Linear(linear)
    for rows in (1, 3, 40):  # int8 kernel for few rows, bf16 for many
        x = torch.randn(rows, 64)
        with torch.no_grad():
            ref = linear(x)
        out = fast(x)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert float((out - ref).norm() / ref.norm()) < 0.02


def test_quantized_gpt_logits_stay_close_and_original_is_untouched():
    torch.manual_seed(0)
    gpt = gpt_tiny().eval()
    before = {k: v.clone() for k, v in gpt.state_dict().items()}
    fast = quantize_gpt(gpt)
    x, y, b = torch.randint(0, 732, (1, 20)), torch.randint(0, 1024, (1, 30)), torch.randn(1, 1024, 20)
    with torch.no_grad():
        ref = gpt(x, torch.tensor([20]), y, torch.tensor([30]), b).logits
        out = fast(x, torch.tensor([20]), y, torch.tensor([30]), b).logits
    assert float((out - ref).norm() / ref.norm()) < 0.03
    assert float((out.argmax(-1) == ref.argmax(-1)).float().mean()) > 0.9
    assert all(torch.equal(before[k], v) for k, v in gpt.state_dict().items())
    gen = fast.generate(x[0], b[0], y[0, :10], max_steps=12, generator=torch.Generator().manual_seed(0))
    assert gen.new_tokens(0).numel() > 0


def test_bf16_decoder_waveform_close_to_fp32():
    torch.manual_seed(0)
    sovits = sovits_tiny().eval()
    torch.nn.init.normal_(sovits.quantizer.codebook.embed)
    gpt = gpt_tiny().eval()
    _, fast = optimize_for_cpu_inference(gpt, sovits)
    assert any("parametrizations" in k for k in sovits.state_dict()), "the input model must stay unfolded"
    codes, text = torch.randint(0, 1024, (1, 1, 20)), torch.randint(0, 732, (1, 10))
    ref_spec = torch.rand(1, 1025, 30)
    ref = sovits.decode(codes, text, ref_spec, noise_scale=0.0)
    out = fast.decode(codes, text, ref_spec, noise_scale=0.0)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert float((out - ref).norm() / ref.norm()) < 0.05
