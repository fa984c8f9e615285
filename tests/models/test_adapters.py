"""LoRA adapters: the unmerged forward equals the merged weights for both stages, per-row adapters
equal one adapter per row, the file format round-trips and stays small, a different base is refused."""

from __future__ import annotations

import threading

import pytest
import torch

from voicefleet.models import adapters as lora
from voicefleet.models.builders import sovits_tiny, sovits_tiny_config, sovits_v2
from voicefleet.models.builders_gpt import gpt_tiny, gpt_v2


def _randomise(adapter: lora.Adapter, seed: int) -> lora.Adapter:
    """A fresh adapter is the identity (B = 0); give B values so that it changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in adapter.items():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.05)
    return adapter


def _gpt():
    torch.manual_seed(0)
    return gpt_tiny().eval()


def _sovits():
    torch.manual_seed(0)
    m = sovits_tiny().eval()
    torch.nn.init.normal_(m.quantizer.codebook.embed)
    m.quantizer.codebook.inited.fill_(1)
    for layer in m.flow.flows:  # a fresh flow is the identity; perturb it so the test sees it
        torch.nn.init.normal_(layer.post.weight, std=0.05)
    return m


def _gpt_logits(model, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    phonemes = torch.randint(0, cfg.phoneme_vocab_size, (batch, 10), generator=g)
    bert = torch.randn(batch, cfg.bert_dim, 10, generator=g)
    semantic = torch.randint(0, cfg.EOS, (batch, 7), generator=g)
    with torch.no_grad():
        return model(phonemes, torch.full((batch,), 10), semantic, torch.full((batch,), 7), bert).logits


def _sovits_wave(model, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1024, (1, batch, 12), generator=g)
    text = torch.randint(0, 732, (batch, 8), generator=g)
    ref = torch.rand(1, sovits_tiny_config().audio.spec_channels, 20, generator=g)
    noise = torch.randn(batch, model.config.inter_channels, 24, generator=g)
    return model.decode(codes, text, ref, noise=noise)


def _copy(model, build):
    # a fresh instance, not copy.deepcopy: deep copies of parametrized modules share their class
    other = build()
    other.load_state_dict(model.state_dict())
    return other.eval()


def test_fresh_adapter_is_the_identity_and_hooks_are_inert_without_one():
    model = _gpt()
    before = _gpt_logits(model)
    adapter = lora.Adapter.create(model, lora.AdapterSpec("gpt"))
    lora.attach(model, adapter)
    assert torch.equal(_gpt_logits(model), before)  # hooks, nothing active
    with lora.use_adapter(adapter):
        assert torch.equal(_gpt_logits(model), before)  # B = 0


def test_gpt_adapter_output_equals_merged_weights():
    model = _gpt()
    base = _gpt_logits(model)
    adapter = _randomise(lora.Adapter.create(model, lora.AdapterSpec("gpt", rank=4, alpha=8)), 1)
    lora.attach(model, adapter)
    with lora.use_adapter(adapter):
        adapted = _gpt_logits(model)
    merged = lora.merge_(_copy(model, gpt_tiny), adapter)
    assert not torch.allclose(adapted, base, atol=1e-3)  # the adapter does something
    torch.testing.assert_close(_gpt_logits(merged), adapted, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_gpt_logits(model), base)  # the backbone itself is untouched


@pytest.mark.parametrize("targets", [("text_encoder",), ("flow",), ("decoder",), ("text_encoder", "flow", "decoder")])
def test_sovits_adapter_output_equals_merged_weights(targets):
    model = _sovits()
    base = _sovits_wave(model)
    adapter = _randomise(lora.Adapter.create(model, lora.AdapterSpec("sovits", rank=4, targets=targets)), 2)
    lora.attach(model, adapter)
    with lora.use_adapter(adapter):
        adapted = _sovits_wave(model)
    assert (adapted - base).abs().max() > 1e-4
    # weight-normed layers merge through their parametrization (new g and v) ...
    merged = lora.merge_(_copy(model, sovits_tiny), adapter)
    assert any("parametrizations" in k for k in merged.state_dict())
    torch.testing.assert_close(_sovits_wave(merged), adapted, atol=1e-5, rtol=1e-4)
    # ... and into a folded (inference) model's plain weights
    folded = lora.merge_(_copy(model, sovits_tiny).prepare_for_inference(), adapter)
    torch.testing.assert_close(_sovits_wave(folded), adapted, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(_sovits_wave(model), base)


def test_per_row_adapters_equal_one_adapter_per_row():
    model = _gpt()
    first = _randomise(lora.Adapter.create(model, lora.AdapterSpec("gpt")), 3)
    second = _randomise(lora.Adapter.create(model, lora.AdapterSpec("gpt", targets=("attn",))), 4)
    lora.attach(model, lora.AdapterSpec("gpt"))
    rows = [first, None, second]
    with lora.use_adapter(rows):
        mixed = _gpt_logits(model, batch=3)
    for i, adapter in enumerate(rows):
        with lora.use_adapter(adapter):
            alone = _gpt_logits(model, batch=3)
        torch.testing.assert_close(mixed[i], alone[i], atol=1e-5, rtol=1e-5)


def test_adapters_in_concurrent_threads_do_not_bleed():
    model = _gpt()
    voices = [_randomise(lora.Adapter.create(model, lora.AdapterSpec("gpt")), s) for s in range(4)]
    lora.attach(model, lora.AdapterSpec("gpt"))
    expected = []
    for adapter in voices:
        with lora.use_adapter(adapter):
            expected.append(_gpt_logits(model))
    got: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(voices))}

    def work(i):
        for _ in range(5):
            with lora.use_adapter(voices[i]):
                got[i].append(_gpt_logits(model))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(voices))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, outs in got.items():
        for out in outs:
            torch.testing.assert_close(out, expected[i], atol=0, rtol=0)


def test_file_round_trip_and_base_check(tmp_path):
    model = _sovits()
    adapter = _randomise(lora.Adapter.create(model, lora.AdapterSpec("sovits", rank=4, alpha=6.0)), 5)
    path = lora.save_adapter(adapter, tmp_path / "alice.sovits.lora.safetensors")
    assert lora.is_adapter_file(path) and not lora.is_adapter_file(tmp_path)
    loaded = lora.load_adapter(path)
    assert loaded.spec == adapter.spec and loaded.base_fingerprint == adapter.base_fingerprint
    rebuilt = loaded.build(model)
    assert rebuilt.names and set(rebuilt.names) == set(adapter.names)
    for name, layer in adapter.items():  # stored in float16, as the official voice files
        torch.testing.assert_close(rebuilt.layer(name).lora_B, layer.lora_B.half().float())
    # the fingerprint ignores the posterior encoder and weight norm's g/v split
    assert lora.base_fingerprint_of(_copy(model, sovits_tiny).prepare_for_inference(), "sovits") \
        == adapter.base_fingerprint
    other = _sovits()
    with torch.no_grad():
        other.text_encoder.proj.weight.add_(1e-3)
    with pytest.raises(lora.AdapterError, match="different sovits base"):
        loaded.build(other)
    with pytest.raises(lora.AdapterError, match="no sovits layers|lacks|sovits model"):
        loaded.build(_gpt(), fingerprint=loaded.base_fingerprint)


def test_bad_specs_and_files_are_refused(tmp_path):
    with pytest.raises(lora.AdapterError, match="unknown gpt adapter target"):
        lora.AdapterSpec("gpt", targets=("flow",))
    with pytest.raises(lora.AdapterError, match="rank"):
        lora.AdapterSpec("gpt", rank=0)
    (tmp_path / "x.safetensors").write_bytes(b"not a file")
    with pytest.raises(lora.AdapterError, match="not a readable adapter"):
        lora.load_adapter(tmp_path / "x.safetensors")


def test_default_adapter_is_under_5_percent_of_a_full_voice():
    """At full v2 size (built on the meta device: shapes only), both stages' adapter tensors at the
    default rank are a small share of the voice's weights, in the same float16 the files hold."""
    with torch.device("meta"):
        gpt, sovits = gpt_v2(), sovits_v2()
        adapters = [lora.Adapter(lora.AdapterSpec(stage), {n: lora.LoRALayer(m, lora.DEFAULT_RANK, 1.0)
                                                          for n, m in lora.target_layers(model, lora.AdapterSpec(stage)).items()},
                                 "sha256:meta")
                    for stage, model in (("gpt", gpt), ("sovits", sovits))]
    voice = sum(p.numel() for p in gpt.parameters()) + sum(
        p.numel() for n, p in sovits.named_parameters() if not n.startswith("posterior_encoder."))
    adapter = sum(p.numel() for a in adapters for p in a.parameters())
    assert adapter / voice < 0.05, f"{adapter} adapter parameters vs {voice} in the voice"
