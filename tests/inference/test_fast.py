"""The reduced-precision CPU path stays close to fp32 and leaves the original models untouched."""

from __future__ import annotations

import pytest
import torch

from tests.inference.kernels import forget_kernels, select_kernels
from voicefleet.models.builders import sovits_tiny
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.inference.fast import (Bf16Decoder, Int8Bf16Linear, fast_generator, optimize_for_cpu_inference,
                                       quantize_gpt)


def test_int8_bf16_linear_matches_fp32_for_few_and_many_rows():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    fast = Int8Bf16Linear.from_fp32(linear)
    for rows in (1, 3, 40):  # int8 kernel for few rows, bf16 for many
        x = torch.randn(rows, 64)
        with torch.no_grad():
            ref = linear(x)
        out = fast(x)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert float((out - ref).norm() / ref.norm()) < 0.02


@pytest.mark.parametrize("bias", [False, True])
def test_packed_bf16_weight_gives_f_linear_bit_for_bit(bias):
    from voicefleet.inference.fast import pack_bf16_weight, packed_linear_available

    if not packed_linear_available():
        pytest.skip("this PyTorch build has no prepacked oneDNN linear")
    torch.manual_seed(0)
    weight = torch.randn(96, 64).to(torch.bfloat16)
    b = torch.randn(96).to(torch.bfloat16) if bias else None
    packed = pack_bf16_weight(weight, b)
    assert packed is not None
    for rows in (1, 5, 12, 33, 200):
        x = torch.randn(rows, 64).to(torch.bfloat16)
        out = packed(x, b)
        assert out.dtype == torch.bfloat16 and torch.equal(out, torch.nn.functional.linear(x, weight, b))
    assert pack_bf16_weight(weight.float()) is None  # only bf16 weights are packed


def test_packing_changes_no_result_of_the_quantized_gpt_or_fast_bert(monkeypatch, tmp_path):
    """Prepacked bf16 weights are a layout change only: the many-row GPT products (prompt pass)
    and BERT features equal those of the plain bf16 `F.linear`, and copies share the packing."""
    import copy

    from voicefleet.inference import fast as fast_module
    from voicefleet.models.feature_folders import write_tiny_bert
    from voicefleet.models.features import BertFeatures

    if not fast_module.packed_linear_available():
        pytest.skip("this PyTorch build has no prepacked oneDNN linear")
    torch.manual_seed(0)
    gpt = gpt_tiny().eval()
    bert = BertFeatures.from_pretrained(write_tiny_bert(tmp_path / "bert", seed=0))
    packed_gpt, packed_bert = quantize_gpt(gpt), fast_module.fast_bert(bert)
    monkeypatch.setattr(fast_module, "packed_linear_available", lambda: False)
    plain_gpt, plain_bert = quantize_gpt(gpt), fast_module.fast_bert(bert)
    assert all(m.packed_bf16 is not None for m in packed_gpt.modules() if isinstance(m, Int8Bf16Linear))
    assert all(m.packed_bf16 is None for m in plain_gpt.modules() if isinstance(m, Int8Bf16Linear))

    x, y, b = torch.randint(0, 732, (1, 20)), torch.randint(0, 1024, (1, 30)), torch.randn(1, 1024, 20)
    with torch.no_grad():
        logits = [m(x, torch.tensor([20]), y, torch.tensor([30]), b).logits
                  for m in (packed_gpt, plain_gpt, copy.deepcopy(packed_gpt))]
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])
    text, word2ph = "今天天气很好", [2, 2, 2, 2, 2, 2]
    assert torch.equal(packed_bert.phone_level_features(text, word2ph), plain_bert.phone_level_features(text, word2ph))


def test_quantized_gpt_logits_stay_close_and_original_is_untouched():
    torch.manual_seed(0)
    gpt = gpt_tiny().eval()
    before = {k: v.clone() for k, v in gpt.state_dict().items()}
    fast = fast_generator(gpt)
    x, y, b = torch.randint(0, 732, (1, 20)), torch.randint(0, 1024, (1, 30)), torch.randn(1, 1024, 20)
    with torch.no_grad():
        ref = gpt(x, torch.tensor([20]), y, torch.tensor([30]), b).logits
        out = fast.gpt(x, torch.tensor([20]), y, torch.tensor([30]), b).logits
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


def test_bf16_decoder_runs_every_convolution_as_the_fp32_generator_does():
    """The channels-last bf16 decoder keeps each convolution's stride, padding and dilation: its
    waveform is the fp32 generator's up to bf16 rounding (about 0.3% here), for batches too."""
    torch.manual_seed(0)
    generator = sovits_tiny().eval().prepare_for_inference().decoder
    fast = Bf16Decoder.from_fp32(generator)
    x = torch.randn(2, generator.conv_pre.in_channels, 23)
    g = torch.randn(2, generator.cond.in_channels, 1)
    with torch.no_grad():
        ref, out = generator(x, g), fast(x, g)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert float((out - ref).norm() / ref.norm()) < 0.01
    for row in range(2):  # rows of a batch do not mix (a batch may round differently)
        with torch.no_grad():
            alone = fast(x[row:row + 1], g[row:row + 1])
        assert float((alone - out[row:row + 1]).abs().max()) < 0.01


def test_bf16_decoder_length_buckets_only_round_differently(monkeypatch):
    """Padding the input to a bucket of frames (so that lengths share convolution kernels) and
    zeroing every layer's output past the true length gives the unpadded waveform, up to bf16
    rounding: the extra frames never leak into the audio."""
    from voicefleet.inference import fast as fast_module

    torch.manual_seed(0)
    generator = sovits_tiny().eval().prepare_for_inference().decoder
    fast = fast_module.Bf16Decoder.from_fp32(generator)
    x = torch.randn(1, generator.conv_pre.in_channels, 21)
    g = torch.randn(1, generator.cond.in_channels, 1)
    outs = {}
    for bucket in (1, 4, 16):
        monkeypatch.setattr(fast_module, "FRAME_BUCKET", bucket)
        with torch.no_grad():
            outs[bucket] = fast(x, g)
    with torch.no_grad():
        ref = generator(x, g)
    assert all(out.shape == ref.shape for out in outs.values())
    for bucket in (4, 16):
        assert float((outs[bucket] - outs[1]).abs().max()) < 0.01
        assert float((outs[bucket] - ref).norm() / ref.norm()) < 0.01
    monkeypatch.setattr(fast_module, "FRAME_BUCKET", 16)
    with torch.no_grad():  # a whole bucket of padding is what a fragment of 5 frames gets
        assert fast(x[..., :5], g).shape == generator(x[..., :5], g).shape


@pytest.mark.parametrize("eos_weight", [-5.0, 1.5])
@pytest.mark.parametrize("use_native", [True, False], ids=["native", "eager"])
def test_int8_decoding_step_matches_the_layer_step(eos_weight, use_native, monkeypatch):
    """The quantised GPT's lean decoding step (native, or eager PyTorch without the native
    library) computes what its own layers compute, on a padded batch: run past one cache block
    (the stacked cache grows), and with rows leaving the batch at different steps."""
    from voicefleet.inference.fast import Int8DecodingStep
    from voicefleet.inference.generation import CACHE_BLOCK, LayerDecodingStep, TokenGenerator

    select_kernels(use_native, monkeypatch)
    torch.manual_seed(0)
    gpt = gpt_tiny().eval()
    with torch.no_grad():  # hidden[0] == 1, so the EOS logit is eos_weight: never chosen or now and then
        gpt.layers[-1].norm2.weight[0] = 0.0
        gpt.layers[-1].norm2.bias[0] = 1.0
        gpt.head.weight[gpt.eos].zero_()
        gpt.head.weight[gpt.eos, 0] = eos_weight
    fast = quantize_gpt(gpt)
    texts = [torch.randint(0, 732, (n,)) for n in (14, 9, 5)]
    berts = [torch.randn(1024, t.numel()) for t in texts]
    prompts = torch.randint(0, 1024, (3, 12))
    steps = CACHE_BLOCK + 20

    def run(step_cls):
        return TokenGenerator(fast, step=step_cls).generate_batch(
            texts, berts, prompts, max_steps=steps, return_step_logits=True,
            generator=[torch.Generator().manual_seed(i) for i in range(3)])

    lean, layered = run(Int8DecodingStep), run(LayerDecodingStep)
    forget_kernels()
    if eos_weight < 0:
        assert lean.stop_reasons == ["max_steps"] * 3
    else:
        assert lean.stop_reasons == ["eos"] * 3 and len(set(lean.idx)) == 3
    assert lean.idx == layered.idx and lean.stop_reasons == layered.stop_reasons
    assert all(torch.equal(a, b) for a, b in zip(lean.sequences, layered.sequences))
    finite = torch.isfinite(layered.step_logits)
    assert torch.equal(finite, torch.isfinite(lean.step_logits))
    assert torch.allclose(lean.step_logits[finite], layered.step_logits[finite], atol=1e-4, rtol=1e-4)


def _snapshot(model: torch.nn.Module):
    """Every submodule's class and a copy of every parameter and buffer."""
    return ({name: type(m) for name, m in model.named_modules()},
            {k: v.detach().clone() for k, v in model.state_dict().items()})


def _same(snapshot, model: torch.nn.Module) -> bool:
    classes, state = _snapshot(model)
    return classes == snapshot[0] and state.keys() == snapshot[1].keys() and all(
        v.dtype == snapshot[1][k].dtype and torch.equal(v, snapshot[1][k]) for k, v in state.items())


def test_building_the_fast_path_leaves_the_fp32_models_as_they_were():
    """The builders take fp32 modules and return new ones: the fp32 models keep their classes,
    parameters, buffers and outputs (bit for bit), share no storage with the fast ones, and stay
    usable after the fast ones have run."""
    from voicefleet.inference.generation import TokenGenerator
    from voicefleet.models.gpt import GPT
    from voicefleet.models.sovits import SoVITS

    torch.manual_seed(0)
    gpt, sovits = gpt_tiny().eval(), sovits_tiny().eval()
    torch.nn.init.normal_(sovits.quantizer.codebook.embed)
    x, y, b = torch.randint(0, 732, (1, 20)), torch.randint(0, 1024, (1, 30)), torch.randn(1, 1024, 20)
    codes, text, ref_spec = torch.randint(0, 1024, (1, 1, 20)), torch.randint(0, 732, (1, 10)), torch.rand(1, 1025, 30)

    def run_fp32():
        with torch.no_grad():
            logits = gpt(x, torch.tensor([20]), y, torch.tensor([30]), b).logits
            wave = sovits.decode(codes, text, ref_spec, noise_scale=0.0)
        tokens = TokenGenerator(gpt).generate(x[0], b[0], y[0, :10], max_steps=12,
                                              generator=torch.Generator().manual_seed(0)).sequences[0]
        return logits, wave, tokens

    before = _snapshot(gpt), _snapshot(sovits)
    outputs = run_fp32()
    generator, fast_sovits = optimize_for_cpu_inference(gpt, sovits)
    rng = torch.get_rng_state()
    decoder = Bf16Decoder.from_fp32(sovits.decoder)  # straight from the weight-normed generator too
    assert torch.equal(torch.get_rng_state(), rng)  # no module of it is randomly initialised
    generator.generate(x[0], b[0], y[0, :10], max_steps=12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast_sovits.decode(codes, text, ref_spec, noise_scale=0.0)
        decoder(torch.randn(1, sovits.decoder.conv_pre.in_channels, 9),
                torch.randn(1, sovits.decoder.cond.in_channels, 1))

    assert type(gpt) is GPT and type(sovits) is SoVITS
    assert _same(before[0], gpt) and _same(before[1], sovits)
    assert all(torch.equal(a, b) for a, b in zip(run_fp32(), outputs))
    fp32_storage = {t.untyped_storage().data_ptr() for m in (gpt, sovits) for t in m.state_dict().values()}
    fast_storage = {t.untyped_storage().data_ptr() for m in (generator.gpt, fast_sovits)
                    for t in m.state_dict().values()}
    assert not fp32_storage & fast_storage
    assert any(isinstance(m, Int8Bf16Linear) for m in generator.gpt.modules())
    assert not any(isinstance(m, Int8Bf16Linear) for m in gpt.modules())


def test_no_module_changes_its_class_in_place():
    """Fast modules are built, never made by assigning `__class__` on a live object."""
    import ast
    from pathlib import Path

    import voicefleet

    def assigns_class(node: ast.AST) -> bool:
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            return any(isinstance(t, ast.Attribute) and t.attr == "__class__"
                       for target in targets for t in ast.walk(target))
        if isinstance(node, ast.Call) and len(node.args) >= 2:  # setattr(x, "__class__", ...) and friends
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            arg = node.args[1]
            return name in ("setattr", "__setattr__") and isinstance(arg, ast.Constant) and arg.value == "__class__"
        return False

    root = Path(voicefleet.__file__).parent
    offenders = [f"{path.relative_to(root)}:{node.lineno}" for path in sorted(root.rglob("*.py"))
                 for node in ast.walk(ast.parse(path.read_text())) if assigns_class(node)]
    assert not offenders, f"__class__ assigned at {offenders}"
    assert assigns_class(ast.parse("fast.__class__ = Other").body[0])  # the check sees what it looks for
    assert assigns_class(ast.parse("setattr(fast, '__class__', Other)").body[0].value)
