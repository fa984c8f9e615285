"""Text front end dispatcher: text -> normalised text, phonemes and phoneme ids.

Two entry points, both reproducing GPT-SoVITS v2:

* `clean_text(text, language)` is the official ``text.cleaner.clean_text(text, language, "v2")``
  followed by ``cleaned_text_to_sequence``: one language, no splitting. Data preparation uses it
  (the official ``1-get-text`` step). Chinese Latin letters are simply dropped on this path.
* `phones_and_bert_segments(text, mode)` is the language handling of the official
  ``TextPreprocessor.get_phones_and_bert`` (inference): the text is cut into Chinese and English
  pieces (`voicefleet.text.langsplit`), each piece is cleaned by its own language, and if
  the whole result has fewer than 6 phones the official retry runs once more with "." in front
  of the text. BERT features are not computed here: the caller computes them for the Chinese
  segments from ``norm_text`` and ``word2ph`` (zeros for English), as the official code does.

Modes (the official UI choices voicefleet supports): ``"all_zh"`` (中文), ``"zh"`` (中英混合),
``"en"`` (英文), ``"auto"`` (多语种混合; Japanese or Korean pieces are refused). Language and mode
codes are case-insensitive. Japanese, Korean and Cantonese are not implemented and raise
`TextFrontendError`, as does empty text.

Nothing heavy is imported with this module: the language front ends, their dictionaries, the
tagger and the language detector load on first use and are cached for the process.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Sequence

from voicefleet.text.errors import TextFrontendError

logger = logging.getLogger(__name__)

LANGUAGES = ("zh", "en")
MODES = ("all_zh", "zh", "en", "auto")
# Official get_phones_and_bert retries with a "." in front when the first pass is shorter.
MIN_PHONES = 6


@dataclass(frozen=True)
class CleanedText:
    """One language's cleaner output.

    ``word2ph`` (Chinese only, else None) has one entry per character of ``norm_text`` and says
    how many of ``phones`` that character produced; the caller needs it to spread BERT features.
    """

    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None


@dataclass(frozen=True)
class Segment:
    """One piece of the inference text, cleaned in its own language (``"zh"`` or ``"en"``)."""

    text: str
    lang: str
    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None


def _unsupported(code: str, allowed_codes) -> TextFrontendError:
    allowed = ", ".join(repr(c) for c in allowed_codes)
    return TextFrontendError(
        f"unsupported language {code!r} (allowed: {allowed}): voicefleet supports zh, en and mixed zh/en")


def _check_text(text: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise TextFrontendError("empty text: give some Chinese or English text to speak")


def _cleaner(language: str):
    """The module that cleans one language: ``clean(text) -> (norm_text, phones, word2ph)``."""
    if language == "en":
        from voicefleet.text import english

        return english
    try:
        from voicefleet.text import chinese
    except ImportError as exc:  # the Chinese front end is a separate module
        raise TextFrontendError(f"the Chinese front end is not available: {exc}") from exc
    return chinese


def _to_cleaned(norm_text: str, phones: Sequence[str], word2ph) -> CleanedText:
    from voicefleet.models.symbols import phoneme_ids, symbol_to_id

    table = symbol_to_id()
    # Official clean_text maps anything outside the v2 table to UNK, whatever the language.
    phones = ["UNK" if p not in table else p for p in phones]
    return CleanedText(norm_text, phones, phoneme_ids(phones), list(word2ph) if word2ph is not None else None)


def _clean(text: str, language: str) -> CleanedText:
    norm_text, phones, word2ph = _cleaner(language).clean(text)
    return _to_cleaned(norm_text, phones, word2ph)


def clean_text(text: str, language: str) -> CleanedText:
    """Official ``clean_text(text, language, "v2")`` plus phoneme ids, for ``"zh"`` or ``"en"``."""
    _check_text(text)
    lang = str(language).lower()
    if lang not in LANGUAGES:
        raise _unsupported(str(language), LANGUAGES)
    return _clean(text, lang)


def _segments_once(text: str, mode: str) -> list[Segment]:
    from voicefleet.text.langsplit import pieces_for_mode

    pieces = pieces_for_mode(text, mode)
    for piece in pieces:
        if piece.lang not in LANGUAGES:  # only "auto" can get here, with a Japanese or Korean piece
            raise TextFrontendError(
                f"unsupported language {piece.lang!r} detected in {piece.text!r}: voicefleet supports zh, en and "
                "mixed zh/en (mode 'zh' reads every non-English piece as Chinese)")
    segments = []
    for piece in pieces:
        cleaned = _clean(piece.text, piece.lang)  # a piece may be punctuation only: no empty check
        segments.append(Segment(piece.text, piece.lang, cleaned.norm_text, cleaned.phones, cleaned.phone_ids,
                                cleaned.word2ph))
    return segments


def phones_and_bert_segments(text: str, mode: str) -> list[Segment]:
    """Official ``get_phones_and_bert`` language handling, without the BERT features.

    Returns the segments of the pass whose phones reach the GPT: their phones joined together are
    the model input. When the first pass gives fewer than `MIN_PHONES` phones the official code
    runs again on ``"." + text``; the segments returned are then those of that second pass (their
    texts start with the ".").
    """
    _check_text(text)
    key = str(mode).lower()
    if key not in MODES:
        raise _unsupported(str(mode), MODES)
    text = re.sub(r" {2,}", " ", text)  # official: runs of spaces collapse first (also before the retry)
    segments = _segments_once(text, key)
    if sum(len(s.phones) for s in segments) < MIN_PHONES:
        logger.debug("fewer than %d phones for %r: retrying with a leading '.'", MIN_PHONES, text)
        segments = _segments_once("." + text, key)
    return segments
