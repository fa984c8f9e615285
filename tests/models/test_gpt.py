"""GPT v2 network on the tiny config: shapes, targets, masking, gradients, config checks (decoding:
tests/inference/test_generation.py)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import assert_close
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.models.config import ConfigError, GPTConfig
from voicefleet.models.gpt import GPT

TEXT_LEN, PROMPT_LEN = 12, 6


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return gpt_tiny().eval()


def _inputs(model: GPT, batch: int = 1, text_len: int = TEXT_LEN, audio_len: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    phonemes = torch.randint(0, cfg.phoneme_vocab_size, (batch, text_len), generator=g)
    bert = torch.randn(batch, cfg.bert_dim, text_len, generator=g)
    semantic = torch.randint(0, cfg.EOS, (batch, audio_len), generator=g)
    return phonemes, bert, semantic


def test_forward_shapes_and_targets(model):
    phonemes, bert, semantic = _inputs(model, batch=2)
    semantic_lens = torch.tensor([9, 5])
    out = model(phonemes, torch.tensor([TEXT_LEN, 8]), semantic, semantic_lens, bert)
    assert out.logits.shape == (2, 10, model.config.vocab_size)
    assert out.targets.shape == (2, 10)
    assert torch.equal(out.targets[0, :9], semantic[0]) and out.targets[0, 9] == model.eos
    assert torch.equal(out.targets[1, :5], semantic[1, :5]) and (out.targets[1, 5:] == model.eos).all()
    assert out.loss.ndim == 0 and out.loss > 0
    assert 0 <= out.top1_acc <= out.top3_acc <= 1


def test_training_forward_backpropagates_to_every_parameter(model):
    phonemes, bert, semantic = _inputs(model)
    model.train()
    out = model(phonemes, torch.tensor([TEXT_LEN]), semantic, torch.tensor([9]), bert)
    out.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_later_audio_token_never_changes_earlier_logits(model):
    phonemes, bert, semantic = _inputs(model)
    lens = (torch.tensor([TEXT_LEN]), torch.tensor([semantic.shape[1]]))
    with torch.no_grad():
        base = model(phonemes, lens[0], semantic, lens[1], bert).logits
        for j in (0, 4, semantic.shape[1] - 1):
            changed = semantic.clone()
            changed[0, j] = (changed[0, j] + 1) % model.eos
            logits = model(phonemes, lens[0], changed, lens[1], bert).logits
            # logits[:, k] reads audio inputs before k: inputs from j on change logits[:, j + 1:] only
            assert_close(logits[:, : j + 1], base[:, : j + 1], atol=1e-6, rtol=0, name=f"token {j}")
            assert not torch.allclose(logits[:, j + 1:], base[:, j + 1:])


def test_pad_mask_quirk_flag(model):
    phonemes, bert, semantic = _inputs(model, batch=2)
    with torch.no_grad():
        ragged = (phonemes, torch.tensor([TEXT_LEN, 7]), semantic, torch.tensor([9, 6]), bert)
        quirk = model(*ragged).loss
        correct = model(*ragged, official_pad_mask_quirk=False).loss
        assert not torch.isclose(quirk, correct)
        # without text padding both masks are the same
        full = (phonemes, torch.tensor([TEXT_LEN, TEXT_LEN]), semantic, torch.tensor([9, 6]), bert)
        assert torch.equal(model(*full).loss, model(*full, official_pad_mask_quirk=False).loss)


def test_correct_pad_mask_ignores_text_padding(model):
    """With the correct mask, audio positions do not depend on what a row's text padding holds.

    (logits[:, 0] is read at the last text slot, max(text_len) - 1, which for a shorter row is a
    padding slot in the official layout, so only the audio positions are compared.)"""
    phonemes, bert, semantic = _inputs(model, batch=2)
    lens = (torch.tensor([TEXT_LEN, 7]), torch.tensor([9, 9]))
    other = phonemes.clone()
    other[1, 7:] = (other[1, 7:] + 3) % model.config.phoneme_vocab_size
    with torch.no_grad():
        a = model(phonemes, lens[0], semantic, lens[1], bert, official_pad_mask_quirk=False).logits[1, 1:]
        b = model(other, lens[0], semantic, lens[1], bert, official_pad_mask_quirk=False).logits[1, 1:]
    assert_close(a, b, atol=1e-5, rtol=1e-5, name="row 1 logits")


def test_config_errors():
    with pytest.raises(ConfigError, match="EOS"):
        GPT(GPTConfig(embedding_dim=16, hidden_dim=16, head=2, n_layer=1, EOS=5))
    with pytest.raises(ConfigError, match="embedding_dim"):
        GPT(GPTConfig(embedding_dim=32, hidden_dim=16, head=2, n_layer=1))
