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

At precision `fast` the backbone is the reduced-precision pair (`voicefleet.inference.fast`: int8
GPT linears, bf16 decoder), built once; adapters add their updates on top of those modules,
unmerged, in fp32 or bf16 as each module computes (`voicefleet.inference.fast_adapters`). The
fp32 weights are then dropped: the backbone keeps only their shapes (on the "meta" device), which
adapters are built against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from voicefleet.inference.generation import TokenGenerator, relayout_for_cpu_decoding_
from voicefleet.inference.params import PRECISIONS
from voicefleet.inference.pipeline import Synthesizer, Voice
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
    # stage -> the fp32 model adapters are built against: the hooked model itself at fp32, its
    # shapes only (weights on "meta") at fast precision
    layouts: dict[str, nn.Module]
    precision: str = "fp32"

    @property
    def gpt(self) -> GPT:
        return self.generator.gpt

    @classmethod
    def from_models(cls, gpt: GPT, sovits: SoVITS, *, precision: str = "fp32") -> "Backbone":
        """Hook `gpt` and `sovits` (taken over: used for inference only from now on), or at
        precision `fast` their reduced-precision copies (the fp32 weights are then released)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        gpt = gpt.eval()
        sovits = sovits.prepare_for_inference()
        sovits.posterior_encoder = None  # training only; not part of the fingerprint either
        fingerprints = {"gpt": lora.base_fingerprint_of(gpt, "gpt"), "sovits": lora.base_fingerprint_of(sovits, "sovits")}
        if precision == "fast":
            from voicefleet.inference.fast import optimize_for_cpu_inference

            generator, fast_sovits = optimize_for_cpu_inference(gpt, sovits)
            layouts = {"gpt": gpt.to("meta"), "sovits": sovits.to("meta")}
            lora.attach_all(generator.gpt, "gpt", like=layouts["gpt"])
            lora.attach_all(fast_sovits, "sovits", like=layouts["sovits"])  # the bf16 decoder applies its own
            return cls(generator, fast_sovits, fingerprints, layouts, precision)
        if not torch.cuda.is_available():
            relayout_for_cpu_decoding_(gpt)
        lora.attach_all(gpt, "gpt")
        lora.attach_all(sovits, "sovits")
        return cls(TokenGenerator(gpt), sovits, fingerprints, {"gpt": gpt, "sovits": sovits}, precision)

    @classmethod
    def load(cls, paths: PretrainedPaths, *, precision: str = "fp32") -> "Backbone":
        """The pretrained folder's GPT and SoVITS generator, at `precision` (the synthesizer's)."""
        backbone = cls.from_models(load_gpt(paths.gpt)[0], load_sovits(paths.sovits_g).model, precision=precision)
        logger.info("backbone loaded from %s at %s (gpt %s, sovits %s)", paths.root, precision,
                    backbone.fingerprints["gpt"][:19], backbone.fingerprints["sovits"][:19])
        return backbone

    def adapter(self, loaded: lora.AdapterFile, stage: str) -> lora.Adapter:
        """`loaded` bound to this backbone's `stage` (refused when trained on another base), kept in
        float16 as in the file (exact: each call widens it to the precision it computes in)."""
        return loaded.build(self.layouts[stage], fingerprint=self.fingerprints[stage], dtype=torch.float16,
                            device="cpu")

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
    (loaded as its own model: a voice may adapt one stage only), at the synthesizer's precision,
    which must be the backbone's."""
    if synth.precision != backbone.precision:
        raise ValueError(f"a {synth.precision} synthesizer with a {backbone.precision} backbone: "
                         "load the backbone at the synthesizer's precision")
    fast = synth.precision == "fast"
    adapters: list[lora.Adapter] = []
    if lora.is_adapter_file(gpt):
        adapters.append(_adapter(gpt, "gpt", backbone, name))
        generator = backbone.generator
    else:
        own = load_gpt(gpt)[0].eval()
        if fast:
            from voicefleet.inference.fast import fast_generator

            generator = fast_generator(own)
        else:
            if not torch.cuda.is_available():
                relayout_for_cpu_decoding_(own)
            generator = TokenGenerator(own)
    if lora.is_adapter_file(sovits):
        adapters.append(_adapter(sovits, "sovits", backbone, name))
        sovits_model = backbone.sovits
    else:
        sovits_model = load_sovits(sovits).model.prepare_for_inference()
        if fast:
            from voicefleet.inference.fast import fast_sovits

            sovits_model = fast_sovits(sovits_model)
    # resident for many requests: keep the reference's style, not its spectrogram (1000x larger)
    ref = synth.reference(reference, sovits_model).compact(sovits_model, adapters)
    return Voice(name, generator, sovits_model, ref,
                 synth.prompt_unit(prompt_text, prompt_lang, generator.config.bert_dim), tuple(adapters))


def _adapter(path: str | Path, stage: str, backbone: Backbone, name: str) -> lora.Adapter:
    loaded = lora.load_adapter(path)
    if loaded.spec.stage != stage:
        raise lora.AdapterError(f"voice {name}: its {stage} file is a {loaded.spec.stage} adapter")
    lora.check_base(loaded, backbone.fingerprints[stage], what=f"voice {name}'s {stage} adapter")
    return backbone.adapter(loaded, stage)
