"""Chinese (zh) front end: GPT-SoVITS v2 ``clean_text(text, "zh", "v2")`` with g2pW switched off.

    norm_text = normalize(text)              # numbers, units, symbols, punctuation -> CJK + ",.!?…-"
    phones, word2ph = g2p(norm_text)         # v2 symbols; word2ph has one entry per character
    norm_text, phones, word2ph = clean(text) # both, plus the official ￥ / ^ pause route

g2p follows the official pypinyin branch: jieba part-of-speech cutting per sentence, the official
merges (不 and 一 with their neighbours, reduplications, runs of third tones, 儿), pypinyin
strict initials/finals with the neutral tone written 5, tone sandhi (不, 一, neutral-tone words,
third-tone runs), the erhua tone rule, and the opencpop initial/final symbols of the v2 table.

With a g2pW model installed (`set_polyphone_model`, normally through `voicefleet.text.g2pw.enable`)
the per-character readings come from it instead of pypinyin, followed by its word overrides, as
the official default (g2pW on) does; merges, tone sandhi and erhua are the same on both paths.

Segmentation uses ``jieba_fast`` when it is installed (the library the official uses) and
``jieba`` otherwise: both ship the same dictionary and part-of-speech model and cut identically,
except that jieba's pure-Python HMM can split runs of rare unknown characters differently inside
``cut_for_search`` (used only to split a word in two for tone sandhi).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from voicefleet.models.symbols import PUNCTUATION, symbol_to_id
from voicefleet.text import zh_normalize
from voicefleet.text.zh_tables import (
    erhua_words,
    never_neutral_tone_words,
    neutral_tone_words,
    syllable_symbols,
)

logger = logging.getLogger(__name__)

Word = tuple[str, str]  # (word, jieba part-of-speech flag)

# Marks before which 一 keeps its first tone instead of becoming yi4 (the official list, which
# lacks "…" and "-": 一… reads yi4).
_SANDHI_BREAKS = "：，；。？！“”‘’':,;.?!"
_SPECIAL_PAUSES = (("￥", "SP2"), ("^", "SP3"))  # the official clean_special route, checked in order
_SENTENCE_CUT = re.compile("(?<=[" + re.escape("".join(PUNCTUATION)) + r"])\s*")
_LATIN = re.compile("[a-zA-Z]+")

# Particles read in the neutral tone at the end of a word.
_NEUTRAL_PARTICLES = "吧呢哈啊呐噻嘛吖嗨呐哦哒额滴哩哟喽啰耶喔诶"
# Characters before 个 that make it a measure word (read ge5) besides digits.
_GE_AS_MEASURE_AFTER = "几有两半多各整每做是"


# ---------------------------------------------------------------------------------------------
# Lazily loaded libraries.


@lru_cache(maxsize=1)
def _jieba() -> tuple[Callable[[str], list], Callable[[str], object]]:
    """(part-of-speech cut, cut_for_search), loaded once with jieba's logging silenced."""
    try:
        import jieba_fast as jieba
        import jieba_fast.posseg as posseg
    except ImportError:
        import jieba
        import jieba.posseg as posseg
    jieba.setLogLevel(logging.CRITICAL)  # it logs the dictionary build at DEBUG to stderr
    logger.debug("word segmentation by %s %s", jieba.__name__, getattr(jieba, "__version__", "?"))
    return posseg.lcut, jieba.cut_for_search


@lru_cache(maxsize=1)
def _pypinyin() -> tuple[Callable[..., list[str]], object]:
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin, Style


def _initials(word: str) -> list[str]:
    lazy_pinyin, style = _pypinyin()
    return lazy_pinyin(word, neutral_tone_with_five=True, style=style.INITIALS)


def _finals(word: str) -> list[str]:
    """Strict finals with tone digits, neutral tone 5 ("ian2", "e5"); punctuation passes through.

    Raises ValueError for a syllable with no final (噷 hm): the official fails on it as well.
    """
    lazy_pinyin, style = _pypinyin()
    finals = lazy_pinyin(word, neutral_tone_with_five=True, style=style.FINALS_TONE3)
    if "" in finals:
        raise ValueError(f"{word!r} has a syllable with no Mandarin final (such as hm or ng)")
    return finals


def _retone(final: str, tone: str) -> str:
    return final[:-1] + tone


def _all_third_tone(finals: Sequence[str]) -> bool:
    return all(f[-1] == "3" for f in finals)


# ---------------------------------------------------------------------------------------------
# Word merges before tone sandhi (the official pre_merge_for_modify, in its order).


def _merge_bu(words: list[Word]) -> list[Word]:
    """不 joins the word after it (不 + 要 -> 不要); a trailing 不 stays alone as an adverb."""
    merged: list[Word] = []
    previous = ""
    for word, pos in words:
        if previous == "不":
            word = "不" + word
        if word != "不":
            merged.append((word, pos))
        previous = word
    if previous == "不":
        merged.append(("不", "d"))
    return merged


def _merge_yi(words: list[Word]) -> list[Word]:
    """听/一/听 -> 听一听 (same verb on both sides), then a lone 一 joins the word after it."""
    merged: list[Word] = []
    i = 0
    while i < len(words):
        word, pos = words[i]
        if 1 <= i < len(words) - 1 and word == "一":
            before, after = merged[-1], words[i + 1]
            if before[0] == after[0] and before[1] == "v" and after[1] == "v":
                merged[-1] = (before[0] + "一" + after[0], before[1])
                i += 2
                continue
        merged.append((word, pos))
        i += 1
    joined: list[Word] = []
    for word, pos in merged:
        if joined and joined[-1][0] == "一":
            joined[-1] = ("一" + word, joined[-1][1])
        else:
            joined.append((word, pos))
    return joined


def _merge_reduplication(words: list[Word]) -> list[Word]:
    merged: list[Word] = []
    for word, pos in words:
        if merged and merged[-1][0] == word:
            merged[-1] = (word + word, merged[-1][1])
        else:
            merged.append((word, pos))
    return merged


def _merge_third_tones(words: list[Word], *, whole_words: bool) -> list[Word]:
    """Join two third-tone neighbours into one word of at most three characters.

    ``whole_words``: both words entirely third tone (first pass); otherwise only the last syllable
    of the first and the first of the second (second pass). A reduplicated first word is left for
    the neutral-tone rule, and a word that was just joined does not join again.
    """
    finals = [_finals(word) for word, _ in words]
    merged: list[Word] = []
    joined_previous = False
    for i, (word, pos) in enumerate(words):
        joins = False
        if i >= 1 and not joined_previous:
            if whole_words:
                third = _all_third_tone(finals[i - 1]) and _all_third_tone(finals[i])
            else:
                third = finals[i - 1][-1][-1] == "3" and finals[i][0][-1] == "3"
            previous = words[i - 1][0]
            reduplicated = len(previous) == 2 and previous[0] == previous[1]
            joins = third and not reduplicated and len(previous) + len(word) <= 3
        if joins:
            merged[-1] = (merged[-1][0] + word, merged[-1][1])
        else:
            merged.append((word, pos))
        joined_previous = joins
    return merged


def _merge_er(words: list[Word]) -> list[Word]:
    merged: list[Word] = []
    for i, (word, pos) in enumerate(words):
        if i >= 1 and word == "儿" and words[i - 1][0] != "#":
            merged[-1] = (merged[-1][0] + word, merged[-1][1])
        else:
            merged.append((word, pos))
    return merged


def merge_words(words: list[Word]) -> list[Word]:
    """jieba (word, pos) pairs -> the units that tone sandhi and erhua work on."""
    words = _merge_bu(words)
    words = _merge_yi(words)
    words = _merge_reduplication(words)
    words = _merge_third_tones(words, whole_words=True)
    words = _merge_third_tones(words, whole_words=False)
    return _merge_er(words)


# ---------------------------------------------------------------------------------------------
# Tone sandhi on one word's finals.


def _split_in_two(word: str) -> tuple[str, str]:
    """Split a word at its shortest search-mode sub-word: 蒙古包 -> (蒙古, 包), 纸老虎 -> (纸, 老虎)."""
    _, cut_for_search = _jieba()
    shortest = sorted(cut_for_search(word), key=len)[0]
    if word.find(shortest) == 0:
        return shortest, word[len(shortest):]
    return word[: -len(shortest)], shortest


def _bu_sandhi(word: str, finals: list[str]) -> None:
    if len(word) == 3 and word[1] == "不":  # 看不懂: neutral
        finals[1] = _retone(finals[1], "5")
        return
    for i, char in enumerate(word[:-1]):
        if char == "不" and finals[i + 1][-1] == "4":  # 不怕: bu2
            finals[i] = _retone(finals[i], "2")


def _yi_sandhi(word: str, finals: list[str]) -> None:
    if "一" in word and all(c.isnumeric() for c in word if c != "一"):
        return  # a digit string such as 一零一
    if len(word) == 3 and word[1] == "一" and word[0] == word[-1]:  # 看一看
        finals[1] = _retone(finals[1], "5")
    elif word.startswith("第一"):  # ordinal
        finals[1] = _retone(finals[1], "1")
    else:
        for i, char in enumerate(word[:-1]):
            if char != "一":
                continue
            if finals[i + 1][-1] == "4":  # 一段: yi2
                finals[i] = _retone(finals[i], "2")
            elif word[i + 1] not in _SANDHI_BREAKS:  # 一天: yi4; before a pause it stays yi1
                finals[i] = _retone(finals[i], "4")


def _is_neutral_tone_word(word: str) -> bool:
    words = neutral_tone_words()
    return word in words or word[-2:] in words


def _neutral_sandhi(word: str, pos: str, finals: list[str]) -> list[str]:
    never = never_neutral_tone_words()
    for j in range(1, len(word)):  # reduplicated nouns/verbs/adjectives: 奶奶, 试试
        if word[j] == word[j - 1] and pos[0] in "nva" and word not in never:
            finals[j] = _retone(finals[j], "5")
    ge = word.find("个")
    last = word[-1]
    if last in _NEUTRAL_PARTICLES or last in "的地得":
        finals[-1] = _retone(finals[-1], "5")
    elif len(word) == 1 and word in "了着过" and pos in ("ul", "uz", "ug"):  # 走了, 看着, 去过
        finals[-1] = _retone(finals[-1], "5")
    elif len(word) > 1 and last in "们子" and pos in ("r", "n") and word not in never:
        finals[-1] = _retone(finals[-1], "5")
    elif len(word) > 1 and last in "上下里" and pos in ("s", "l", "f"):  # 桌上, 地下, 家里
        finals[-1] = _retone(finals[-1], "5")
    elif len(word) > 1 and last in "来去" and word[-2] in "上下进出回过起开":  # 上来, 下去
        finals[-1] = _retone(finals[-1], "5")
    elif (ge >= 1 and (word[ge - 1].isnumeric() or word[ge - 1] in _GE_AS_MEASURE_AFTER)) or word == "个":
        finals[ge] = _retone(finals[ge], "5")
    elif _is_neutral_tone_word(word):
        finals[-1] = _retone(finals[-1], "5")
    # The neutral-tone list is checked again on each half of the word.
    head, tail = _split_in_two(word)
    halves = [finals[: len(head)], finals[len(head):]]
    for half_word, half in zip((head, tail), halves):
        if _is_neutral_tone_word(half_word):
            half[-1] = _retone(half[-1], "5")
    return halves[0] + halves[1]


def _third_tone_sandhi(word: str, finals: list[str]) -> list[str]:
    if len(word) == 2 and _all_third_tone(finals):  # 你好: ni2 hao3
        finals[0] = _retone(finals[0], "2")
    elif len(word) == 3:
        head, _ = _split_in_two(word)
        if _all_third_tone(finals):
            if len(head) == 2:  # 蒙古/包: first two rise
                finals[0] = _retone(finals[0], "2")
                finals[1] = _retone(finals[1], "2")
            elif len(head) == 1:  # 纸/老虎: the middle rises
                finals[1] = _retone(finals[1], "2")
        else:
            first, second = finals[: len(head)], finals[len(head):]
            if len(first) == 2 and _all_third_tone(first):  # 所有/人
                first[0] = _retone(first[0], "2")
            if len(second) == 2 and _all_third_tone(second):
                second[0] = _retone(second[0], "2")
            elif not _all_third_tone(second) and second[0][-1] == "3" and first[-1][-1] == "3":  # 好/喜欢
                first[-1] = _retone(first[-1], "2")
            finals = first + second
    elif len(word) == 4:  # idioms: two halves of two
        for start in (0, 2):
            if _all_third_tone(finals[start:start + 2]):
                finals[start] = _retone(finals[start], "2")
    return finals


def tone_sandhi(word: str, pos: str, finals: list[str]) -> list[str]:
    """Apply 不, 一, neutral-tone and third-tone sandhi to one merged word's finals."""
    finals = list(finals)
    _bu_sandhi(word, finals)
    _yi_sandhi(word, finals)
    finals = _neutral_sandhi(word, pos, finals)
    return _third_tone_sandhi(word, finals)


def _erhua(word: str, pos: str, finals: list[str]) -> list[str]:
    """A final 儿 takes the tone of the syllable before it (花儿 excepted); er1 becomes er2."""
    finals = list(finals)
    if finals and word[len(finals) - 1] == "儿" and finals[-1] == "er1":
        finals[-1] = "er2"
    always, never = erhua_words()
    if word not in always and (word in never or pos in ("a", "j", "nr")):
        return finals
    if len(finals) != len(word) or len(finals) < 2:
        return finals
    if word[-1] == "儿" and finals[-1] in ("er2", "er5") and word[-2:] not in never:
        finals[-1] = "er" + finals[-2][-1]
    return finals


# ---------------------------------------------------------------------------------------------
# The g2pW hook.

_polyphone_model = None  # voicefleet.text.g2pw.G2PW, or None for the dictionary (pypinyin) path


def set_polyphone_model(model) -> None:
    """Read polyphonic characters with ``model`` (a `voicefleet.text.g2pw.G2PW`); None: pypinyin."""
    global _polyphone_model
    _polyphone_model = model


def polyphone_model():
    return _polyphone_model


def _split_readings(readings: list[str]) -> tuple[list[str], list[str]]:
    """Tone-numbered pinyin ("hang2") -> strict initials and finals with tones; marks pass through."""
    from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials

    initials: list[str] = []
    finals: list[str] = []
    for reading in readings:
        if reading[:1].isalpha():
            initials.append(to_initials(reading))
            finals.append(to_finals_tone3(reading, neutral_tone_with_five=True))
        else:
            initials.append(reading)
            finals.append(reading)
    return initials, finals


# ---------------------------------------------------------------------------------------------
# Public API.


def normalize(text: str) -> str:
    """Official zh ``text_normalize``: numbers and symbols read out, only CJK and ",.!?…-" kept."""
    return zh_normalize.normalize(text)


def _sentence_pinyin(sentence: str, readings: list[str] | None = None, model=None) -> tuple[list[str], list[str]]:
    """One sentence -> per-character (initial, final-with-tone) after merges, sandhi and erhua.

    ``readings`` (``model``'s, one per character of the sentence) replace pypinyin's when given,
    after the model's word overrides.
    """
    posseg_cut, _ = _jieba()
    words = merge_words([(pair.word, pair.flag) for pair in posseg_cut(sentence)])
    initials: list[str] = []
    finals: list[str] = []
    start = 0
    for word, pos in words:
        end = start + len(word)
        if pos == "eng":
            start = end
            continue
        if readings is None:
            word_initials, word_finals = _initials(word), _finals(word)
        else:
            word_initials, word_finals = _split_readings(model.correct(word, readings[start:end]))
        initials += word_initials
        finals += _erhua(word, pos, tone_sandhi(word, pos, word_finals))
        start = end
    logger.debug("pinyin of %r: %s %s", sentence, initials, finals)
    return initials, finals


def g2p(norm_text: str) -> tuple[list[str], list[int]]:
    """Normalised zh text -> (v2 phone symbols, phones per character of ``norm_text``).

    A character is an initial and a toned final (2 phones) or a punctuation mark (1 phone).
    Raises ValueError for a character with no Mandarin reading in the v2 table.
    """
    phones: list[str] = []
    word2ph: list[int] = []
    sentences = [_LATIN.sub("", s) for s in _SENTENCE_CUT.split(norm_text) if s.strip()]
    model = _polyphone_model
    # The official g2pW path reads all sentences in one batch.
    readings = model([s for s in sentences if s]) if model is not None else []
    readings_of = iter(readings)
    for sentence in sentences:
        initials, finals = _sentence_pinyin(sentence, next(readings_of) if model is not None and sentence else None,
                                            model)
        for initial, final in zip(initials, finals):
            if initial == final:  # pypinyin passes non-Chinese characters through unchanged
                if initial not in PUNCTUATION:
                    raise ValueError(f"{initial!r} in {sentence!r} is neither Chinese nor v2 punctuation")
                phones.append(initial)
                word2ph.append(1)
                continue
            tone = final[-1]
            if tone not in "12345":
                raise ValueError(f"pinyin final {final!r} in {sentence!r} has no tone 1-5")
            initial_symbol, final_symbol = syllable_symbols(initial, final[:-1])
            phones += [initial_symbol, final_symbol + tone]
            word2ph.append(2)
    return phones, word2ph


def clean(text: str) -> tuple[str, list[str], list[int]]:
    """Official ``clean_text(text, "zh", "v2")`` -> (norm_text, phones, word2ph).

    A ``￥`` (or else a ``^``) anywhere sends the text down the official special route: the mark
    becomes a comma and every comma phone becomes the pause SP2 (SP3 for ``^``).
    """
    for mark, pause in _SPECIAL_PAUSES:
        if mark in text:
            norm_text = normalize(text.replace(mark, ","))
            phones, word2ph = g2p(norm_text)
            return norm_text, [pause if p == "," else p for p in phones], word2ph
    norm_text = normalize(text)
    phones, word2ph = g2p(norm_text)
    if len(word2ph) != len(norm_text) or sum(word2ph) != len(phones):
        raise ValueError(f"g2p of {norm_text!r} does not give one word2ph entry per character")
    known = symbol_to_id()
    return norm_text, [p if p in known else "UNK" for p in phones], word2ph
