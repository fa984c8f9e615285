"""Decoding with the GPT v2 on the tiny config: KV cache, batching, sampling, stop rules, streaming."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import assert_close
from tests.models.test_gpt import _inputs
from voicefleet.inference.generation import (GREEDY, SamplingParams, TokenGenerator, relayout_for_cpu_decoding_,
                                              sample_next)
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.models.gpt import GPT

TEXT_LEN, PROMPT_LEN = 12, 6


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return gpt_tiny().eval()


@pytest.fixture
def decoder(model) -> TokenGenerator:
    """Decoding with `model` (which tests may still change: the generator holds no copy)."""
    return TokenGenerator(model)


def test_kv_cache_decoding_matches_full_recomputation(model, decoder):
    phonemes, bert, semantic = _inputs(model)
    prompt = semantic[:, :PROMPT_LEN]
    out = decoder.generate(phonemes, bert, prompt, sampling=GREEDY, early_stop_num=14, return_step_logits=True)
    sequence = out.sequences[0]
    steps = out.step_logits.shape[0]
    assert sequence.shape[0] == PROMPT_LEN + steps
    with torch.no_grad():
        full = model(phonemes, torch.tensor([TEXT_LEN]), sequence[None], torch.tensor([sequence.shape[0]]), bert).logits
    # step s predicts the token at sequence position PROMPT_LEN + s
    assert_close(out.step_logits[:, 0], full[0, PROMPT_LEN:PROMPT_LEN + steps], atol=1e-4, rtol=1e-4, name="steps")


def test_batched_decoding_matches_single_rows(model, decoder):
    """Left padding is masked: each row decodes as it would alone (greedy, no EOS allowed early)."""
    rows = [_inputs(model, text_len=n, seed=s) for n, s in ((TEXT_LEN, 3), (7, 4))]
    prompts = torch.cat([r[2][:, :PROMPT_LEN] for r in rows])
    batch = decoder.generate_batch([r[0][0] for r in rows], [r[1][0] for r in rows], prompts, sampling=GREEDY,
                                   early_stop_num=8, return_step_logits=True)
    for i, (phonemes, bert, _) in enumerate(rows):
        single = decoder.generate(phonemes, bert, prompts[i:i + 1], sampling=GREEDY, early_stop_num=8,
                                  return_step_logits=True)
        steps = batch.step_logits.shape[0]
        assert_close(batch.step_logits[:, i], single.step_logits[:steps, 0], atol=1e-4, rtol=1e-4, name=f"row {i}")
        # the batched path drops the last token on early stop, the single path keeps it
        assert torch.equal(batch.sequences[i], single.sequences[0][:-1])


def test_generator_seeded_sampling_is_reproducible_and_isolated(model, decoder):
    phonemes, bert, semantic = _inputs(model)
    prompt = semantic[:, :PROMPT_LEN]
    params = SamplingParams(top_k=50, top_p=0.9, temperature=1.3, repetition_penalty=1.35)

    def run(seed):
        return decoder.generate(phonemes, bert, prompt, sampling=params, early_stop_num=30,
                                generator=torch.Generator().manual_seed(seed)).sequences[0]

    global_state = torch.get_rng_state()
    first = run(7)
    assert torch.equal(torch.get_rng_state(), global_state), "a private generator must not touch the global RNG"
    torch.rand(100)  # disturbing the global stream changes nothing
    assert torch.equal(run(7), first)
    assert not torch.equal(run(8), first)


def test_per_row_generators_make_rows_independent(model, decoder):
    rows = [_inputs(model, seed=s) for s in (5, 6)]
    prompts = torch.cat([r[2][:, :PROMPT_LEN] for r in rows])
    params = SamplingParams(top_k=100, temperature=1.5)

    def run(seed_b):
        gens = [torch.Generator().manual_seed(11), torch.Generator().manual_seed(seed_b)]
        # stopping before step 11 keeps both rows in the batch the whole time (EOS is not allowed yet)
        return decoder.generate_batch([r[0][0] for r in rows], [r[1][0] for r in rows], prompts, sampling=params,
                                      early_stop_num=9, generator=gens).sequences

    a, b = run(12), run(13)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[1], b[1])


def test_single_decoding_stop_rules(model, decoder):
    phonemes, bert, semantic = _inputs(model)
    prompt = semantic[:, :PROMPT_LEN]
    out = decoder.generate(phonemes, bert, prompt, sampling=GREEDY, max_steps=5)
    assert out.stop_reasons == ["max_steps"] and out.idx == [4]
    assert out.new_tokens().shape == (5,)
    out = decoder.generate(phonemes, bert, prompt, sampling=GREEDY, early_stop_num=3)
    assert out.stop_reasons == ["early_stop"] and out.idx == [3] and out.new_tokens().shape == (4,)
    batch = decoder.generate_batch([phonemes[0]], [bert[0]], prompt, sampling=GREEDY, early_stop_num=3)
    assert batch.idx == [3] and batch.new_tokens().shape == (3,)  # official y[:-1] on early stop


def test_eos_stops_and_is_dropped(model, decoder):
    """Make EOS the best logit everywhere: it cannot win before step 11, then stops the row."""
    phonemes, bert, semantic = _inputs(model)
    with torch.no_grad():  # constant final hidden state of ones, and an EOS row that scores it highest
        model.layers[-1].norm2.weight.zero_()
        model.layers[-1].norm2.bias.fill_(1.0)
        model.head.weight[model.eos] = 1.0
    out = decoder.generate(phonemes, bert, semantic[:, :PROMPT_LEN], sampling=GREEDY, return_step_logits=True)
    assert out.stop_reasons == ["eos"] and out.idx == [11]
    assert out.new_tokens().shape == (11,) and (out.new_tokens() != model.eos).all()


def test_prompt_free_decoding(model, decoder):
    phonemes, bert, _ = _inputs(model)
    out = decoder.generate(phonemes, bert, None, sampling=GREEDY, early_stop_num=4)
    assert out.prompt_len == 0 and out.sequences[0].shape == (5,) and out.idx == [0]


def test_sample_next_rules():
    logits = torch.tensor([[2.0, -1.0, 1.5, 0.5]])
    history = torch.tensor([[0, 1, 0]])
    params = SamplingParams(top_k=1, repetition_penalty=2.0)
    token, penalised_argmax = sample_next(logits, history, params)
    # 2.0 / 2 = 1.0 and -1.0 * 2 = -2.0: token 2 (1.5) now leads
    assert token.tolist() == [2] and penalised_argmax.tolist() == [2]
    assert logits.tolist() == [[2.0, -1.0, 1.5, 0.5]], "the caller's logits must not change"
    # top-p keeps the smallest prefix whose mass does not exceed p, and always the best token
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, history[:, :0], SamplingParams(top_k=None, top_p=0.01, repetition_penalty=1.0),
                         g)[0].item() for _ in range(50)}
    assert draws == {0}
    draws = {sample_next(logits, history[:, :0], SamplingParams(top_k=2, repetition_penalty=1.0), g)[0].item()
             for _ in range(200)}
    assert draws == {0, 2}


def test_sampling_params_are_checked():
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(top_k=0)


def test_cpu_decoding_relayout_changes_nothing_observable(model, decoder):
    phonemes, bert, semantic = _inputs(model)
    prompt = semantic[:, :PROMPT_LEN]
    before = decoder.generate(phonemes, bert, prompt, sampling=GREEDY, early_stop_num=12, return_step_logits=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert relayout_for_cpu_decoding_(model) is model
    assert not model.layers[0].attn.qkv.weight.is_contiguous()
    after = decoder.generate(phonemes, bert, prompt, sampling=GREEDY, early_stop_num=12, return_step_logits=True)
    assert torch.equal(before.sequences[0], after.sequences[0])
    assert_close(after.step_logits, before.step_logits, atol=1e-5, rtol=1e-5, name="step logits")
    for key, value in model.state_dict().items():
        assert value.shape == state[key].shape and torch.equal(value, state[key]), key


@pytest.mark.parametrize("eos_at_once", [False, True])
def test_generate_stream_yields_the_kept_tokens_step_by_step(model, decoder, eos_at_once):
    phonemes, bert, semantic = _inputs(model)
    if eos_at_once:  # as in test_eos_stops_and_is_dropped: EOS wins at step 11
        with torch.no_grad():
            model.layers[-1].norm2.weight.zero_()
            model.layers[-1].norm2.bias.fill_(1.0)
            model.head.weight[model.eos] = 1.0
    kwargs = dict(sampling=SamplingParams(top_k=5), max_steps=30)
    whole = decoder.generate(phonemes, bert, semantic[:, :PROMPT_LEN], generator=torch.Generator().manual_seed(3),
                             **kwargs)
    steps = decoder.generate_stream(phonemes, bert, semantic[:, :PROMPT_LEN],
                                    generator=torch.Generator().manual_seed(3), **kwargs)
    seen = []
    while True:
        try:
            seen.append(next(steps).clone())
        except StopIteration as done:
            out = done.value
            break
    assert out.idx == whole.idx and out.stop_reasons == whole.stop_reasons
    assert torch.equal(out.new_tokens(0), whole.new_tokens(0))
    final = whole.new_tokens(0)
    assert [s.numel() for s in seen] == list(range(1, len(seen) + 1))
    assert all(torch.equal(s, final[:s.numel()]) for s in seen)
    assert len(seen) == (final.numel() if eos_at_once else final.numel() - 1)  # the last step ends the loop


def test_the_network_does_not_depend_on_decoding():
    """models/ (networks, configs, checkpoint I/O) imports nothing from voicefleet.inference: the
    decoding loop and its cache are built on top of the network, not inside it."""
    import ast
    from pathlib import Path

    import voicefleet

    root = Path(voicefleet.__file__).parent
    offenders = []
    for path in sorted((root / "models").rglob("*.py")):
        package = ["voicefleet", *path.relative_to(root).parent.parts]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                names = [".".join(base + ([node.module] if node.module else []))]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.startswith("voicefleet.inference")]
    assert not offenders, offenders
