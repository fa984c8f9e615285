"""Text front end dispatcher: text -> normalised text, phonemes and phoneme ids.

Two entry points, both reproducing GPT-SoVITS v2:

* `clean_text(text, language)` is the official ``text.cleaner.clean_text(text, language, "v2")``
  followed by ``cleaned_text_to_sequence``: one language (`LANGUAGES`), no splitting. Data
  preparation uses it (the official ``1-get-text`` step).
* `phones_and_bert_segments(text, mode)` is the language handling of the official
  ``TextPreprocessor.get_phones_and_bert`` (inference): the text is cut into language pieces
  (`voicefleet.text.langsplit`), each piece is cleaned by its own language, and if the whole
  result has fewer than 6 phones the official retry runs once more with "." in front of the
  text. BERT features are not computed here: the caller computes them for the Chinese segments
  from ``norm_text`` and ``word2ph`` and uses zeros for every other language, as the official
  code does.

Modes (`MODES`, the official UI choices): ``"all_zh"`` (中文), ``"zh"`` (中英混合), ``"en"`` (英文),
``"all_ja"`` (日文), ``"ja"`` (日英混合), ``"all_ko"`` (韩文), ``"ko"`` (韩英混合), ``"all_yue"`` (粤语),
``"yue"`` (粤英混合), ``"auto"`` (多语种混合) and ``"auto_yue"`` (多语种混合(粤语)). In every mode English
pieces go to the English cleaner; "all_X" reads every other piece as X, "X" merges every
non-English run into one X piece (kanji cannot be told apart from hanzi), "auto" keeps the
detected language of each piece and "auto_yue" reads its Chinese pieces as Cantonese. Language
and mode codes are case-insensitive; anything else, and empty text, raise `TextFrontendError`.

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

LANGUAGES = ("zh", "en", "ja", "ko", "yue")
MODES = ("all_zh", "zh", "en", "auto", "all_ja", "ja", "all_ko", "ko", "all_yue", "yue", "auto_yue")
# Symbols that are not speech: marks, pauses, UNK and the Korean space/unknown marks.
_NOT_SPEECH = frozenset(["!", "?", "…", ",", ".", "-", "_", "SP", "SP2", "SP3", "UNK", "空", "停"])
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
    """One piece of the inference text, cleaned in its own language (one of `LANGUAGES`)."""

    text: str
    lang: str
    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None


def _unsupported(code: str, allowed_codes) -> TextFrontendError:
    allowed = ", ".join(allowed_codes)
    return TextFrontendError(f"unsupported language {code!r}: use one of {allowed}")


def check_mode(mode: str) -> str:
    """``mode`` lower-cased if it is one of `MODES`, else `TextFrontendError` listing them."""
    key = str(mode).lower()
    if key not in MODES:
        raise _unsupported(str(mode), MODES)
    return key


def _check_text(text: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise TextFrontendError("empty text: give some text to speak")


_CLEANERS = {"zh": "chinese", "en": "english", "ja": "japanese", "ko": "korean", "yue": "cantonese"}


def _cleaner(language: str):
    """The module that cleans one language: ``clean(text) -> (norm_text, phones, word2ph)``."""
    import importlib

    name = _CLEANERS[language]
    try:
        return importlib.import_module(f"voicefleet.text.{name}")
    except ImportError as exc:
        raise TextFrontendError(f"the {name} front end is not available: {exc}") from exc


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
    """Official ``clean_text(text, language, "v2")`` plus phoneme ids, for one of `LANGUAGES`."""
    _check_text(text)
    lang = str(language).lower()
    if lang not in LANGUAGES:
        raise _unsupported(str(language), LANGUAGES)
    return _clean(text, lang)


def _segments_once(text: str, mode: str) -> list[Segment]:
    from voicefleet.text.langsplit import pieces_for_mode

    segments = []
    for piece in pieces_for_mode(text, mode):
        cleaned = _clean(piece.text, piece.lang)  # a piece may be punctuation only: no empty check
        segments.append(Segment(piece.text, piece.lang, cleaned.norm_text, cleaned.phones, cleaned.phone_ids,
                                cleaned.word2ph))
    return segments


def has_speech(phones: Sequence[str]) -> bool:
    """Whether ``phones`` hold anything to say: a phone that is not a mark, pause or UNK."""
    return any(p not in _NOT_SPEECH for p in phones)


def has_speech_ids(phone_ids: Sequence[int]) -> bool:
    """`has_speech` for phoneme ids."""
    from voicefleet.models.symbols import symbols_v2

    table = symbols_v2()
    return any(table[i] not in _NOT_SPEECH for i in phone_ids)


def require_speech(phones: Sequence[str], text: str, mode: str) -> None:
    """Raise `TextFrontendError` when ``text`` gave no phoneme to say in ``mode``."""
    if not has_speech(phones):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise TextFrontendError(
            f"no phonemes in {shown!r} with language {mode!r}: nothing in it can be read in that language "
            "(check the language: characters of another script are dropped)")


def phones_and_bert_segments(text: str, mode: str) -> list[Segment]:
    """Official ``get_phones_and_bert`` language handling, without the BERT features.

    Returns the segments of the pass whose phones reach the GPT: their phones joined together are
    the model input. When the first pass gives fewer than `MIN_PHONES` phones the official code
    runs again on ``"." + text``; the segments returned are then those of that second pass (their
    texts start with the ".").
    """
    _check_text(text)
    key = check_mode(mode)
    text = re.sub(r" {2,}", " ", text)  # official: runs of spaces collapse first (also before the retry)
    segments = _segments_once(text, key)
    if sum(len(s.phones) for s in segments) < MIN_PHONES:
        logger.debug("fewer than %d phones for %r: retrying with a leading '.'", MIN_PHONES, text)
        segments = _segments_once("." + text, key)
    return segments
