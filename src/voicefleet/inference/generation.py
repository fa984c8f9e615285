"""Autoregressive decoding with a GPT v2: official sampling, the key/value cache, the decoding loop.

`TokenGenerator` wraps a `voicefleet.models.gpt.GPT` (the network: modules and the training
forward only) and reproduces the official decoding step for step: single-sequence decoding
(`generate`), the batched path TTS uses by default (`generate_batch`) and step-by-step streaming
(`generate_stream`). The one-token step is pluggable: `LayerDecodingStep` runs the network's own
layers; the reduced-precision CPU path (`voicefleet.inference.fast`) supplies a leaner one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Generator, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the sampling rules' parameters are torch-free, shared with the ONNX engine, and stay importable from here
from voicefleet.inference.params import GREEDY, MIN_STEPS_BEFORE_EOS, SamplingParams  # noqa: F401
from voicefleet.models.config import GPTConfig
from voicefleet.models.gpt import GPT, padding_from_lengths, text_audio_mask

logger = logging.getLogger(__name__)

MAX_DECODE_STEPS = 1500  # official hard limit on generated tokens per call
CACHE_BLOCK = 256  # KV-cache growth step, in positions


# --------------------------------------------------------------------------- outputs and sampling


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


# --------------------------------------------------------------------------- key/value cache and steps


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
            capacity = end + CACHE_BLOCK
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

    def __init__(self, gpt: GPT, cache: list[LayerKVCache]):
        self.gpt, self.cache = gpt, cache

    def __call__(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.gpt.transform(x, mask, self.cache)[:, -1]

    def keep_rows(self, rows: Tensor) -> None:
        for layer_cache in self.cache:
            layer_cache.keep_rows(rows)


class DecodingStep(Protocol):
    """One decoding step: (x (batch, 1, dim), key mask) -> hidden (batch, dim), continuing the
    cache it was built on; `keep_rows` drops the cache rows of sequences that ended."""

    def __call__(self, x: Tensor, mask: Tensor | None) -> Tensor: ...

    def keep_rows(self, rows: Tensor) -> None: ...


# What `TokenGenerator` calls to build the one-token step, with the network and the cache filled
# by the prompt pass: `LayerDecodingStep` itself, or a back end's leaner step.
StepFactory = Callable[[GPT, list[LayerKVCache]], DecodingStep]


@torch.no_grad()
def relayout_for_cpu_decoding_(gpt: GPT) -> GPT:
    """Store every linear weight with its longer dimension contiguous, in place; returns `gpt`.

    Only memory layout (strides) changes: the (out, in) weights with out > in (q/k/v, FFN up,
    head) become input-major. Values, shapes, state-dict keys and saved files stay the same.
    MKL's batch-1 matrix-vector products read such weights about 1.7x faster, which made
    greedy CPU decoding of `gpt_v2()` about 30% faster (37.7 -> 26.9 ms/token, 2 threads,
    AVX-512 EPYC). Meant for inference: data-parallel training expects contiguous weights.
    """
    for module in gpt.modules():
        if isinstance(module, nn.Linear) and module.weight.shape[0] > module.weight.shape[1]:
            module.weight.data = module.weight.data.t().contiguous().t()
    return gpt


# --------------------------------------------------------------------------- decoding loop


class TokenGenerator:
    """Decodes semantic tokens with `gpt`, reproducing the official sampling rules.

    `step` builds the one-token step of the loop from the network and the cache of the prompt
    pass (default: the network's own layers). The generator holds no state between calls, so one
    instance may serve several threads.
    """

    def __init__(self, gpt: GPT, step: StepFactory = LayerDecodingStep):
        self.gpt = gpt
        self.step = step

    @property
    def config(self) -> GPTConfig:
        """The network's configuration."""
        return self.gpt.config

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
        out = self._decode(self.gpt.embed_text(phonemes, bert), None, prompt, sampling, early_stop_num, max_steps,
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
        rows = [F.pad(self.gpt.embed_text(p.reshape(1, -1), b.unsqueeze(0))[0], (0, 0, width - p.shape[-1], 0))
                for p, b in zip(phonemes, bert)]
        text = torch.stack(rows)
        lens = torch.tensor(lengths, device=text.device)
        text_ok = ~padding_from_lengths(lens, width, left=True)
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
        steps = self._decode_steps(self.gpt.embed_text(phonemes, bert), None, prompt, sampling, early_stop_num,
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
        if self.gpt.training:
            logger.warning("decoding in training mode: dropout is active (call gpt.eval() first)")
        batch, text_len, _ = text.shape
        device = text.device
        if prompts is None:
            tokens = torch.zeros(batch, 0, dtype=torch.long, device=device)
            x = text
        else:
            tokens = prompts.to(device=device, dtype=torch.long)
            x = torch.cat([text, self.gpt.embed_audio(tokens)], dim=1)
        prompt_len = tokens.shape[1]

        mask = text_audio_mask(text_len, prompt_len, device)[None, None]
        key_ok = None
        if text_ok is not None and not bool(text_ok.all()):
            key_ok = torch.cat([text_ok, text_ok.new_ones(batch, prompt_len)], dim=1)
            mask = mask & key_ok[:, None, None, :]
        cache = [LayerKVCache() for _ in self.gpt.layers]
        hidden = self.gpt.transform(x, mask, cache)[:, -1]
        step_fn = self.step(self.gpt, cache)

        alive = list(range(batch))  # original row index of each remaining row
        # every row is filled in before the loop ends (at the latest on its last step)
        sequences: list[Tensor] = [tokens[0]] * batch
        idx = [max_steps - 1] * batch
        reasons = ["max_steps"] * batch
        step_logits = []
        for step in range(max_steps):
            logits = self.gpt.head(hidden)
            if keep_logits:
                full = logits.new_full((batch, logits.shape[-1]), float("nan"))
                full[alive] = logits
                step_logits.append(full)
            if step < MIN_STEPS_BEFORE_EOS:
                logits = logits[:, :-1]  # EOS is the last id (checked by GPT.__init__)
            new, penalised_argmax = sample_next(logits, tokens, sampling,
                                                _rows_of(generator, alive))
            tokens = torch.cat([tokens, new.unsqueeze(1)], dim=1)

            ended = (new == self.gpt.eos) | (penalised_argmax == self.gpt.eos)
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
            hidden = step_fn(self.gpt.embed_audio(tokens[:, -1:], prompt_len + step), step_mask)

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
