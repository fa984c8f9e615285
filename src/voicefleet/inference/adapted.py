"""Adapter voices over one shared backbone: the pretrained GPT and SoVITS, loaded once, with LoRA
hooks on every layer an adapter may target.

    backbone = Backbone.load(paths)                        # once per process (per model version)
    voice = load_adapter_voice(synth, backbone, "bob@1", gpt="gpt.lora.safetensors",
                               sovits="sovits.lora.safetensors", reference="ref.wav", prompt_text="...")
    synth.synthesize(voice, "你好。", "zh")

A voice then holds only its adapters (a few MB), its reference's prompt tokens and style (the
spectrogram is reduced to the style SoVITS takes from it once, at load: `Reference.compact`)
and its transcript's features; its synthesis applies its adapters to the shared models per call
(the unmerged LoRA forward), so voices never copy or change the backbone and any number of them
synthesise concurrently without bleeding into each other. Each adapter is checked against the
backbone's fingerprint when it is loaded: an adapter trained on other pretrained weights is
refused (`AdapterError`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from voicefleet.inference.generation import TokenGenerator, relayout_for_cpu_decoding_
from voicefleet.inference.pipeline import SynthesisError, Synthesizer, Voice
from voicefleet.models import adapters as lora
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.models.gpt import GPT
from voicefleet.models.pretrained import PretrainedPaths
from voicefleet.models.sovits import SoVITS

logger = logging.getLogger(__name__)


@dataclass
class Backbone:
    """The pretrained stages adapter voices share, hooked for adapters, and their fingerprints."""

    generator: TokenGenerator
    sovits: SoVITS
    fingerprints: dict[str, str]  # stage -> base fingerprint

    @property
    def gpt(self) -> GPT:
        return self.generator.gpt

    @classmethod
    def from_models(cls, gpt: GPT, sovits: SoVITS) -> "Backbone":
        """Hook `gpt` and `sovits` (taken over: used for inference only from now on)."""
        gpt = gpt.eval()
        sovits = sovits.prepare_for_inference()
        sovits.posterior_encoder = None  # training only; not part of the fingerprint either
        fingerprints = {"gpt": lora.base_fingerprint_of(gpt, "gpt"), "sovits": lora.base_fingerprint_of(sovits, "sovits")}
        if not torch.cuda.is_available():
            relayout_for_cpu_decoding_(gpt)
        lora.attach_all(gpt, "gpt")
        lora.attach_all(sovits, "sovits")
        return cls(TokenGenerator(gpt), sovits, fingerprints)

    @classmethod
    def load(cls, paths: PretrainedPaths) -> "Backbone":
        """The pretrained folder's GPT and SoVITS generator."""
        backbone = cls.from_models(load_gpt(paths.gpt)[0], load_sovits(paths.sovits_g).model)
        logger.info("backbone loaded from %s (gpt %s, sovits %s)", paths.root, backbone.fingerprints["gpt"][:19],
                    backbone.fingerprints["sovits"][:19])
        return backbone

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for m in (self.gpt, self.sovits) for t in m.state_dict().values())


def voice_nbytes(voice: Voice) -> int:
    """Memory an adapter voice holds of its own: adapters, its reference (prompt tokens and style),
    prompt features."""
    prompt = 0 if voice.prompt is None else voice.prompt.bert.numel() * voice.prompt.bert.element_size()
    return sum(a.nbytes() for a in voice.adapters) + voice.reference.nbytes() + prompt


def load_adapter_voice(synth: Synthesizer, backbone: Backbone, name: str, *, gpt: str | Path, sovits: str | Path,
                       reference: str | Path | bytes, prompt_text: str = "", prompt_lang: str = "zh") -> Voice:
    """A voice whose stages are each an adapter file (applied to the backbone) or full weights
    (loaded as its own model: a voice may adapt one stage only)."""
    if synth.precision != "fp32":
        raise SynthesisError(f"adapter voices are served at precision fp32, not {synth.precision!r}")
    adapters: list[lora.Adapter] = []
    if lora.is_adapter_file(gpt):
        adapters.append(_adapter(gpt, "gpt", backbone.gpt, backbone.fingerprints["gpt"], name))
        generator = backbone.generator
    else:
        own = load_gpt(gpt)[0].eval()
        if not torch.cuda.is_available():
            relayout_for_cpu_decoding_(own)
        generator = TokenGenerator(own)
    if lora.is_adapter_file(sovits):
        adapters.append(_adapter(sovits, "sovits", backbone.sovits, backbone.fingerprints["sovits"], name))
        sovits_model = backbone.sovits
    else:
        sovits_model = load_sovits(sovits).model.prepare_for_inference()
    # resident for many requests: keep the reference's style, not its spectrogram (1000x larger)
    ref = synth.reference(reference, sovits_model).compact(sovits_model, adapters)
    return Voice(name, generator, sovits_model, ref,
                 synth.prompt_unit(prompt_text, prompt_lang, generator.config.bert_dim), tuple(adapters))


def _adapter(path: str | Path, stage: str, model, fingerprint: str, name: str) -> lora.Adapter:
    loaded = lora.load_adapter(path)
    if loaded.spec.stage != stage:
        raise lora.AdapterError(f"voice {name}: its {stage} file is a {loaded.spec.stage} adapter")
    lora.check_base(loaded, fingerprint, what=f"voice {name}'s {stage} adapter")
    # kept in float16, as in the file (exact: each call widens it to the activations' float32)
    return loaded.build(model, fingerprint=fingerprint, dtype=torch.float16)
