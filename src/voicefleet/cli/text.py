"""`voicefleet phonemes`: how synthesis reads a text (normalised text, phones, phone ids), as JSON.

    voicefleet phonemes "今日はいい天気ですね。" --lang ja
    voicefleet phonemes --batch lines.jsonl --lang zh > phonemes.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer

from voicefleet.cli.common import UserError, annotated_option, console, field_option, user_facing
from voicefleet.inference.params import DEFAULT_LANG, LangField, SynthesisParams
from voicefleet.text.g2pw import G2PWModelField


def _jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) per non-blank line; a line that is not JSON is passed on as
    its error, so it gets its own error object in the output."""
    try:
        handle = path.open(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read --batch file {path}: {exc.strerror or exc}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, ValueError(f"not a JSON line ({exc.msg} at column {exc.colno})")


def _dump(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@user_facing
def phonemes_cmd(
    text: Optional[str] = typer.Argument(None, help="Text to read (or --batch)."),
    lang: str = annotated_option(LangField, DEFAULT_LANG, "--lang",
                                 help="Language of the text (with --batch: of lines without a \"lang\")."),
    batch: Optional[Path] = typer.Option(None, "--batch", help="JSON Lines file of {\"text\": ..., \"lang\": ...}; "
                                         "one JSON object per line is written to stdout."),
    text_split_method: str = field_option(SynthesisParams, "text_split_method"),
    g2pw_model: Optional[Path] = annotated_option(G2PWModelField, None, "--g2pw-model"),
    pretrained: Optional[Path] = typer.Option(None, "--pretrained", help="Official pretrained folder: its BERT "
                                              "tokenizer is g2pW's (needed with --g2pw-model only)."),
) -> None:
    """Print the normalised text, phones and phone ids synthesis would build, as JSON."""
    from voicefleet.text.frontend import check_mode
    from voicefleet.text.phonemes import phonemes, phonemes_batch

    if (text is None) == (batch is None):
        raise UserError("give exactly one of TEXT or --batch FILE.jsonl")
    try:
        check_mode(lang)
    except ValueError as exc:
        raise UserError(f"--lang: {exc}") from None
    if g2pw_model is not None:
        from voicefleet.models.pretrained import find_pretrained
        from voicefleet.text.g2pw import check_folder, enable

        if pretrained is None:
            raise UserError("--g2pw-model needs --pretrained (g2pW uses its BERT tokenizer)")
        check_folder(g2pw_model)
        enable(g2pw_model, find_pretrained(pretrained).bert)
    if text is not None:
        _dump(phonemes(text, lang, text_split_method))
        return

    failed = total = 0
    for result in phonemes_batch(_jsonl(batch), lang, text_split_method):
        total += 1
        failed += "error" in result
        _dump(result)
    if failed:
        raise UserError(f"{failed} of {total} lines of {batch} failed (see their \"error\" objects)")
    console.print(f"{total} lines read", highlight=False)
