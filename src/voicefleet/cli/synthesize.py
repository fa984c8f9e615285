"""`voicefleet synthesize`: speech in a reference voice, on this machine.

    voicefleet synthesize --pretrained pretrained_models --ref-audio ref.wav --prompt-text "..." \
        --text "你好" --lang zh -o out.wav --seed 0
    voicefleet synthesize --engine onnx --onnx-dir voice-onnx --ref-audio ref.wav --text "你好" -o out.wav

With `--engine onnx` nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from voicefleet.cli.common import UserError, annotated_option, console, field_option, user_facing
from voicefleet.inference.params import (DEFAULT_ENGINE, DEFAULT_LANG, DEFAULT_PRECISION, REFERENCE_MAX_S,
                                         REFERENCE_MIN_S, EngineField, LangField, PrecisionField, SynthesisParams)
from voicefleet.models.config import SAMPLE_RATE
from voicefleet.text.g2pw import G2PWModelField

P = SynthesisParams


@user_facing
def synthesize_cmd(
    pretrained: Optional[Path] = typer.Option(None, "--pretrained", help="Official pretrained folder (HuBERT, BERT, "
                                                                        "GPT, SoVITS); needed by the torch engine."),
    ref_audio: Optional[Path] = typer.Option(None, "--ref-audio", help=f"Reference clip of the voice, "
                                             f"{REFERENCE_MIN_S:g}-{REFERENCE_MAX_S:g} s (with --engine onnx: default "
                                             "the clip stored in the folder, if any)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output file: .wav, .flac, .ogg or .pcm (raw s16le)."),
    text: Optional[str] = typer.Option(None, "--text", help="Text to speak."),
    lang: str = annotated_option(LangField, DEFAULT_LANG, "--lang"),
    prompt_text: str = typer.Option("", "--prompt-text", help="Transcript of the reference clip (recommended)."),
    prompt_lang: Optional[str] = annotated_option(LangField, None, "--prompt-lang",
                                                  help="Language of --prompt-text (default: --lang)."),
    phonemes: Optional[str] = typer.Option(None, "--phonemes", help="Instead of --text: v2 phoneme symbols, "
                                           "space separated, '|' between fragments."),
    gpt: Optional[Path] = typer.Option(None, "--gpt", help="GPT .ckpt (default: the pretrained one)."),
    sovits: Optional[Path] = typer.Option(None, "--sovits", help="SoVITS .pth (default: the pretrained s2G)."),
    top_k: int = field_option(P, "top_k"),
    top_p: float = field_option(P, "top_p"),
    temperature: float = field_option(P, "temperature"),
    repetition_penalty: float = field_option(P, "repetition_penalty"),
    speed: float = field_option(P, "speed"),
    noise_scale: float = field_option(P, "noise_scale"),
    text_split_method: str = field_option(P, "text_split_method"),
    batch_size: int = field_option(P, "batch_size"),
    fragment_interval: float = field_option(P, "fragment_interval"),
    seed: Optional[int] = field_option(P, "seed"),
    max_tokens: int = field_option(P, "max_tokens"),
    precision: str = annotated_option(PrecisionField, DEFAULT_PRECISION, "--precision"),
    engine: str = annotated_option(EngineField, DEFAULT_ENGINE, "--engine"),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx-dir", help="With --engine onnx: a folder written by "
                                                                     "`voicefleet export onnx`."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    g2pw_model: Optional[Path] = annotated_option(G2PWModelField, None, "--g2pw-model"),
) -> None:
    """Synthesise speech in the reference voice and write an audio file."""
    from voicefleet.inference.audio_io import write_audio
    from voicefleet.models.symbols import phoneme_ids

    if output.exists() and not overwrite:
        raise UserError(f"{output} already exists; pass --overwrite to replace it")
    if (text is None) == (phonemes is None):
        raise UserError("give exactly one of --text or --phonemes")
    fragments = [phoneme_ids(f) for f in phonemes.split("|") if f.strip()] if phonemes is not None else []
    if phonemes is not None and not fragments:
        raise UserError("nothing to synthesise: --phonemes is empty")
    if text is not None and not text.strip():
        raise UserError("nothing to synthesise: --text is empty")
    from voicefleet.text.frontend import check_mode

    for option, mode in (("--lang", lang), ("--prompt-lang", prompt_lang)):
        if mode is not None:
            try:
                check_mode(mode)  # before any model loads
            except ValueError as exc:
                raise UserError(f"{option}: {exc}") from None
    params = SynthesisParams(top_k=top_k, top_p=top_p, temperature=temperature,
                             repetition_penalty=repetition_penalty, speed=speed, noise_scale=noise_scale, seed=seed,
                             max_tokens=max_tokens, text_split_method=text_split_method, batch_size=batch_size,
                             fragment_interval=fragment_interval)
    if g2pw_model is not None and engine != "onnx":
        from voicefleet.text.g2pw import check_folder

        check_folder(g2pw_model)  # before any model loads
    if engine == "onnx":
        audio = _synthesize_onnx(onnx_dir, ref_audio, prompt_text, prompt_lang, lang, text, fragments, params,
                                 gpt=gpt, sovits=sovits, pretrained=pretrained, precision=precision,
                                 g2pw_model=g2pw_model)
        write_audio(output, audio)
        console.print(f"wrote {output} ({len(audio) / SAMPLE_RATE:.2f} s at {SAMPLE_RATE / 1000:g} kHz)")
        return
    from voicefleet.inference.pipeline import Synthesizer
    from voicefleet.models.pretrained import find_pretrained

    if pretrained is None or ref_audio is None or onnx_dir is not None:
        raise UserError("the torch engine needs --pretrained and --ref-audio (--onnx-dir goes with --engine onnx)")
    paths = find_pretrained(pretrained)
    if g2pw_model is not None:
        from voicefleet.text.g2pw import enable

        enable(g2pw_model, paths.bert)
    synth = Synthesizer.from_pretrained(paths, precision=precision)
    voice = synth.load_voice("cli", gpt or paths.gpt, sovits or paths.sovits_g, ref_audio, prompt_text,
                             prompt_lang or lang)
    if text is not None:
        audio = synth.synthesize(voice, text, lang, params)
    else:
        audio = synth.synthesize_units(voice, synth.phoneme_units(fragments, voice), params)
    write_audio(output, audio)
    console.print(f"wrote {output} ({len(audio) / SAMPLE_RATE:.2f} s at {SAMPLE_RATE / 1000:g} kHz)")


def _synthesize_onnx(onnx_dir, ref_audio, prompt_text, prompt_lang, lang, text, fragments, params, *, gpt, sovits,
                     pretrained, precision, g2pw_model):
    """`synthesize --engine onnx`: the folder's graphs on onnxruntime (no torch import)."""
    from voicefleet.inference.onnx_engine import OnnxSynthesizer

    if onnx_dir is None:
        raise UserError("--engine onnx needs --onnx-dir (a folder written by `voicefleet export onnx`)")
    if gpt or sovits or pretrained:
        raise UserError("--gpt, --sovits and --pretrained go with the torch engine; the ONNX folder holds its voice")
    if precision != DEFAULT_PRECISION:
        raise UserError("--precision is a torch-engine option; export with --int8 for a quantised ONNX folder")
    if g2pw_model is not None:
        raise UserError("--g2pw-model is not available with --engine onnx (the dictionary reads polyphonic characters)")
    synth = OnnxSynthesizer(onnx_dir)
    voice = synth.load_voice(ref_audio, prompt_text or None, prompt_lang or (lang if prompt_text else None))
    if text is not None:
        return synth.synthesize(voice, text, lang, params)
    return synth.synthesize_units(voice, synth.phoneme_units(fragments), params)
