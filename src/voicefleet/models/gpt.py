"""GPT v2: the text -> semantic-token model of GPT-SoVITS v2 (official `Text2SemanticDecoder`).

A decoder-only transformer reads one sequence `[text ; audio]`:

* text positions hold phoneme embeddings plus projected BERT features, with a scaled sinusoid;
  they attend bidirectionally to text only;
* audio positions hold semantic-token embeddings (1024 HuBERT codes + EOS), with their own
  sinusoid restarting at 0; they attend to all text and causally to audio;
* a bias-free head predicts the next semantic token from every audio position (and from the last
  text position, which predicts the first token).

Layers are post-norm (`x = norm(x + sublayer(x))`) with a packed q/k/v projection and a ReLU FFN
of width 4 * hidden, as the official weights require.

This file holds the network and its teacher-forced training pass only. Decoding (sampling, the
key/value cache, the decoding loop) lives in `voicefleet.inference.generation`; attention takes
any cache object with an `append` method (`KVCache`), so that the network does not depend on it.

Official checkpoint names are mapped to the readable names used here only in
`voicefleet.models.checkpoint.gpt_io`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voicefleet.models.config import ConfigError, GPTConfig

# Hard-coded in the official model (not part of its config): dropout inside every layer
# (attention weights, attention output, FFN hidden and output) and after both positional encodings.
LAYER_DROPOUT = 0.1
POSITION_DROPOUT = 0.1
LAYER_NORM_EPS = 1e-5
_INITIAL_POSITIONS = 4000  # the sinusoid table grows on demand beyond this


# --------------------------------------------------------------------------- outputs


@dataclass
class GPTTrainOutput:
    """Teacher-forced forward pass.

    Attributes:
        logits: (batch, audio_frames + 1, vocab) head outputs from the last text position onward.
        targets: (batch, audio_frames + 1) the semantic tokens followed by EOS; padded frames are EOS.
        loss: 0-d cross-entropy summed over every position, padded ones included (official).
        top1_acc: 0-d fraction of non-EOS targets that are the arg-max.
        top3_acc: 0-d fraction of non-EOS targets within the top 3 (the official training metric).
    """

    logits: Tensor
    targets: Tensor
    loss: Tensor
    top1_acc: Tensor
    top3_acc: Tensor


# --------------------------------------------------------------------------- building blocks


def sinusoid_table(length: int, dim: int) -> Tensor:
    """(length, dim) interleaved sin/cos table (even channels sin, odd cos), computed in float32."""
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    angles = torch.arange(length, dtype=torch.float32).unsqueeze(1) * inv_freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)


class ScaledPositionalEncoding(nn.Module):
    """`x * x_scale + alpha * sinusoid[position]`, then dropout.

    `alpha` is a learned scalar (it is in the state dict); the sinusoid table is not. The official
    model never scales the input (`x_scale` = 1), so `scale_input` defaults to False.
    """

    def __init__(self, dim: int, dropout: float = POSITION_DROPOUT, scale_input: bool = False):
        super().__init__()
        self.dim = dim
        self.x_scale = math.sqrt(dim) if scale_input else 1.0
        self.alpha = nn.Parameter(torch.ones(1))
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("table", sinusoid_table(_INITIAL_POSITIONS, dim), persistent=False)

    def _positions(self, start: int, length: int, like: Tensor) -> Tensor:
        if start + length > self.table.shape[0]:
            with torch.inference_mode(False):  # a table grown while decoding must still serve training
                self.table = sinusoid_table(start + length, self.dim).to(self.table)
        return self.table[start:start + length].to(dtype=like.dtype, device=like.device)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """x: (batch, frames, dim) -> (batch, frames, dim), positions start..start+frames-1."""
        return self.dropout(x * self.x_scale + self.alpha * self._positions(start, x.shape[1], x))


class KVCache(Protocol):
    """A layer's key/value cache as attention uses it while decoding (see
    `voicefleet.inference.generation.LayerKVCache`)."""

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (batch, heads, new, head_dim); return all keys and values so far."""
        ...


class SelfAttention(nn.Module):
    """Multi-head self-attention with one packed q/k/v projection (q, k, v stacked in that order)."""

    def __init__(self, dim: int, heads: int, dropout: float = LAYER_DROPOUT):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        # initialisation as torch's nn.MultiheadAttention, which the official model is built on
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """x: (batch, frames, dim); mask: bool, True = may attend, broadcastable to
        (batch, heads, frames, keys). With a cache, keys are the cached frames plus these."""
        batch, frames, dim = x.shape
        q, k, v = self.qkv(x).view(batch, frames, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.append(k, v)
        if frames == 1 and not self.training:
            # One query per step while decoding: two small matmuls beat the fused CPU kernel,
            # whose fixed cost dominated a step (about 150 us vs 30 us per layer at full size).
            scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            y = torch.softmax(scores, dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, frames, dim))


class FeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> linear."""

    def __init__(self, dim: int, hidden: int, dropout: float = LAYER_DROPOUT):
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(F.relu(self.up(x))))


class DecoderLayer(nn.Module):
    """Post-norm transformer layer: `x = norm1(x + attn(x)); x = norm2(x + ffn(x))`."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        # registration order = official state-dict order (attention, FFN, norms)
        self.attn = SelfAttention(dim, heads)
        self.ffn = FeedForward(dim, ffn_dim)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.residual_dropout = nn.Dropout(LAYER_DROPOUT)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        x = self.norm1(x + self.residual_dropout(self.attn(x, mask, cache)))
        return self.norm2(x + self.residual_dropout(self.ffn(x)))


def text_audio_mask(text_len: int, audio_len: int, device: torch.device | None = None) -> Tensor:
    """(text_len + audio_len, text_len + audio_len) bool, True = query (row) may attend to key.

    Text attends to all text and no audio; audio attends to all text and causally to audio.
    """
    total = text_len + audio_len
    allowed = torch.ones(total, total, dtype=torch.bool, device=device)
    allowed[:text_len, text_len:] = False
    allowed[text_len:, text_len:] = torch.ones(audio_len, audio_len, dtype=torch.bool, device=device).tril()
    return allowed


def padding_from_lengths(lengths: Tensor, width: int, *, left: bool) -> Tensor:
    """(batch, width) bool, True at padding: the last `width - len` (right) or first (left) slots."""
    positions = torch.arange(width, device=lengths.device).unsqueeze(0)
    if left:
        return positions < (width - lengths).unsqueeze(1)
    return positions >= lengths.unsqueeze(1)


# --------------------------------------------------------------------------- model


class GPT(nn.Module):
    """GPT v2 text -> semantic-token decoder.

    Inputs are phoneme ids (batch, text_len), BERT features (batch, bert_dim, text_len) aligned to
    the phonemes (zeros for non-Chinese text), and semantic tokens (batch, audio_len) in [0, EOS).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.embedding_dim != config.hidden_dim:
            raise ConfigError(f"embedding_dim ({config.embedding_dim}) must equal hidden_dim ({config.hidden_dim}): "
                              "embeddings feed the transformer directly")
        if config.EOS != config.vocab_size - 1:
            raise ConfigError(f"EOS must be the last id (vocab_size - 1 = {config.vocab_size - 1}), got {config.EOS}; "
                              "early steps drop the last logit column to forbid it")
        self.config = config
        dim = config.hidden_dim
        # registration order = official state-dict order
        self.bert_proj = nn.Linear(config.bert_dim, dim)
        self.text_embedding = nn.Embedding(config.phoneme_vocab_size, dim)
        self.text_position = ScaledPositionalEncoding(dim)
        self.audio_embedding = nn.Embedding(config.vocab_size, dim)
        self.audio_position = ScaledPositionalEncoding(dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, config.head, config.ffn_dim) for _ in range(config.n_layer))
        self.head = nn.Linear(dim, config.vocab_size, bias=False)
        self.embedding_dropout = nn.Dropout(config.dropout)  # the config's `dropout`: token embeddings only

    @property
    def eos(self) -> int:
        return self.config.EOS

    # ---- shared pieces

    def embed_text(self, phonemes: Tensor, bert: Tensor) -> Tensor:
        """phonemes (batch, text_len), bert (batch, bert_dim, text_len) -> (batch, text_len, dim)."""
        x = self.embedding_dropout(self.text_embedding(phonemes))
        x = x + self.bert_proj(bert.transpose(1, 2))
        return self.text_position(x)

    def embed_audio(self, tokens: Tensor, start: int = 0) -> Tensor:
        """tokens (batch, frames) at positions start.. -> (batch, frames, dim)."""
        return self.audio_position(self.embedding_dropout(self.audio_embedding(tokens)), start)

    def transform(self, x: Tensor, mask: Tensor | None = None, cache: Sequence[KVCache] | None = None) -> Tensor:
        """Run all layers. x: (batch, frames, dim); mask: bool, True = may attend."""
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, None if cache is None else cache[i])
        return x

    # ---- training

    def forward(self, phonemes: Tensor, phoneme_lens: Tensor, semantic: Tensor, semantic_lens: Tensor,
                bert: Tensor, *, official_pad_mask_quirk: bool = True) -> GPTTrainOutput:
        """Teacher-forced pass over a right-padded batch (the official collate's layout).

        Args:
            phonemes: (batch, text_len) ids, right-padded; bert: (batch, bert_dim, text_len).
            semantic: (batch, audio_len) tokens, right-padded (any pad value).
            phoneme_lens, semantic_lens: (batch,) valid lengths.
            official_pad_mask_quirk: mask the text padding as if the batch were *left*-padded,
                as the official training code does (it masks a short row's first real phonemes
                and lets it attend to its trailing pads). The official pretrained weights were
                trained that way, hence the default; False masks the actual right padding.
                Either way, as official, logits[:, 0] is read at slot max(text_len) - 1, a padding
                slot for shorter rows.
        """
        batch, text_len = phonemes.shape
        audio_len = semantic.shape[1]
        audio_pad = padding_from_lengths(semantic_lens, audio_len, left=False)
        # targets: tokens, then EOS; every padded frame is EOS too. Inputs are targets shifted right.
        targets = F.pad(semantic.masked_fill(audio_pad, 0), (0, 1), value=0)
        targets = targets.masked_fill(F.pad(audio_pad, (0, 1), value=True), self.eos)
        inputs = targets[:, :-1]

        text = self.embed_text(phonemes, bert)
        audio = self.embed_audio(inputs)
        text_pad = padding_from_lengths(phoneme_lens, text_len, left=official_pad_mask_quirk)
        key_ok = ~torch.cat([text_pad, audio_pad], dim=1)
        mask = text_audio_mask(text_len, audio_len, phonemes.device) & key_ok[:, None, None, :]
        hidden = self.transform(torch.cat([text, audio], dim=1), mask)
        logits = self.head(hidden[:, text_len - 1:])

        loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum")
        with torch.no_grad():
            scored = targets != self.eos
            top3 = logits.topk(min(3, logits.shape[-1]), dim=-1).indices
            hit3 = (top3 == targets.unsqueeze(-1)).any(-1)
            hit1 = top3[..., 0] == targets
            count = scored.sum().clamp(min=1)
            top1_acc = (hit1 & scored).sum() / count
            top3_acc = (hit3 & scored).sum() / count
        return GPTTrainOutput(logits=logits, targets=targets, loss=loss, top1_acc=top1_acc, top3_acc=top3_acc)

