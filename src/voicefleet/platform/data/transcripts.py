"""Transcript -> normalised text, phones, phone ids, word2ph, and where BERT features go.

Official data preparation (``1-get-text.py``) runs ``clean_text(text.replace("%", "-")
.replace("￥", ","), lang)`` on each transcript: one language per clip. voicefleet does the same
for en, ja and ko (the Japanese and Korean cleaners read Latin letters themselves: the user
dictionary's katakana, Korean letter names). The Chinese and Cantonese cleaners silently drop
Latin letters, so an English word inside such a transcript loses its phones while its sound
stays in the audio; for these two voicefleet reads the transcript the way the official UI's "zh"
/ "yue" mode (中英混合 / 粤英混合) does at inference instead: when it contains Latin letters it is cut
into pieces (`voicefleet.text.langsplit.pieces_for_mode`), each cleaned in its own language, and
the results joined. A transcript without Latin letters gives exactly the official result.

BERT features exist only for Chinese pieces (official inference and training give every other
language zeros), so each transcript carries `bert_pieces`: the Chinese pieces' normalised text
and word2ph and the phone index where each starts. For a joined transcript, `word2ph` gives each
English piece's phones to its first character and 0 to the rest: there is no per-character
alignment for English, and the sum still equals the phone count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from voicefleet.text.frontend import TextFrontendError, clean_text, has_speech

_LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class BertPiece:
    """A Chinese piece: BERT runs on `norm_text`; its phones start at `phone_start`."""

    norm_text: str
    word2ph: list[int]
    phone_start: int


@dataclass(frozen=True)
class Transcript:
    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None  # None for English clips (the official value)
    bert_pieces: list[BertPiece] = field(default_factory=list)


def official_replacements(text: str) -> str:
    """The two substitutions 1-get-text.py makes before cleaning."""
    return text.replace("%", "-").replace("￥", ",")


def transcribe(text: str, lang: str) -> Transcript:
    """Clean one transcript in one of `voicefleet.text.frontend.LANGUAGES`; raises
    `TextFrontendError` for text it cannot use."""
    text = official_replacements(text)
    if lang in ("en", "ja", "ko"):
        cleaned = clean_text(text, lang)
        result = Transcript(cleaned.norm_text, cleaned.phones, cleaned.phone_ids, None)
    elif lang in ("zh", "yue") and _LATIN.search(text):
        result = _mixed(text, lang)
    elif lang in ("zh", "yue"):
        cleaned = clean_text(text, lang)
        word2ph = list(cleaned.word2ph or [])
        bert = [BertPiece(cleaned.norm_text, word2ph, 0)] if cleaned.phones and lang == "zh" else []
        result = Transcript(cleaned.norm_text, cleaned.phones, cleaned.phone_ids, word2ph, bert)
    else:
        raise TextFrontendError(f"unsupported language {lang!r}: voicefleet prepares zh, en, ja, ko and yue")
    if not has_speech(result.phones):
        raise TextFrontendError(f"transcript {text!r} gives no phones in {lang!r}")
    if result.word2ph is not None and (sum(result.word2ph) != len(result.phones)
                                       or len(result.word2ph) != len(result.norm_text)):
        raise TextFrontendError(f"transcript {text!r}: word2ph does not match the phones and normalised text")
    return result


def _mixed(text: str, lang: str) -> Transcript:
    """A Chinese or Cantonese transcript with Latin letters, cut as the UI's "zh" / "yue" mode does."""
    from voicefleet.text.langsplit import pieces_for_mode

    norm_text, phones, ids, word2ph, bert = "", [], [], [], []
    for piece in pieces_for_mode(text, lang):
        if not piece.text.strip():
            continue
        piece_lang = "en" if piece.lang == "en" else lang
        cleaned = clean_text(piece.text, piece_lang)
        if not cleaned.phones and not cleaned.norm_text:
            continue
        if piece_lang == "en":
            if cleaned.norm_text:
                word2ph += [len(cleaned.phones)] + [0] * (len(cleaned.norm_text) - 1)
            elif cleaned.phones:  # phones without characters cannot be placed
                raise TextFrontendError(f"English piece {piece.text!r} gives phones but no normalised text")
        else:
            if cleaned.phones and piece_lang == "zh":
                bert.append(BertPiece(cleaned.norm_text, list(cleaned.word2ph or []), len(phones)))
            word2ph += list(cleaned.word2ph or [])
        norm_text += cleaned.norm_text
        phones += cleaned.phones
        ids += cleaned.phone_ids
    return Transcript(norm_text, phones, ids, word2ph, bert)
