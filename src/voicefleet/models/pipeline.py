"""Zero-shot / fine-tuned voice synthesis: reference clip + phonemes -> 32 kHz audio.

The official inference path, step by step:
1. reference clip at 16 kHz (3-10 s) + the official trailing silence -> HuBERT -> SoVITS
   quantizer -> prompt semantic tokens; the same clip at 32 kHz -> linear spectrogram (style);
2. prompt phonemes + target phonemes (+ BERT features, zeros for non-Chinese text) -> GPT with
   the prompt tokens as the start of the audio sequence -> new semantic tokens;
3. SoVITS decodes the new tokens against the target phonemes and the reference style.

Shared feature extractors (HuBERT, BERT) are loaded once and can serve many voices: a voice is
only its GPT + SoVITS weights plus a reference clip (`Voice`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .audio import linear_spectrogram, load_audio
from .checkpoint.gpt_io import load_gpt
from .checkpoint.sovits_io import load_sovits
from .config import SAMPLE_RATE, SSL_SAMPLE_RATE
from .features import BertFeatures, HubertFeatures, pad_reference_16k
from .gpt import GPT, SamplingParams
from .pretrained import PretrainedPaths
from .sovits import SoVITS
from .symbols import phoneme_ids

logger = logging.getLogger(__name__)

REFERENCE_MIN_S, REFERENCE_MAX_S = 3.0, 10.0  # official limits on the reference clip


class SynthesisError(ValueError):
    """A synthesis request that cannot be served as given (bad reference, empty text, ...)."""


@dataclass(frozen=True)
class SynthesisParams:
    """Per-request knobs; defaults follow the official inference API."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    noise_scale: float = 0.5
    speed: float = 1.0
    fragment_interval: float = 0.3  # seconds of silence after each fragment
    seed: int | None = None
    max_tokens: int = 1500  # hard cap on generated semantic tokens per fragment (60 s)

    def sampling(self) -> SamplingParams:
        return SamplingParams(top_k=self.top_k, top_p=self.top_p, temperature=self.temperature,
                              repetition_penalty=self.repetition_penalty)


@dataclass
class Reference:
    """What the models need from a reference clip: prompt tokens (n,) and a spectrogram (1, 1025, t)."""

    prompt_tokens: torch.Tensor
    spec: torch.Tensor
    duration_s: float


@dataclass
class Voice:
    """A voice: fine-tuned (or pretrained) GPT + SoVITS and its reference clip and transcript."""

    name: str
    gpt: GPT
    sovits: SoVITS
    reference: Reference
    prompt_phonemes: list[int] = field(default_factory=list)


class Synthesizer:
    """Shared feature extractors plus the synthesis steps; thread-safe for concurrent requests.

    No state is kept between calls: every request draws from its own `torch.Generator`.
    """

    def __init__(self, hubert: HubertFeatures, bert: BertFeatures | None = None):
        self.hubert = hubert.eval()
        self.bert = bert

    @classmethod
    def from_pretrained(cls, paths: PretrainedPaths) -> "Synthesizer":
        return cls(HubertFeatures.from_pretrained(paths.hubert), BertFeatures.from_pretrained(paths.bert))

    # ---- voices --------------------------------------------------------------------------
    @torch.inference_mode()
    def reference(self, source: str | Path | bytes, sovits: SoVITS) -> Reference:
        """Load and check a reference clip, and compute its prompt tokens and spectrogram."""
        wave16 = load_audio(source, SSL_SAMPLE_RATE)
        duration = len(wave16) / SSL_SAMPLE_RATE
        if not REFERENCE_MIN_S <= duration <= REFERENCE_MAX_S:
            raise SynthesisError(f"reference audio is {duration:.1f} s long; it must be between "
                                 f"{REFERENCE_MIN_S:.0f} and {REFERENCE_MAX_S:.0f} s")
        if float(np.abs(wave16).max(initial=0.0)) < 1e-4:
            raise SynthesisError("reference audio is silent")
        ssl = self.hubert(pad_reference_16k(torch.from_numpy(wave16).unsqueeze(0)))
        tokens = sovits.extract_latent(ssl)[0, 0]
        wave32 = torch.from_numpy(load_audio(source, SAMPLE_RATE)).unsqueeze(0)
        peak = float(wave32.abs().max())
        if peak > 1:
            wave32 = wave32 / min(2.0, peak)
        return Reference(tokens, linear_spectrogram(wave32), duration)

    def load_voice(self, name: str, gpt_path: str | Path, sovits_path: str | Path, ref_audio: str | Path | bytes,
                   prompt_phonemes: Sequence[str] | str = ()) -> Voice:
        gpt, _, _ = load_gpt(gpt_path)
        sovits = load_sovits(sovits_path).model.prepare_for_inference()
        gpt = gpt.eval().relayout_for_cpu_decoding_() if not torch.cuda.is_available() else gpt.eval()
        return Voice(name, gpt, sovits, self.reference(ref_audio, sovits), phoneme_ids(prompt_phonemes))

    # ---- synthesis ------------------------------------------------------------------------
    def _bert(self, n_phonemes: int, gpt: GPT) -> torch.Tensor:
        # Non-Chinese text gets zero BERT features, as officially (Chinese text arrives with the
        # text front end, which supplies word2ph).
        return torch.zeros(gpt.config.bert_dim, n_phonemes)

    @torch.inference_mode()
    def fragment(self, voice: Voice, phonemes: Sequence[int], params: SynthesisParams,
                 generator: torch.Generator) -> torch.Tensor:
        """One fragment of phoneme ids -> waveform (samples,) float32 in [-1, 1]."""
        if not phonemes:
            raise SynthesisError("nothing to synthesise: the fragment has no phonemes")
        all_ids = torch.tensor(list(voice.prompt_phonemes) + list(phonemes), dtype=torch.long)
        bert = self._bert(len(all_ids), voice.gpt)
        out = voice.gpt.generate(all_ids, bert, voice.reference.prompt_tokens, sampling=params.sampling(),
                                 max_steps=params.max_tokens, generator=generator)
        tokens = out.new_tokens(0)
        if tokens.numel() == 0:
            logger.warning("GPT produced no tokens for a fragment of %d phonemes", len(phonemes))
            return torch.zeros(0)
        wave = voice.sovits.decode(tokens.view(1, 1, -1), torch.tensor([list(phonemes)]), [voice.reference.spec],
                                   noise_scale=params.noise_scale, speed=params.speed, generator=generator)[0, 0]
        peak = float(wave.abs().max())
        return wave / peak if peak > 1 else wave

    def stream(self, voice: Voice, fragments: Sequence[Sequence[int]], params: SynthesisParams = SynthesisParams()
               ) -> Iterator[np.ndarray]:
        """Yield audio per fragment (each followed by the fragment silence) as float32 arrays."""
        if not fragments:
            raise SynthesisError("nothing to synthesise: no text fragments")
        generator = torch.Generator()
        generator.manual_seed(params.seed if params.seed is not None else int(torch.randint(0, 2**31, ()).item()))
        silence = np.zeros(int(SAMPLE_RATE * params.fragment_interval), dtype=np.float32)
        for phonemes in fragments:
            yield np.concatenate([self.fragment(voice, phonemes, params, generator).numpy(), silence])

    def synthesize(self, voice: Voice, fragments: Sequence[Sequence[int]],
                   params: SynthesisParams = SynthesisParams()) -> np.ndarray:
        """All fragments -> one float32 waveform at 32 kHz."""
        return np.concatenate(list(self.stream(voice, fragments, params)))
