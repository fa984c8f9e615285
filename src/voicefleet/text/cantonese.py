"""Cantonese (yue) front end: GPT-SoVITS v2 ``clean_text(text, "yue", "v2")``.

    norm_text = normalize(text)              # the Chinese normaliser, then Cantonese punctuation
    syllables = jyutping(norm_text)          # ToJyutping, one reading per character
    phones, word2ph = g2p(norm_text)         # "Y"-prefixed v2 symbols, 2 per syllable
    norm_text, phones, word2ph = clean(text) # all three, unknown symbols as UNK

`normalize` is the Chinese normaliser of `voicefleet.text.zh_normalize` sentence by sentence, so
Mandarin number rules apply (``3:30`` -> 三点半, ``95%`` -> 百分之九十五, long digit runs with 幺,
``m``/``s`` inside English words -> 米/秒) and traditional characters become simplified before
ToJyutping reads them. The official Cantonese punctuation table then maps marks (quotes and
brackets to an apostrophe, which the next step deletes) and everything outside
``\\u4e00-\\u9fa5`` and the v2 punctuation is deleted: Latin letters, CJK Extension A (㗎), kana,
Hangul. Unlike the Chinese path, 嗯 and 呣 keep their spelling and runs of marks are not collapsed.

`g2p` follows the official Jyutping split, odd cases included: the first entry of the official
``INITIALS`` list that starts the toneless syllable is its "initial", and that list also holds
rhymes, so aa3 -> ``Yaa Ya3``, on1 -> ``Yon Yn1``, and an empty final repeats the initial's last
letter (syllabic m4 -> ``Ym Ym4``, ng6 -> ``Yng Yg6``). The initial is written "Y" + initial
without a tone, the final "Y" + final + tone; punctuation stays bare. ToJyutping gives a few
rare characters a two-syllable reading ("cin1 ngaa5"); the official treats it as one syllable,
whose final is then no v2 symbol and becomes UNK.

ToJyutping (its dictionary ships inside the wheel) is imported on first use.
"""

from __future__ import annotations

import re
from functools import lru_cache

from voicefleet.models.symbols import PUNCTUATION, symbol_to_id
from voicefleet.text import zh_normalize
from voicefleet.text.errors import TextFrontendError

# The official's INITIALS, in its order: the first prefix match wins, so the rhymes listed here
# ("aa", "on", "ung" ...) act as initials of syllables that have none.
INITIALS = (
    "aa", "aai", "aak", "aap", "aat", "aau", "ai", "au", "ap", "at", "ak", "a", "p", "b", "e", "ts", "t",
    "dz", "d", "kw", "k", "gw", "g", "f", "h", "l", "m", "ng", "n", "s", "y", "w", "c", "z", "j", "ong",
    "on", "ou", "oi", "ok", "o", "uk", "ung", "sp", "spl", "spn", "sil",
)

# The official Cantonese punctuation table; "..." is its only key longer than one character.
_MARKS = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    "$": ".", "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'", "（": "'", "）": "'", "(": "'", ")": "'",
    "《": "'", "》": "'", "【": "'", "】": "'", "[": "'", "]": "'", "—": "-", "～": "-", "~": "-",
    "「": "'", "」": "'",
}
_MARKS_TABLE = str.maketrans(_MARKS)
_NOT_KEPT = re.compile("[^\u4e00-\u9fa5" + re.escape("".join(PUNCTUATION)) + "]+")
_ALL_PUNCTUATION = re.compile("^[" + re.escape("".join(PUNCTUATION)) + "]+$")
_ONE_MARK = re.compile("([" + re.escape("".join(PUNCTUATION)) + "])")
_JYUTPING = re.compile(r"^([a-z]+[1-6]+[ ]?)+$")  # one syllable, or several separated by spaces
_INSTALL = "pip install ToJyutping==3.2.0"


def replace_punctuation(sentence: str) -> str:
    """Official Cantonese ``replace_punctuation``: map marks, keep only CJK and v2 punctuation."""
    sentence = sentence.replace("...", "…").translate(_MARKS_TABLE)
    return _NOT_KEPT.sub("", sentence)


def normalize(text: str) -> str:
    """Official Cantonese ``text_normalize``: the Chinese TextNormalizer, then `replace_punctuation`."""
    return "".join(replace_punctuation(zh_normalize.normalize_sentence(sentence))
                   for sentence in zh_normalize.split_sentences(text))


@lru_cache(maxsize=1)
def _readings():
    try:
        import ToJyutping
    except ImportError as exc:
        raise TextFrontendError(f"Cantonese needs the ToJyutping package ({exc}): {_INSTALL}") from exc
    return ToJyutping.get_jyutping_list


def jyutping(norm_text: str) -> list[str]:
    """Normalised text -> one Jyutping reading per character, punctuation marks as themselves.

    ToJyutping picks each character's reading in context (银行 hong4, 行街 haang4). Raises
    `TextFrontendError` for a character with no reading (the official fails on it too).
    """
    readings: list[str] = []
    for char, reading in _readings()(norm_text):
        if _ALL_PUNCTUATION.match(char):
            readings += [mark for mark in _ONE_MARK.split(char) if mark]
        elif reading is None or not _JYUTPING.search(reading):
            raise TextFrontendError(f"no Cantonese reading for {char!r} in {norm_text!r} (got {reading!r})")
        else:
            readings.append(reading)
    return readings


def _split_syllable(syllable: str) -> tuple[str, str, int]:
    """"hoeng1" -> ("h", "oeng", 1): the official prefix split, an empty final repeats a letter."""
    try:
        tone = int(syllable[-1])
        toneless = syllable[:-1]
    except ValueError:
        tone, toneless = 0, syllable
    for initial in INITIALS:
        if toneless.startswith(initial):
            # The official's "nga" branch cuts after "ng" as well: the same split.
            return initial, toneless[len(initial):] or initial[-1], tone
    raise TextFrontendError(f"Jyutping syllable {syllable!r} starts with none of the official initials")


def syllables_to_phones(syllables: list[str]) -> tuple[list[str], list[int]]:
    """Jyutping syllables and marks -> (v2 phones, phones per syllable or mark)."""
    phones: list[str] = []
    word2ph: list[int] = []
    for syllable in syllables:
        if syllable in PUNCTUATION or syllable == "_":  # the official passes "_" on, as "Y_"
            phones.append(_prefixed(syllable))
            word2ph.append(1)
            continue
        initial, final, tone = _split_syllable(syllable)
        toned_final = f"{final}{tone}" if tone else final
        phones += [_prefixed(initial), _prefixed(toned_final)]
        word2ph.append(2)
    return phones, word2ph


def _prefixed(symbol: str) -> str:
    # "Y" keeps Cantonese symbols apart from Mandarin ones; a bare mark stays bare.
    return symbol if symbol in PUNCTUATION else "Y" + symbol


def g2p(norm_text: str) -> tuple[list[str], list[int]]:
    """Normalised Cantonese text -> (phone symbols, phones per character of ``norm_text``)."""
    return syllables_to_phones(jyutping(norm_text))


def clean(text: str) -> tuple[str, list[str], list[int]]:
    """Official ``clean_text(text, "yue", "v2")`` -> (norm_text, phones, word2ph); UNK outside v2."""
    norm_text = normalize(text)
    phones, word2ph = g2p(norm_text)
    if len(word2ph) != len(norm_text) or sum(word2ph) != len(phones):
        raise TextFrontendError(f"Cantonese g2p of {norm_text!r} does not give one word2ph entry per character")
    known = symbol_to_id()
    return norm_text, [p if p in known else "UNK" for p in phones], word2ph
