"""GPT v2: the text -> semantic-token model of GPT-SoVITS v2 (official `Text2SemanticDecoder`).

A decoder-only transformer reads one sequence `[text ; audio]`:

* text positions hold phoneme embeddings plus projected BERT features, with a scaled sinusoid;
  they attend bidirectionally to text only;
* audio positions hold semantic-token embeddings (1024 HuBERT codes + EOS), with their own
  sinusoid restarting at 0; they attend to all text and causally to audio;
* a bias-free head predicts the next semantic token from every audio position (and from the last
  text position, which predicts the first token).

Layers are post-norm (`x = norm(x + sublayer(x))`) with a packed q/k/v projection and a ReLU FFN
of width 4 * hidden, as the official weights require. Decoding keeps a key/value cache and
reproduces the official sampling rules step for step (see `GPT.generate`, `GPT.generate_batch`).

Official checkpoint names are mapped to the readable names used here only in
`voicefleet.models.checkpoint.gpt_io`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Generator, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voicefleet.models.config import ConfigError, GPTConfig

logger = logging.getLogger(__name__)

# Hard-coded in the official model (not part of its config): dropout inside every layer
# (attention weights, attention output, FFN hidden and output) and after both positional encodings.
LAYER_DROPOUT = 0.1
POSITION_DROPOUT = 0.1
LAYER_NORM_EPS = 1e-5
MAX_DECODE_STEPS = 1500  # official hard limit on generated tokens per call
MIN_STEPS_BEFORE_EOS = 11  # EOS cannot be chosen in the first 11 steps (0.44 s of audio at 25 Hz)
_INITIAL_POSITIONS = 4000  # the sinusoid table grows on demand beyond this
_CACHE_BLOCK = 256  # KV-cache growth step, in positions


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


@dataclass
class GPTGenerateOutput:
    """Result of autoregressive decoding.

    Attributes:
        sequences: one 1-D int64 tensor per input row, (prompt_len + new_tokens,): the prompt
            followed by the generated tokens, EOS never included (the official `y`).
        idx: per row, the step index at which decoding of that row stopped (official `idx`;
            0 for prompt-free single decoding, as official). TTS keeps `sequence[-idx:]`.
        stop_reasons: per row, "eos", "early_stop" or "max_steps".
        prompt_len: number of prompt tokens at the start of every sequence.
        step_logits: (steps, batch, vocab) raw head outputs of every step (before the EOS column is
            dropped and before any penalty), NaN for rows that had already stopped; None unless
            requested.
    """

    sequences: list[Tensor]
    idx: list[int]
    stop_reasons: list[str]
    prompt_len: int
    step_logits: Tensor | None = None

    def new_tokens(self, row: int = 0) -> Tensor:
        """(new_tokens,) the generated tokens of one row, without its prompt."""
        return self.sequences[row][self.prompt_len:]


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is drawn; defaults are the official TTS API defaults.

    The order is official: repetition penalty on every token already in the sequence (prompt
    included; scores below 0 are multiplied by it, others divided), then top-p (only if < 1, on the
    penalised logits), then temperature (floored at 1e-5), then top-k (ties with the k-th value
    kept), then softmax and an exponential race (arg-max of p / q with q ~ Exp(1)).
    """

    top_k: int | None = 15  # None disables top-k
    top_p: float = 1.0  # values >= 1 disable nucleus filtering
    temperature: float = 1.0
    repetition_penalty: float = 1.35

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (disabled), got {self.top_k}")
        if not self.top_p > 0:
            raise ValueError(f"top_p must be > 0 (values >= 1 disable it), got {self.top_p}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


GREEDY = SamplingParams(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.0)


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


class LayerKVCache:
    """Keys and values of one layer, (batch, heads, capacity, head_dim), filled up to `length`.

    Buffers grow in blocks rather than being concatenated every step, so a decoding step copies
    only the new position.
    """

    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.values: Tensor | None = None
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (batch, heads, new, head_dim); return all keys and values so far."""
        end = self.length + k.shape[2]
        if self.keys is None or end > self.keys.shape[2]:
            capacity = end + _CACHE_BLOCK
            keys = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            values = torch.empty_like(keys)
            if self.keys is not None:
                keys[:, :, :self.length] = self.keys[:, :, :self.length]
                values[:, :, :self.length] = self.values[:, :, :self.length]
            self.keys, self.values = keys, values
        self.keys[:, :, self.length:end] = k
        self.values[:, :, self.length:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def keep_rows(self, rows: Tensor) -> None:
        if self.keys is not None:
            self.keys = self.keys[rows]
            self.values = self.values[rows]


class LayerDecodingStep:
    """One decoding step through the model's own layers: (batch, 1, dim) -> (batch, dim)."""

    def __init__(self, gpt: "GPT", cache: list[LayerKVCache]):
        self.gpt, self.cache = gpt, cache

    def __call__(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.gpt.transform(x, mask, self.cache)[:, -1]

    def keep_rows(self, rows: Tensor) -> None:
        for layer_cache in self.cache:
            layer_cache.keep_rows(rows)


class DecodingStep(Protocol):
    """What `GPT.decoding_step` returns: one step (x (batch, 1, dim), key mask) -> hidden (batch,
    dim), continuing its cache; `keep_rows` drops the cache rows of sequences that ended."""

    def __call__(self, x: Tensor, mask: Tensor | None) -> Tensor: ...

    def keep_rows(self, rows: Tensor) -> None: ...


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

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: LayerKVCache | None = None) -> Tensor:
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

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: LayerKVCache | None = None) -> Tensor:
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


def _padding_from_lengths(lengths: Tensor, width: int, *, left: bool) -> Tensor:
    """(batch, width) bool, True at padding: the last `width - len` (right) or first (left) slots."""
    positions = torch.arange(width, device=lengths.device).unsqueeze(0)
    if left:
        return positions < (width - lengths).unsqueeze(1)
    return positions >= lengths.unsqueeze(1)


# --------------------------------------------------------------------------- sampling


def _draw_exponential(shape: torch.Size, like: Tensor,
                      generator: torch.Generator | Sequence[torch.Generator] | None) -> Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return torch.empty(shape, dtype=like.dtype, device=like.device).exponential_(1, generator=generator)
    # one generator per row: each row's draws are independent of the rest of the batch
    return torch.stack([torch.empty(shape[1:], dtype=like.dtype, device=like.device).exponential_(1, generator=g)
                        for g in generator])


def sample_next(logits: Tensor, history: Tensor, params: SamplingParams,
                generator: torch.Generator | Sequence[torch.Generator] | None = None) -> tuple[Tensor, Tensor]:
    """Draw the next token per row with the official rules (see `SamplingParams`).

    Args:
        logits: (batch, vocab) scores; not modified.
        history: (batch, tokens) int64 tokens already in each sequence (prompt included).
        generator: one generator for the whole batch, one per row, or None for torch's global RNG
            (which reproduces the official random stream under the same seed).

    Returns:
        tokens (batch,) the sampled ids, and penalised_argmax (batch,), the arg-max after the
        repetition penalty, which the official stop rule also checks for EOS.
    """
    if params.repetition_penalty != 1.0 and history.shape[1] > 0:
        seen = logits.gather(1, history)
        seen = torch.where(seen < 0, seen * params.repetition_penalty, seen / params.repetition_penalty)
        logits = logits.scatter(1, history, seen)
    penalised_argmax = logits.argmax(dim=-1)
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        drop_sorted = sorted_logits.softmax(dim=-1).cumsum(dim=-1) > params.top_p
        drop_sorted[:, 0] = False  # the most likely token always survives
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    logits = logits / max(params.temperature, 1e-5)
    if params.top_k is not None:
        kth = logits.topk(min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    race = probs / _draw_exponential(probs.shape, probs, generator)
    return race.argmax(dim=-1), penalised_argmax


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

    @torch.no_grad()
    def relayout_for_cpu_decoding_(self) -> "GPT":
        """Store every linear weight with its longer dimension contiguous, in place; returns self.

        Only memory layout (strides) changes: the (out, in) weights with out > in (q/k/v, FFN up,
        head) become input-major. Values, shapes, state-dict keys and saved files stay the same.
        MKL's batch-1 matrix-vector products read such weights about 1.7x faster, which made
        greedy CPU decoding of `gpt_v2()` about 30% faster (37.7 -> 26.9 ms/token, 2 threads,
        AVX-512 EPYC). Meant for inference: data-parallel training expects contiguous weights.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.weight.shape[0] > module.weight.shape[1]:
                module.weight.data = module.weight.data.t().contiguous().t()
        return self

    # ---- shared pieces

    def embed_text(self, phonemes: Tensor, bert: Tensor) -> Tensor:
        """phonemes (batch, text_len), bert (batch, bert_dim, text_len) -> (batch, text_len, dim)."""
        x = self.embedding_dropout(self.text_embedding(phonemes))
        x = x + self.bert_proj(bert.transpose(1, 2))
        return self.text_position(x)

    def embed_audio(self, tokens: Tensor, start: int = 0) -> Tensor:
        """tokens (batch, frames) at positions start.. -> (batch, frames, dim)."""
        return self.audio_position(self.embedding_dropout(self.audio_embedding(tokens)), start)

    def transform(self, x: Tensor, mask: Tensor | None = None, cache: list[LayerKVCache] | None = None) -> Tensor:
        """Run all layers. x: (batch, frames, dim); mask: bool, True = may attend."""
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, None if cache is None else cache[i])
        return x

    def decoding_step(self, cache: list[LayerKVCache]) -> DecodingStep:
        """The one-token step of the decoding loop, continuing from `cache` (filled by the prompt
        pass). Inference back ends (see `voicefleet.inference.fast`) replace it with a leaner one."""
        return LayerDecodingStep(self, cache)

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
        audio_pad = _padding_from_lengths(semantic_lens, audio_len, left=False)
        # targets: tokens, then EOS; every padded frame is EOS too. Inputs are targets shifted right.
        targets = F.pad(semantic.masked_fill(audio_pad, 0), (0, 1), value=0)
        targets = targets.masked_fill(F.pad(audio_pad, (0, 1), value=True), self.eos)
        inputs = targets[:, :-1]

        text = self.embed_text(phonemes, bert)
        audio = self.embed_audio(inputs)
        text_pad = _padding_from_lengths(phoneme_lens, text_len, left=official_pad_mask_quirk)
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

    # ---- inference

    @torch.inference_mode()
    def generate(self, phonemes: Tensor, bert: Tensor, prompt: Tensor | None, *,
                 sampling: SamplingParams = SamplingParams(), early_stop_num: int = -1,
                 max_steps: int = MAX_DECODE_STEPS, generator: torch.Generator | None = None,
                 return_step_logits: bool = False) -> GPTGenerateOutput:
        """Decode one sequence with a KV cache (official single-sequence path).

        Args:
            phonemes: (1, text_len) or (text_len,) ids; bert: (1, bert_dim, text_len) or
                (bert_dim, text_len).
            prompt: (1, prompt_len) or (prompt_len,) semantic tokens of the reference audio, or
                None for prompt-free decoding.
            early_stop_num: stop once more than this many tokens were generated (-1: never).
            generator: RNG for sampling (None: torch's global RNG).

        Stops on EOS (sampled, or the penalised arg-max; the EOS is not kept and the token drawn in
        that step is dropped), after more than `early_stop_num` new tokens, or at `max_steps`;
        the latter two keep every token.
        """
        phonemes = phonemes.reshape(1, -1)
        bert = bert.reshape(1, bert.shape[-2], bert.shape[-1])
        prompt = None if prompt is None else prompt.reshape(1, -1)
        out = self._decode(self.embed_text(phonemes, bert), None, prompt, sampling, early_stop_num, max_steps,
                           generator, trim_on_limit=False, keep_logits=return_step_logits)
        if prompt is None:
            out.idx = [0]  # official: a prompt-free call reports index 0 (TTS then keeps all tokens)
        return out

    @torch.inference_mode()
    def generate_batch(self, phonemes: Sequence[Tensor], bert: Sequence[Tensor], prompts: Tensor, *,
                       sampling: SamplingParams = SamplingParams(), early_stop_num: int = -1,
                       max_len: int | None = None, max_steps: int = MAX_DECODE_STEPS,
                       generator: torch.Generator | Sequence[torch.Generator] | None = None,
                       return_step_logits: bool = False) -> GPTGenerateOutput:
        """Decode several sequences together (official batched path, TTS's default).

        Args:
            phonemes: per row a (text_len_i,) id tensor; bert: per row (bert_dim, text_len_i).
            prompts: (batch, prompt_len) semantic prompts, one length for all rows.
            max_len: text width after left-padding (default: the longest text). Each text is
                embedded on its own (positions from 0), then left-padded with zero vectors that are
                masked as keys.
            generator: one generator for the batch, one per row (each request reproducible on its
                own, whatever it is batched with), or None for torch's global RNG.

        Rows leave the batch (with their cache) when they emit EOS; the returned sequence then
        drops that step's token. On early stop or `max_steps` every remaining row also drops its
        last token (official `y[:-1]`).
        """
        if len(phonemes) != len(bert) or len(phonemes) != prompts.shape[0]:
            raise ValueError(f"got {len(phonemes)} phoneme rows, {len(bert)} BERT rows and {prompts.shape[0]} prompts")
        if not isinstance(generator, (torch.Generator, type(None))) and len(generator) != len(phonemes):
            raise ValueError(f"got {len(generator)} generators for {len(phonemes)} rows")
        lengths = [p.shape[-1] for p in phonemes]
        width = max(lengths) if max_len is None else max_len
        if width < max(lengths):
            raise ValueError(f"max_len {width} is shorter than the longest text ({max(lengths)})")
        rows = [F.pad(self.embed_text(p.reshape(1, -1), b.unsqueeze(0))[0], (0, 0, width - p.shape[-1], 0))
                for p, b in zip(phonemes, bert)]
        text = torch.stack(rows)
        lens = torch.tensor(lengths, device=text.device)
        text_ok = ~_padding_from_lengths(lens, width, left=True)
        return self._decode(text, text_ok, prompts, sampling, early_stop_num, max_steps, generator,
                            trim_on_limit=True, keep_logits=return_step_logits)

    @torch.inference_mode()
    def generate_stream(self, phonemes: Tensor, bert: Tensor, prompt: Tensor, *,
                        sampling: SamplingParams = SamplingParams(), early_stop_num: int = -1,
                        max_steps: int = MAX_DECODE_STEPS, generator: torch.Generator | None = None
                        ) -> Generator[Tensor, None, GPTGenerateOutput]:
        """`generate` with a prompt, yielding after each step the new tokens that will be kept
        (1-d, growing); the generator's return value is `generate`'s output. The tokens and the
        random draws are those of `generate`: pausing between steps changes nothing."""
        phonemes = phonemes.reshape(1, -1)
        bert = bert.reshape(1, bert.shape[-2], bert.shape[-1])
        prompt = prompt.reshape(1, -1)
        steps = self._decode_steps(self.embed_text(phonemes, bert), None, prompt, sampling, early_stop_num,
                                   max_steps, generator, trim_on_limit=False, keep_logits=False)
        prompt_len = prompt.shape[1]
        while True:
            try:
                tokens = next(steps)
            except StopIteration as done:
                return done.value
            yield tokens[0, prompt_len:]

    def _decode(self, *args, **kwargs) -> GPTGenerateOutput:
        steps = self._decode_steps(*args, **kwargs)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def _decode_steps(self, text: Tensor, text_ok: Tensor | None, prompts: Tensor | None, sampling: SamplingParams,
                      early_stop_num: int, max_steps: int, generator, *, trim_on_limit: bool,
                      keep_logits: bool) -> Generator[Tensor, None, GPTGenerateOutput]:
        """Shared decoding loop; yields the rows still decoding (their tokens, prompt included)
        after each step that did not end them. text: (batch, text_len, dim) embedded; text_ok: (batch, text_len)
        bool, False at padding (None: no padding); prompts: (batch, prompt_len) or None."""
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if self.training:
            logger.warning("decoding in training mode: dropout is active (call .eval() first)")
        batch, text_len, _ = text.shape
        device = text.device
        if prompts is None:
            tokens = torch.zeros(batch, 0, dtype=torch.long, device=device)
            x = text
        else:
            tokens = prompts.to(device=device, dtype=torch.long)
            x = torch.cat([text, self.embed_audio(tokens)], dim=1)
        prompt_len = tokens.shape[1]

        mask = text_audio_mask(text_len, prompt_len, device)[None, None]
        key_ok = None
        if text_ok is not None and not bool(text_ok.all()):
            key_ok = torch.cat([text_ok, text_ok.new_ones(batch, prompt_len)], dim=1)
            mask = mask & key_ok[:, None, None, :]
        cache = [LayerKVCache() for _ in self.layers]
        hidden = self.transform(x, mask, cache)[:, -1]
        step_fn = self.decoding_step(cache)

        alive = list(range(batch))  # original row index of each remaining row
        # every row is filled in before the loop ends (at the latest on its last step)
        sequences: list[Tensor] = [tokens[0]] * batch
        idx = [max_steps - 1] * batch
        reasons = ["max_steps"] * batch
        step_logits = []
        for step in range(max_steps):
            logits = self.head(hidden)
            if keep_logits:
                full = logits.new_full((batch, logits.shape[-1]), float("nan"))
                full[alive] = logits
                step_logits.append(full)
            if step < MIN_STEPS_BEFORE_EOS:
                logits = logits[:, :-1]  # EOS is the last id (checked in __init__)
            new, penalised_argmax = sample_next(logits, tokens, sampling,
                                                _rows_of(generator, alive))
            tokens = torch.cat([tokens, new.unsqueeze(1)], dim=1)

            ended = (new == self.eos) | (penalised_argmax == self.eos)
            for i in ended.nonzero().flatten().tolist():
                sequences[alive[i]], idx[alive[i]], reasons[alive[i]] = tokens[i, :-1], step, "eos"
            limit = None
            if early_stop_num != -1 and tokens.shape[1] - prompt_len > early_stop_num:
                limit = "early_stop"
            elif step == max_steps - 1:
                limit = "max_steps"
            if limit is not None:
                for i in (~ended).nonzero().flatten().tolist():
                    kept = tokens[i, :-1] if trim_on_limit else tokens[i]
                    sequences[alive[i]], idx[alive[i]], reasons[alive[i]] = kept, step, limit
                break
            if bool(ended.all()):
                break
            if bool(ended.any()):
                keep = (~ended).nonzero().flatten()
                alive = [alive[i] for i in keep.tolist()]
                tokens = tokens[keep]
                step_fn.keep_rows(keep)
                if key_ok is not None:
                    key_ok = key_ok[keep]

            yield tokens
            # feed the new token: it sits at audio position prompt_len + step
            step_mask = None
            if key_ok is not None:
                key_ok = F.pad(key_ok, (0, 1), value=True)
                step_mask = key_ok[:, None, None, :]
            hidden = step_fn(self.embed_audio(tokens[:, -1:], prompt_len + step), step_mask)

        logger.debug("decoded %d row(s): stop steps %s, reasons %s", batch, idx, reasons)
        return GPTGenerateOutput(
            sequences=sequences, idx=idx,
            stop_reasons=reasons, prompt_len=prompt_len,
            step_logits=torch.stack(step_logits) if keep_logits else None)


def _rows_of(generator, alive: list[int]):
    """The generators of the remaining rows when one was given per row."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return [generator[i] for i in alive]
