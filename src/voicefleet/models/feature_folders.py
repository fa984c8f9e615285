"""Random-initialised HuBERT and BERT folders in the transformers layout of the official ones
(`chinese-hubert-base`, `chinese-roberta-wwm-ext-large`), for tests, demos and benchmarks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from voicefleet.models.config import BERT_DIM, SSL_DIM
from voicefleet.models.features import _OFFICIAL_BERT, _OFFICIAL_HUBERT, _OFFICIAL_HUBERT_PREPROCESSOR

logger = logging.getLogger(__name__)


def _gb2312_level1() -> list[str]:
    """The 3755 GB2312 level-1 hanzi, the standard "common characters" set, in GB2312 (pinyin) order."""
    chars = []
    for high in range(0xB0, 0xD8):
        for low in range(0xA1, 0xFF):
            try:
                chars.append(bytes((high, low)).decode("gb2312"))
            except UnicodeDecodeError:  # the last row ends early
                pass
    return chars


_CJK_PUNCTUATION = "，。！？、；：“”‘’（）《》【】「」『』…—～·"


def _bert_vocab(cjk: Sequence[str], size: int | None = None) -> list[str]:
    """A Chinese-BERT style vocab: specials, ASCII punctuation/digits/lowercase, CJK punctuation, `cjk`.

    Uppercase letters are left out because the tokenizer lower-cases first (do_lower_case, as the
    official one). With `size`, ``[unusedN]`` entries fill the vocab up to exactly `size`.
    """
    ascii_part = [c for c in map(chr, range(33, 127)) if not c.isupper()]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *ascii_part, *_CJK_PUNCTUATION, *cjk]
    if len(set(tokens)) != len(tokens):
        raise ValueError("vocab has duplicate tokens")
    if size is not None:
        if len(tokens) > size:
            raise ValueError(f"vocab needs {len(tokens)} entries, more than the requested {size}")
        tokens += [f"[unused{i}]" for i in range(1, size - len(tokens) + 1)]
    return tokens


def _save_half(model: nn.Module, folder: Path) -> None:
    # float16 on disk halves the folder; both loaders read it back as float32 (exactly).
    model.half().save_pretrained(str(folder))


def _write_hubert(folder: str | Path, seed: int, config_values: dict[str, Any]) -> Path:
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = HubertConfig(**config_values)
    config.architectures = ["HubertModel"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HubertModel(config)
    _save_half(model, folder)
    Wav2Vec2FeatureExtractor(**_OFFICIAL_HUBERT_PREPROCESSOR).save_pretrained(str(folder))
    logger.info("wrote a random %d-layer HuBERT to %s", config.num_hidden_layers, folder)
    return folder


def _write_bert(folder: str | Path, seed: int, config_values: dict[str, Any], vocab: list[str]) -> Path:
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = BertConfig(**config_values)
    config.architectures = ["BertForMaskedLM"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    _save_half(model, folder)
    tokenizer = BertTokenizer(
        vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True, tokenize_chinese_chars=True
    )
    tokenizer.save_pretrained(str(folder))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    logger.info("wrote a random %d-layer BERT (vocab %d) to %s", config.num_hidden_layers, len(vocab), folder)
    return folder


def write_tiny_hubert(
    folder: str | Path, seed: int = 0, *, hidden_size: int = SSL_DIM, num_layers: int = 1
) -> Path:
    """Write a random tiny HuBERT folder in the official layout (about 5 MB).

    The conv feature encoder keeps the official kernels and strides (so 16 kHz in -> 50 Hz out,
    16000 samples -> 49 frames) and the output keeps 768 channels (SoVITS' ``ssl_proj`` input);
    everything else is shrunk: conv width 32, one transformer layer, FFN width 64, a 16-tap
    positional conv in 64 groups. Weights are float16 on disk. Returns the folder.
    """
    values = dict(
        _OFFICIAL_HUBERT,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,  # even, like the official 128, so the same-pad trim path runs
        num_conv_pos_embedding_groups=64,
    )
    return _write_hubert(folder, seed, values)


def write_full_hubert(folder: str | Path, seed: int = 0) -> Path:
    """Write a random HuBERT folder at the official chinese-hubert-base size (float16, ~190 MB)."""
    return _write_hubert(folder, seed, dict(_OFFICIAL_HUBERT))


def write_tiny_bert(
    folder: str | Path, seed: int = 0, *, hidden_size: int = BERT_DIM, num_layers: int = 3
) -> Path:
    """Write a random tiny Chinese BERT masked-LM folder in the official layout.

    Hidden size stays 1024 (the GPT's ``bert_proj`` input) with 3 layers, so ``hidden_states[-3]``
    is a real layer's output; FFN width is 64. At hidden 1024 each layer's attention alone is
    4 x 1024^2 weights (8 MiB in float16), which sets the floor on the folder size. The vocab is
    the 3755 GB2312 level-1 characters (the common-use set) plus specials, ASCII and punctuation,
    about 3.9k entries instead of the official 21128; other characters still tokenize one per
    character (as [UNK]), so the character/phone alignment is unaffected. Weights are float16 on
    disk; the folder is about 35 MB. Pass a smaller `hidden_size` where 1024 is not needed.
    """
    vocab = _bert_vocab(_gb2312_level1())
    values = dict(
        _OFFICIAL_BERT,
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=16 if hidden_size % 16 == 0 else 1,
        intermediate_size=64,
    )
    return _write_bert(folder, seed, values, vocab)


def write_full_bert(folder: str | Path, seed: int = 0) -> Path:
    """Write a random BERT folder at the official chinese-roberta-wwm-ext-large size (float16).

    The vocab covers the whole CJK Unified Ideographs block (U+4E00..U+9FFF) and is padded with
    ``[unusedN]`` to the official 21128 entries.
    """
    cjk = [chr(code) for code in range(0x4E00, 0xA000)]
    vocab = _bert_vocab(cjk, size=_OFFICIAL_BERT["vocab_size"])
    return _write_bert(folder, seed, dict(_OFFICIAL_BERT), vocab)
