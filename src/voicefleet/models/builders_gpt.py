"""GPT model builders: one logic-free function per size."""

from __future__ import annotations

from voicefleet.models.config import GPTConfig
from voicefleet.models.gpt import GPT


def gpt_v2() -> GPT:
    """The official GPT v2 (`s1longer-v2.yaml`): 24 layers, hidden 512, 16 heads, 77,606,402 parameters."""
    return GPT(GPTConfig(
        vocab_size=1025,
        phoneme_vocab_size=732,
        embedding_dim=512,
        hidden_dim=512,
        head=16,
        linear_units=2048,
        n_layer=24,
        dropout=0.0,
        EOS=1024,
    ))


def gpt_tiny() -> GPT:
    """The reduced GPT of the compat fixtures: 2 layers, hidden 128, 4 heads."""
    return GPT(GPTConfig(
        vocab_size=1025,
        phoneme_vocab_size=732,
        embedding_dim=128,
        hidden_dim=128,
        head=4,
        linear_units=512,
        n_layer=2,
        dropout=0.0,
        EOS=1024,
    ))
