"""The `voicefleet` command line: thin typer commands over the Python API.

    voicefleet --help
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="GPT-SoVITS v2 voice cloning at cluster scale on Ray.")
from .cli_support import UserError, console, user_facing


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details."),
          version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(f"voicefleet {__version__}")
        raise typer.Exit()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command("init-pretrained")
@user_facing
def init_pretrained_cmd(
    folder: Path = typer.Argument(..., help="Where to write the pretrained folder."),
    tiny: bool = typer.Option(False, "--tiny", help="Tiny models for tests and demos (a few MB)."),
    full: bool = typer.Option(False, "--full", help="Official sizes, random weights (for benchmarks)."),
    seed: int = typer.Option(0, help="Random seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
) -> None:
    """Write a random-initialised pretrained folder in the official GPT-SoVITS layout."""
    from .models.pretrained import init_pretrained

    if tiny == full:
        raise UserError("choose exactly one of --tiny or --full")
    paths = init_pretrained(folder, "tiny" if tiny else "full", seed=seed, overwrite=overwrite)
    table = Table(title=f"pretrained folder ({'tiny' if tiny else 'full'}, random weights)")
    table.add_column("part")
    table.add_column("path")
    for part in ("hubert", "bert", "gpt", "sovits_g", "sovits_d"):
        table.add_row(part, str(getattr(paths, part)))
    Console().print(table)


@app.command("inspect")
@user_facing
def inspect_cmd(path: Path = typer.Argument(..., help="An official .pth / .ckpt weight file.")) -> None:
    """Say what kind of GPT-SoVITS weight file PATH is and check that it loads."""
    from .models.inspect import inspect_checkpoint

    report = inspect_checkpoint(path)
    table = Table(title=str(path), show_header=False)
    for key, value in report.items():
        table.add_row(key, str(value))
    Console().print(table)


LANGS_HELP = "zh (Chinese with English words), all_zh, en, or auto (detect per piece)"


@app.command("synthesize")
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
    from .models.audio_io import write_audio
    from .models.pipeline import SynthesisParams, Synthesizer
    from .models.pretrained import find_pretrained
    from .models.symbols import phoneme_ids

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


def _register_subcommands() -> None:
    # platform commands live beside the code they drive; they import this module's helpers
    from .platform.cli_prepare import prepare_cmd, slice_cmd
    from .platform.cli_train import train_app
    from .serve.cli import serve_cmd
    from .recipes.cli import run_cmd
    from .tuning.cli import tune_cmd

    app.command("prepare")(prepare_cmd)
    app.command("slice")(slice_cmd)
    app.add_typer(train_app, name="train")
    app.command("serve")(serve_cmd)
    app.command("tune")(tune_cmd)
    app.command("run")(run_cmd)


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
