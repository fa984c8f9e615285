"""Zero-shot / fine-tuned voice synthesis: reference clip + text -> 32 kHz audio.

The official inference path, step by step:
1. reference clip at 16 kHz (3-10 s) + the official trailing silence -> HuBERT -> SoVITS
   quantizer -> prompt semantic tokens; the same clip at 32 kHz -> linear spectrogram (style);
2. text -> fragments (split method) -> phonemes per language segment + BERT features (Chinese
   segments; zeros otherwise); the prompt transcript is prepended to every fragment;
3. GPT continues the prompt tokens -> new semantic tokens per fragment (fragments of similar
   length are decoded together in one batch);
4. SoVITS decodes each fragment's tokens against its phonemes and the reference style; each
   fragment is followed by a short silence.

v2Pro / v2ProPlus voices also need the reference's speaker-verification embedding: the same
32 kHz reference tensor is resampled to 16 kHz, turned into Kaldi fbank features and run through
ERes2NetV2 (`feature_map_embedding`), once per voice, as the official inference does. The network
is loaded from the pretrained folder's `sv/` file the first time such a voice is loaded.

Shared feature extractors (HuBERT, BERT) are loaded once and serve every voice: a voice is its
GPT + SoVITS weights plus a reference clip and transcript (`Voice`). No state is kept between
calls: every request draws from its own random generators, so a seed reproduces the same audio
even with other requests running concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch

# SynthesisParams and the limits are defined in `params` and stay importable from here.
from voicefleet.inference.params import (  # noqa: F401
    FIRST_CHUNK_HOLDBACK_TOKENS, PRECISIONS, REFERENCE_MAX_S, REFERENCE_MIN_S, SEED_MAX, SynthesisError, SynthesisParams,
    check_reference_wave, fragment_seed)
from voicefleet.inference.generation import SamplingParams, TokenGenerator, relayout_for_cpu_decoding_
from voicefleet.models.adapters import Adapter, adapted_iter, use_adapter
from voicefleet.models.audio import linear_spectrogram, load_audio
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.models.config import SAMPLE_RATE, SSL_SAMPLE_RATE
from voicefleet.models.features import BertFeatures, HubertFeatures, pad_reference_16k
from voicefleet.models.gpt import GPT
from voicefleet.models.pretrained import SV_FILE, PretrainedPaths
from voicefleet.models.sovits import SoVITS
from voicefleet.models.speaker import ERes2NetV2
from voicefleet.models.speaker_frontend import speaker_features
from voicefleet.text.frontend import Segment, has_speech_ids, require_speech
from voicefleet.text.phonemes import text_fragments
from voicefleet.text.splitting import SENTENCE_MARKS, length_buckets, split_text

logger = logging.getLogger(__name__)


# Streaming: the full first fragment's audio fades in over this after the early chunk.
FIRST_CHUNK_FADE_S = 0.01


@dataclass
class Reference:
    """What the models need from a reference clip: prompt tokens (n,), a spectrogram (1, 1025, t)
    and, for v2Pro voices, the speaker-verification embedding (1, sv_dim); or, once compacted, the
    SoVITS style they give (1, gin, 1) in place of the last two."""

    prompt_tokens: torch.Tensor
    spec: torch.Tensor | None
    duration_s: float
    sv: torch.Tensor | None = None
    style: torch.Tensor | None = None

    @torch.inference_mode()
    def compact(self, sovits: SoVITS, adapters: Sequence[Adapter] = ()) -> "Reference":
        """This reference as a voice resident over many requests needs it: the style SoVITS takes
        from the spectrogram (and embedding), computed once, instead of them (a 10 s clip's
        spectrogram is 2 MB; the style is 2 KB at the official size). Every SoVITS call of the
        voice would recompute the same style, so its audio does not change; the style holds for
        `sovits` with `adapters` only, the model and adapters the voice decodes with."""
        if self.style is not None:
            return self
        with use_adapter(*adapters):
            style = sovits.reference_style([self.spec], None if self.sv is None else [self.sv])
        return Reference(self.prompt_tokens, None, self.duration_s, None, style)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.prompt_tokens, self.spec, self.sv, self.style)
                   if t is not None)


@dataclass
class TextUnit:
    """Phoneme ids (n,) of a piece of text, its BERT features (bert_dim, n) and normalised text."""

    phone_ids: list[int]
    bert: torch.Tensor
    norm_text: str


@dataclass
class Voice:
    """A voice: GPT decoding + SoVITS weights, its reference clip and the transcript of that clip.

    An adapter voice shares `generator` and `sovits` with every voice of the same backbone and
    brings its LoRA `adapters` (one per adapted stage), which every model call of this voice
    applies (`voicefleet.inference.adapted`).
    """

    name: str
    generator: TokenGenerator  # decodes with the voice's GPT (fp32 or the fast path's)
    sovits: SoVITS
    reference: Reference
    prompt: TextUnit | None = None
    adapters: tuple[Adapter, ...] = ()

    @property
    def gpt(self) -> GPT:
        """The GPT network that `generator` decodes with."""
        return self.generator.gpt


def fragment_generator(seed: int, index: int, purpose: str) -> torch.Generator:
    """A generator for one fragment and purpose, derived from the request seed only.

    A fragment's random draws therefore do not depend on which fragments share its batch. The
    batched GPT decode still pads rows, which can change the arithmetic and so the sampled tokens:
    the same seed gives the same audio for the same `batch_size`.
    """
    return torch.Generator().manual_seed(fragment_seed(seed, index, purpose))


# intra-op threads for the thread-count-invariant stages: a number, or a function asked at each stage
StageThreads = Union[int, Callable[[], int], None]
_PROBE_TEXT = "今天天气很好，我们一起去公园散步。"


def _silence(params: SynthesisParams) -> np.ndarray:
    return np.zeros(int(SAMPLE_RATE * params.fragment_interval), dtype=np.float32)


class Synthesizer:
    """Shared feature extractors plus the synthesis steps; safe to call from several threads."""

    def __init__(self, hubert: HubertFeatures, bert: BertFeatures | None = None, *, precision: str = "fp32",
                 speaker_verifier: ERes2NetV2 | str | Path | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.hubert = hubert.eval()
        if bert is not None and precision == "fast":
            from voicefleet.inference.fast import fast_bert

            bert = fast_bert(bert)
        self.bert = bert
        self.precision = precision
        self._stage_threads = threading.local()
        # the network itself, or the file to load it from when the first v2Pro voice arrives
        self._speaker_verifier = speaker_verifier
        self._speaker_lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, paths: PretrainedPaths, *, precision: str = "fp32") -> "Synthesizer":
        sv = paths.sv or paths.root / SV_FILE  # a v2 folder may hold it too, for v2Pro voices
        return cls(HubertFeatures.from_pretrained(paths.hubert), BertFeatures.from_pretrained(paths.bert),
                   precision=precision, speaker_verifier=sv if sv.is_file() else None)

    def speaker_verifier(self) -> ERes2NetV2:
        """The speaker-verification network of v2Pro voices (loaded on first use)."""
        with self._speaker_lock:
            if self._speaker_verifier is None:
                raise SynthesisError(f"v2Pro/v2ProPlus voices need the speaker-verification network "
                                     f"({SV_FILE} in the pretrained folder), and there is none")
            if not isinstance(self._speaker_verifier, ERes2NetV2):
                from voicefleet.models.checkpoint.speaker_io import load_speaker_verifier

                self._speaker_verifier = load_speaker_verifier(self._speaker_verifier)
            return self._speaker_verifier

    @torch.inference_mode()
    def speaker_embedding(self, wave32: torch.Tensor, sovits: SoVITS) -> torch.Tensor:
        """(1, samples) reference at 32 kHz -> speaker-verification embedding (1, sv_dim) for `sovits`."""
        verifier = self.speaker_verifier()
        emb = verifier.feature_map_embedding(speaker_features(wave32.float(), SAMPLE_RATE))
        if emb.shape[-1] != sovits.config.sv_embedding_dim:
            raise SynthesisError(f"the speaker-verification network gives {emb.shape[-1]}-wide embeddings but this "
                                 f"{sovits.config.version} voice takes {sovits.config.sv_embedding_dim}; use the "
                                 f"network of the voice's pretrained folder")
        return emb

    # ---- threads ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def invariant_stage_threads(self, threads: StageThreads) -> Iterator[None]:
        """Within this block, on the calling thread, BERT features and GPT decoding run with
        `threads` intra-op threads (a number, or a function asked as each such stage starts) when
        that is more than the thread's own count; everything else keeps the thread's count.

        Only for kernels whose results do not depend on the thread count (`check_invariant_stages`):
        a seed's audio then stays the same whether a request ran alone or under load.
        """
        previous = getattr(self._stage_threads, "value", None)
        self._stage_threads.value = threads
        try:
            yield
        finally:
            self._stage_threads.value = previous

    @contextlib.contextmanager
    def _invariant_stage(self) -> Iterator[None]:
        wanted = getattr(self._stage_threads, "value", None)
        wanted = wanted() if callable(wanted) else wanted
        own = torch.get_num_threads()
        if not wanted or wanted <= own:
            yield
            return
        torch.set_num_threads(wanted)
        try:
            yield
        finally:
            torch.set_num_threads(own)

    @torch.inference_mode()
    def check_invariant_stages(self, voice: Voice, threads: int) -> str | None:
        """Why BERT features or `voice`'s GPT decoding (single and batched) would differ with
        `threads` intra-op threads from the calling thread's count on this machine, or None when
        they are bit-identical (then `invariant_stage_threads` may widen them)."""
        dim = voice.gpt.config.bert_dim
        prompt = voice.reference.prompt_tokens
        probe = SamplingParams(top_k=1)

        def run():
            unit = self.text_unit(_PROBE_TEXT, "zh", dim)
            ids, bert = self._gpt_inputs(voice, unit)
            short = ids[: max(1, len(ids) // 2)], bert[:, : max(1, len(ids) // 2)]
            with self._invariant_stage(), use_adapter(*voice.adapters):
                single = voice.generator.generate(ids, bert, prompt, sampling=probe, max_steps=4,
                                                  return_step_logits=True).step_logits
                batched = voice.generator.generate_batch([ids, short[0]], [bert, short[1]], prompt.expand(2, -1),
                                                         sampling=probe, max_steps=4,
                                                         return_step_logits=True).step_logits
            return {"BERT features": unit.bert, "GPT logits": single, "batched GPT logits": batched}

        own = torch.get_num_threads()
        with self.invariant_stage_threads(None):
            base = run()
        with self.invariant_stage_threads(threads):
            wide = run()
        for name, value in base.items():
            if not torch.equal(value.nan_to_num(), wide[name].nan_to_num()):
                return f"{name} differ between {own} and {threads} threads"
        return None

    # ---- text -----------------------------------------------------------------------------
    def text_unit(self, text: str, lang: str, bert_dim: int) -> TextUnit:
        """Text (one fragment) -> phonemes and BERT features, official language handling."""
        from voicefleet.text.frontend import phones_and_bert_segments

        return self.segments_unit(phones_and_bert_segments(text, lang), bert_dim)

    def segments_unit(self, segments: Sequence[Segment], bert_dim: int) -> TextUnit:
        """A fragment's language pieces -> its phoneme ids and BERT features (zeros outside Chinese)."""
        ids: list[int] = []
        berts: list[torch.Tensor] = []
        norm = []
        for seg in segments:
            ids.extend(seg.phone_ids)
            norm.append(seg.norm_text)
            if seg.lang == "zh" and self.bert is not None and seg.word2ph:
                with self._invariant_stage():
                    berts.append(self.bert.phone_level_features(seg.norm_text, list(seg.word2ph)))
            else:
                berts.append(torch.zeros(bert_dim, len(seg.phone_ids)))
        bert = torch.cat(berts, dim=1) if berts else torch.zeros(bert_dim, 0)
        return TextUnit(ids, bert, "".join(norm))

    def prompt_unit(self, prompt_text: str, prompt_lang: str, bert_dim: int) -> TextUnit | None:
        prompt_text = (prompt_text or "").strip("\n")
        if not prompt_text.strip():
            return None
        if prompt_text[-1] not in SENTENCE_MARKS:
            prompt_text += "." if prompt_lang.lower() == "en" else "。"
        return self.text_unit(prompt_text, prompt_lang, bert_dim)

    def fragments(self, text: str, lang: str, method: str, bert_dim: int) -> list[TextUnit]:
        """The text's fragments (`voicefleet.text.phonemes.text_fragments`, what `voicefleet
        phonemes` shows) with their BERT features."""
        units = [self.segments_unit(f.segments, bert_dim) for f in text_fragments(text, lang, method)]
        if not units:
            raise SynthesisError("nothing to synthesise: the text has no speakable content")
        # Fragments of marks only are kept, as officially, but not a text of nothing else
        # (e.g. Hangul under a Cantonese mode, whose cleaner drops it).
        if not any(has_speech_ids(u.phone_ids) for u in units):
            require_speech([], text, lang)
        return units

    # ---- voices ---------------------------------------------------------------------------
    @torch.inference_mode()
    def reference(self, source: str | Path | bytes, sovits: SoVITS) -> Reference:
        """Load and check a reference clip, and compute its prompt tokens and spectrogram."""
        wave16 = load_audio(source, SSL_SAMPLE_RATE)
        duration = check_reference_wave(wave16, SSL_SAMPLE_RATE)
        ssl = self.hubert(pad_reference_16k(torch.from_numpy(wave16).unsqueeze(0)))
        tokens = sovits.extract_latent(ssl)[0, 0]
        wave32 = torch.from_numpy(load_audio(source, SAMPLE_RATE)).unsqueeze(0)
        peak = float(wave32.abs().max())
        if peak > 1:
            wave32 = wave32 / min(2.0, peak)
        sv = self.speaker_embedding(wave32, sovits) if sovits.config.is_pro else None
        return Reference(tokens, linear_spectrogram(wave32), duration, sv)

    def load_voice(self, name: str, gpt_path: str | Path, sovits_path: str | Path, ref_audio: str | Path | bytes,
                   prompt_text: str = "", prompt_lang: str = "zh") -> Voice:
        """Load a voice's weights and reference; the prompt transcript is optional (as officially)."""
        gpt, _, _ = load_gpt(gpt_path)
        gpt = gpt.eval()
        loaded = load_sovits(sovits_path)
        sovits = loaded.model
        if loaded.config.is_pro:
            self.speaker_verifier()  # fail before any other work when the network is missing
        logger.info("voice %s: SoVITS %s", name, loaded.version)
        if self.precision == "fast":
            from voicefleet.inference.fast import optimize_for_cpu_inference

            generator, sovits = optimize_for_cpu_inference(gpt, sovits)
        else:
            if not torch.cuda.is_available():
                relayout_for_cpu_decoding_(gpt)
            generator = TokenGenerator(gpt)
            sovits.prepare_for_inference()
        reference = self.reference(ref_audio, sovits)
        return Voice(name, generator, sovits, reference,
                     self.prompt_unit(prompt_text, prompt_lang, gpt.config.bert_dim))

    # ---- synthesis ------------------------------------------------------------------------
    @torch.inference_mode()
    def decode_fragments(self, voice: Voice, units: Sequence[TextUnit], indices: Sequence[int],
                         params: Sequence[SynthesisParams]) -> list[np.ndarray]:
        """GPT over a batch of fragments, then SoVITS per fragment -> float32 audio, each followed by
        its fragment silence.

        Row k is fragment `indices[k]` of a request whose params are `params[k]` (with a resolved
        seed): rows may come from different requests (the Serve batcher groups them), but they share
        one GPT decode, so they must share the sampling knobs and token cap of `params[0]`.
        """
        new_tokens = self.decode_tokens(voice, units, indices, params)
        return [self.fragment_audio(voice, unit, tokens, i, p)
                for unit, tokens, i, p in zip(units, new_tokens, indices, params)]

    @torch.inference_mode()
    def decode_tokens(self, voice: Voice, units: Sequence[TextUnit], indices: Sequence[int],
                      params: Sequence[SynthesisParams]) -> list[torch.Tensor]:
        """The GPT stage of `decode_fragments`: each row's new semantic tokens."""
        first = params[0]
        ids, berts = map(list, zip(*(self._gpt_inputs(voice, u) for u in units)))
        gens = [fragment_generator(p.seed, i, "gpt") for p, i in zip(params, indices)]
        with self._invariant_stage():
            return self._decode_tokens(voice, ids, berts, gens, first.sampling(), first.max_tokens)

    def fragment_audio(self, voice: Voice, unit: TextUnit, tokens: torch.Tensor, index: int,
                       params: SynthesisParams) -> np.ndarray:
        """The SoVITS stage of `decode_fragments`: one fragment's audio and its trailing silence."""
        if tokens.numel() == 0:
            logger.warning("GPT produced no tokens for fragment %d (%r)", index, unit.norm_text)
        return np.concatenate([self.fragment_wave(voice, unit, tokens, index, params), _silence(params)])

    @staticmethod
    def _decode_tokens(voice: Voice, ids: list[torch.Tensor], berts: list[torch.Tensor],
                       gens: list[torch.Generator], sampling: SamplingParams, steps: int) -> list[torch.Tensor]:
        """GPT over the rows: the new semantic tokens of each."""
        with use_adapter(*voice.adapters):
            return Synthesizer._decode_rows(voice, ids, berts, gens, sampling, steps)

    @staticmethod
    def _decode_rows(voice: Voice, ids: list[torch.Tensor], berts: list[torch.Tensor],
                     gens: list[torch.Generator], sampling: SamplingParams, steps: int) -> list[torch.Tensor]:
        prompt, tokens_prompt = voice.prompt, voice.reference.prompt_tokens
        if prompt is None:
            # Without a transcript the official pipeline decodes without the audio prompt too.
            outs = [voice.generator.generate(i, b, None, sampling=sampling, max_steps=steps, generator=g)
                    for i, b, g in zip(ids, berts, gens)]
            new_tokens = [o.sequences[0] for o in outs]
        elif len(ids) == 1:
            out = voice.generator.generate(ids[0], berts[0], tokens_prompt, sampling=sampling, max_steps=steps,
                                           generator=gens[0])
            new_tokens = [out.new_tokens(0)]
        else:
            out = voice.generator.generate_batch(ids, berts, tokens_prompt.unsqueeze(0).expand(len(ids), -1),
                                                 sampling=sampling, max_steps=steps, generator=gens)
            new_tokens = [out.new_tokens(r) for r in range(len(ids))]
        return new_tokens

    @torch.inference_mode()
    def fragment_wave(self, voice: Voice, unit: TextUnit, tokens: torch.Tensor, index: int,
                      params: SynthesisParams) -> np.ndarray:
        """SoVITS: one fragment's semantic tokens (n,) -> float32 audio (no trailing silence).

        The prior's noise is drawn frame by frame from the fragment's seed, so a prefix of the
        tokens is decoded with the first frames of the whole fragment's noise.
        """
        if tokens.numel() == 0:
            return np.zeros(0, dtype=np.float32)
        sovits = voice.sovits
        frames = sovits.prior_frames(tokens.numel(), params.speed)
        noise = torch.randn(frames, sovits.config.inter_channels,
                            generator=fragment_generator(params.seed, index, "sovits")).T.unsqueeze(0)
        ref = voice.reference
        refer = None if ref.style is not None else [ref.spec]
        sv = None if ref.sv is None else [ref.sv]
        with use_adapter(*voice.adapters):
            wave = sovits.decode(tokens.view(1, 1, -1), torch.tensor([unit.phone_ids]), refer, ge=ref.style,
                                 noise_scale=params.noise_scale, speed=params.speed, noise=noise, sv=sv)[0, 0]
        peak = float(wave.abs().max())
        wave = wave / peak if peak > 1 else wave
        return wave.numpy().astype(np.float32)

    @torch.inference_mode()
    def stream_first_fragment(self, voice: Voice, unit: TextUnit, params: SynthesisParams) -> Iterator[np.ndarray]:
        """Fragment 0 in two chunks: the audio of its first `params.first_chunk_tokens` tokens as
        soon as the GPT has them, then the rest once the fragment is decoded.

        The early chunk comes from decoding that prefix alone and stops
        `FIRST_CHUNK_HOLDBACK_TOKENS` short of it; the second chunk is the whole fragment's audio
        from there on (cross-faded over `FIRST_CHUNK_FADE_S`), so everything after the early chunk is
        exactly what `synthesize` produces for the same seed.
        """
        k = params.first_chunk_tokens
        ids, bert = self._gpt_inputs(voice, unit)
        steps = adapted_iter(voice.generator.generate_stream(ids, bert, voice.reference.prompt_tokens,
                                                             sampling=params.sampling(), max_steps=params.max_tokens,
                                                             generator=fragment_generator(params.seed, 0, "gpt")),
                             *voice.adapters)
        early, cut, fade = None, 0, 0
        while True:
            try:
                with self._invariant_stage():
                    tokens = next(steps)
            except StopIteration as done:
                out = done.value
                break
            if early is None and tokens.numel() >= k:
                early = self.fragment_wave(voice, unit, tokens[:k], 0, params)
                cut = len(early) * (k - FIRST_CHUNK_HOLDBACK_TOKENS) // k
                fade = min(int(SAMPLE_RATE * FIRST_CHUNK_FADE_S), cut)
                yield early[:cut - fade]
        wave = self.fragment_wave(voice, unit, out.new_tokens(0), 0, params)
        if early is None:
            yield np.concatenate([wave, _silence(params)])
            return
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
        blend = early[cut - fade:cut] * (1 - ramp) + wave[cut - fade:cut] * ramp
        yield np.concatenate([blend, wave[cut:], _silence(params)])

    def _gpt_inputs(self, voice: Voice, unit: TextUnit) -> tuple[torch.Tensor, torch.Tensor]:
        """Phoneme ids and BERT features of prompt text + fragment, as the GPT reads them."""
        prompt = voice.prompt
        ids = torch.tensor((prompt.phone_ids if prompt else []) + unit.phone_ids, dtype=torch.long)
        return ids, torch.cat([prompt.bert, unit.bert], 1) if prompt else unit.bert

    @staticmethod
    def with_seed(params: SynthesisParams) -> SynthesisParams:
        """`params` with its seed drawn now when none was given (one seed per request)."""
        if params.seed is not None:
            return params
        return params.model_copy(update={"seed": int(torch.randint(0, SEED_MAX, ()).item())})

    def stream_units(self, voice: Voice, units: Sequence[TextUnit], params: SynthesisParams = SynthesisParams()
                     ) -> Iterator[np.ndarray]:
        """Yield each fragment's audio (followed by the fragment silence) in order, as float32.

        The first fragment is decoded on its own so that it can play while the rest is computed;
        the rest go in consecutive batches of `params.batch_size`.
        """
        if not units:
            raise SynthesisError("nothing to synthesise: no text fragments")
        return self._stream(voice, units[0], lambda: list(units[1:]), params)

    def _stream(self, voice: Voice, first: TextUnit, later: Callable[[], list[TextUnit]],
                params: SynthesisParams) -> Iterator[np.ndarray]:
        """`first`'s audio, then that of the units `later()` returns (called once the first
        fragment's audio is out, so their text features are computed while it plays)."""
        params = self.with_seed(params)
        if params.first_chunk_tokens and voice.prompt is not None:
            # (without a transcript the official path decodes prompt-free: whole fragments then)
            yield from self.stream_first_fragment(voice, first, params)
        else:
            yield from self.decode_fragments(voice, [first], [0], [params])
        rest = later()
        for start in range(0, len(rest), params.batch_size):
            group = rest[start:start + params.batch_size]
            indices = list(range(1 + start, 1 + start + len(group)))  # fragment indices pick the noise
            yield from self.decode_fragments(voice, group, indices, [params] * len(group))

    def synthesize_units(self, voice: Voice, units: Sequence[TextUnit],
                         params: SynthesisParams = SynthesisParams()) -> np.ndarray:
        """All fragments -> one float32 waveform at 32 kHz; fragments batched by length."""
        if not units:
            raise SynthesisError("nothing to synthesise: no text fragments")
        params = self.with_seed(params)
        waves: list[np.ndarray | None] = [None] * len(units)
        for bucket in length_buckets([len(u.phone_ids) for u in units], params.batch_size):
            chunk = self.decode_fragments(voice, [units[i] for i in bucket], bucket, [params] * len(bucket))
            for i, wave in zip(bucket, chunk):
                waves[i] = wave
        return np.concatenate(waves)

    def stream(self, voice: Voice, text: str, lang: str, params: SynthesisParams = SynthesisParams()
               ) -> Iterator[np.ndarray]:
        """Text -> audio chunks, one per fragment, the first as early as possible: only the first
        fragment's text features are computed before its audio, the others' while it plays."""
        dim = voice.gpt.config.bert_dim
        pieces = iter(split_text(text, params.text_split_method, lang))
        for piece in pieces:
            first = self.text_unit(piece, lang, dim)
            if first.phone_ids:
                break
        else:
            raise SynthesisError("nothing to synthesise: the text has no speakable content")

        def later() -> list[TextUnit]:
            return [u for u in (self.text_unit(p, lang, dim) for p in pieces) if u.phone_ids]

        if not has_speech_ids(first.phone_ids):
            # Rare: a first fragment of marks only. The rest is read now, before any audio, to
            # refuse a text with nothing to say as `fragments` does; the fragments stay the same.
            rest = later()
            if not any(has_speech_ids(u.phone_ids) for u in rest):
                require_speech([], text, lang)
            later = lambda: rest  # noqa: E731
        return self._stream(voice, first, later, params)

    def synthesize(self, voice: Voice, text: str, lang: str, params: SynthesisParams = SynthesisParams()) -> np.ndarray:
        """Text -> one float32 waveform at 32 kHz."""
        units = self.fragments(text, lang, params.text_split_method, voice.gpt.config.bert_dim)
        return self.synthesize_units(voice, units, params)

    def phoneme_units(self, fragments: Sequence[Sequence[int]], voice: Voice) -> list[TextUnit]:
        """Pre-phonemised fragments (lists of v2 phoneme ids) -> units with zero BERT features."""
        dim = voice.gpt.config.bert_dim
        return [TextUnit(list(f), torch.zeros(dim, len(f)), "") for f in fragments if len(f)]
