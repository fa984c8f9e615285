"""`voicefleet synthesize`: speech in a reference voice, on this machine.

    voicefleet synthesize --pretrained pretrained_models --ref-audio ref.wav --prompt-text "..." \
        --text "你好" --lang zh -o out.wav --seed 0
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from voicefleet.cli.common import UserError, console, user_facing

LANGS_HELP = "zh (Chinese with English words), all_zh, en, or auto (detect per piece)"


@user_facing
def synthesize_cmd(
    pretrained: Path = typer.Option(..., "--pretrained", help="Official pretrained folder (HuBERT, BERT, GPT, SoVITS)."),
    ref_audio: Path = typer.Option(..., "--ref-audio", help="Reference clip of the voice, 3-10 s."),
    output: Path = typer.Option(..., "--output", "-o", help="Output file: .wav, .flac, .ogg or .pcm (raw s16le)."),
    text: Optional[str] = typer.Option(None, "--text", help="Text to speak."),
    lang: str = typer.Option("zh", "--lang", help=f"Language of --text: {LANGS_HELP}."),
    prompt_text: str = typer.Option("", "--prompt-text", help="Transcript of the reference clip (recommended)."),
    prompt_lang: Optional[str] = typer.Option(None, "--prompt-lang", help="Language of --prompt-text (default: --lang)."),
    phonemes: Optional[str] = typer.Option(None, "--phonemes", help="Instead of --text: v2 phoneme symbols, "
                                           "space separated, '|' between fragments."),
    gpt: Optional[Path] = typer.Option(None, "--gpt", help="GPT .ckpt (default: the pretrained one)."),
    sovits: Optional[Path] = typer.Option(None, "--sovits", help="SoVITS .pth (default: the pretrained s2G)."),
    top_k: int = typer.Option(15, min=1), top_p: float = typer.Option(1.0, min=0.01, max=1.0),
    temperature: float = typer.Option(1.0, min=0.0), repetition_penalty: float = typer.Option(1.35, min=0.01),
    speed: float = typer.Option(1.0, min=0.25, max=4.0), noise_scale: float = typer.Option(0.5, min=0.0),
    text_split_method: str = typer.Option("cut5", help="cut0 (none) .. cut5 (every punctuation mark)."),
    batch_size: int = typer.Option(1, min=1, max=64, help="Fragments decoded together."),
    fragment_interval: float = typer.Option(0.3, min=0.0, max=5.0, help="Seconds of silence after each fragment."),
    seed: Optional[int] = typer.Option(None, help="Seed for reproducible output."),
    max_tokens: int = typer.Option(1500, min=1, max=1500, help="Cap on semantic tokens per fragment (25 per s)."),
    precision: str = typer.Option("fp32", help="fp32 (official numerics) or fast (int8/bf16 on CPU, ~2-3x faster)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Synthesise speech in the reference voice and write an audio file."""
    from voicefleet.inference.audio_io import write_audio
    from voicefleet.inference.pipeline import SynthesisParams, Synthesizer
    from voicefleet.models.pretrained import find_pretrained
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
    params = SynthesisParams(top_k=top_k, top_p=top_p, temperature=temperature,
                             repetition_penalty=repetition_penalty, speed=speed, noise_scale=noise_scale, seed=seed,
                             max_tokens=max_tokens, text_split_method=text_split_method, batch_size=batch_size,
                             fragment_interval=fragment_interval)
    paths = find_pretrained(pretrained)
    synth = Synthesizer.from_pretrained(paths, precision=precision)
    voice = synth.load_voice("cli", gpt or paths.gpt, sovits or paths.sovits_g, ref_audio, prompt_text,
                             prompt_lang or lang)
    if text is not None:
        audio = synth.synthesize(voice, text, lang, params)
    else:
        audio = synth.synthesize_units(voice, synth.phoneme_units(fragments, voice), params)
    write_audio(output, audio)
    console.print(f"wrote {output} ({len(audio) / 32000:.2f} s at 32 kHz)")
