"""Korean (ko) front end: GPT-SoVITS v2 ``clean_text(text, "ko", "v2")``.

    phones = g2p(text)                       # v2 symbols: compatibility jamo, punctuation, 空, 停
    norm_text, phones, word2ph = clean(text) # norm_text is the text unchanged, word2ph is None

The official has no Korean normaliser; ``g2p`` does everything, in this order:

1. `latin_to_hangul`: each Latin letter, case-insensitively, becomes its Korean letter name, one
   letter after another from a to z ("iPhone" -> 아이피에이치오엔이);
2. g2pk2's ``G2p`` with its default arguments: idioms, numbers read Sino-Korean or native by
   g2pk2's counter list (``3개`` -> 세개, ``010-1234`` -> 영이령-이리삼사), the rule table tagged by
   the mecab-ko morphological analyser, special rules, linking and recomposition into syllables;
3. `divide_hangul`: syllables -> compatibility jamo, then the official 13 diphthong splits
   (ㅘ -> ㅗㅏ ... ㅠ -> ㅣㅜ);
4. `fix_g2pk2_error`: "ㅇㅡㄹ ㄹ" / "ㄹㅡㄹ ㄹ" read the second ㄹ as ㄴ;
5. a text that ends in a jamo gets a "." (안녕 -> ... ㅕㅇ.);
6. `post_replace_ph`, character by character: a space becomes 空, marks map to v2 punctuation,
   anything else outside the v2 table becomes 停. The Korean path therefore never gives UNK.

g2pk2 and its analyser (python-mecab-ko with the python-mecab-ko-dic dictionary) are imported on
first use and kept for the process. g2pk2 is used as published, except two of its start-up
checks, which `_G2p` replaces: when the ``mecab`` module is missing g2pk2 runs ``pip install``,
and when the analyser fails to load it carries on with none. Here either is a
`TextFrontendError` naming the package to install; nothing is installed or downloaded at run time.
g2pk2 also loads NLTK's ``corpora/cmudict.zip`` (and downloads it at import when it is missing),
so its presence is checked first. The dictionary has no effect on this path: Latin letters are
spelled out in Hangul before g2pk2 sees the text.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
from functools import lru_cache

from voicefleet.models.symbols import symbol_to_id
from voicefleet.text.errors import TextFrontendError

logger = logging.getLogger(__name__)

_INSTALL = "pip install g2pk2==0.0.3 jamo==0.4.1 python-mecab-ko==1.3.7"

# Korean names of the Latin letters, applied in this order (the official list).
_LETTER_NAMES = (
    ("a", "에이"), ("b", "비"), ("c", "시"), ("d", "디"), ("e", "이"), ("f", "에프"), ("g", "지"),
    ("h", "에이치"), ("i", "아이"), ("j", "제이"), ("k", "케이"), ("l", "엘"), ("m", "엠"), ("n", "엔"),
    ("o", "오"), ("p", "피"), ("q", "큐"), ("r", "아르"), ("s", "에스"), ("t", "티"), ("u", "유"),
    ("v", "브이"), ("w", "더블유"), ("x", "엑스"), ("y", "와이"), ("z", "제트"),
)
# A Unicode case-insensitive match, as the official: "k" also matches the Kelvin sign K and
# "s" the long s ſ.
_LATIN_LETTERS = tuple((re.compile(letter, re.IGNORECASE), name) for letter, name in _LETTER_NAMES)

# Diphthongs split into two vowels (the official list and order). The official's double final
# consonants are left to g2pk2, which resolves them.
_DIPHTHONGS = (
    ("ㅘ", "ㅗㅏ"), ("ㅙ", "ㅗㅐ"), ("ㅚ", "ㅗㅣ"), ("ㅝ", "ㅜㅓ"), ("ㅞ", "ㅜㅔ"), ("ㅟ", "ㅜㅣ"), ("ㅢ", "ㅡㅣ"),
    ("ㅑ", "ㅣㅏ"), ("ㅒ", "ㅣㅐ"), ("ㅕ", "ㅣㅓ"), ("ㅖ", "ㅣㅔ"), ("ㅛ", "ㅣㅗ"), ("ㅠ", "ㅣㅜ"),
)
_ENDS_IN_JAMO = re.compile(r"([\u3131-\u3163])$")

# Per-character mapping of post_replace_ph; its "..." entry can never match one character.
_MARKS = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    " ": "空",
}
UNKNOWN = "停"  # what any character outside the v2 table becomes


def latin_to_hangul(text: str) -> str:
    """Spell every Latin letter as its Korean name: "BTS" -> 비티에스, "iPhone" -> 아이피에이치오엔이."""
    for pattern, name in _LATIN_LETTERS:
        text = pattern.sub(name, text)
    return text


@lru_cache(maxsize=1)
def _jamo():
    try:
        from jamo import h2j, j2hcj
    except ImportError as exc:
        raise TextFrontendError(f"Korean needs the jamo package ({exc}): {_INSTALL}") from exc
    return h2j, j2hcj


def divide_hangul(text: str) -> str:
    """Syllables -> compatibility jamo with the official diphthong splits: 과 -> ㄱㅗㅏ."""
    h2j, j2hcj = _jamo()
    text = j2hcj(h2j(text))
    for diphthong, vowels in _DIPHTHONGS:
        text = text.replace(diphthong, vowels)
    return text


def fix_g2pk2_error(text: str) -> str:
    """The official fix: after "ㅇㅡㄹ " or "ㄹㅡㄹ " a ㄹ is read ㄴ (g2pk2 leaves it ㄹ)."""
    fixed = []
    i = 0
    while i < len(text) - 4:
        if text[i:i + 3] in ("ㅇㅡㄹ", "ㄹㅡㄹ") and text[i + 3] == " " and text[i + 4] == "ㄹ":
            fixed.append(text[i:i + 3] + " ㄴ")
            i += 5
        else:
            fixed.append(text[i])
            i += 1
    fixed.append(text[i:])
    return "".join(fixed)


def post_replace_ph(char: str) -> str:
    """One character -> its v2 symbol: space -> 空, marks -> v2 punctuation, unknown -> 停."""
    char = _MARKS.get(char, char)
    return char if char in symbol_to_id() else UNKNOWN


class _Pronouncer:
    """g2pk2's ``G2p`` behind a lock (the analyser is one C object), built on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._g2p = None

    def __call__(self, text: str) -> str:
        with self._lock:
            if self._g2p is None:
                self._g2p = _build_g2pk2()
            return self._g2p(text)


def _check_cmudict() -> None:
    try:
        import nltk
    except ImportError as exc:
        raise TextFrontendError(f"Korean needs nltk, which g2pk2 imports ({exc}): {_INSTALL}") from exc
    try:
        nltk.data.find("corpora/cmudict.zip")
    except LookupError as exc:
        raise TextFrontendError(
            "Korean needs NLTK's corpora/cmudict.zip, which g2pk2 loads at start-up (and would download): "
            "run `python -m nltk.downloader cmudict` or point NLTK_DATA at a folder that has it") from exc


def _build_g2pk2():
    _check_cmudict()
    try:
        import g2pk2
    except ImportError as exc:
        raise TextFrontendError(f"Korean needs the g2pk2 package ({exc}): {_INSTALL}") from exc

    class _G2p(g2pk2.G2p):
        """g2pk2's G2p whose start-up neither installs packages nor hides a failed analyser."""

        def check_mecab(self) -> None:
            pass  # the published check runs `pip install python-mecab-ko` when it is missing

        def get_mecab(self):
            try:
                import mecab
            except ImportError as exc:
                raise TextFrontendError(
                    f"Korean needs the mecab-ko analyser ({exc}): pip install python-mecab-ko==1.3.7") from exc
            try:
                return mecab.MeCab()
            except Exception as exc:  # noqa: BLE001 - any failure to open the dictionary
                raise TextFrontendError(
                    f"the mecab-ko analyser could not load its dictionary ({exc}): "
                    "pip install python-mecab-ko-dic==2.1.1.post2") from exc

    with contextlib.redirect_stdout(io.StringIO()):  # g2pk2 prints progress on stdout
        g2p = _G2p()
    logger.debug("g2pk2 %s loaded with mecab-ko", getattr(g2pk2, "__version__", "0.0.3"))
    return g2p


_PRONOUNCER = _Pronouncer()


def pronounce(text: str) -> str:
    """Hangul as it sounds, by g2pk2 with its defaults: "값이 얼마예요?" -> "갑씨 얼마예요?"."""
    return _PRONOUNCER(text)


def normalize(text: str) -> str:
    """The official has no Korean normaliser: the text is passed through unchanged."""
    return text


def g2p(text: str) -> list[str]:
    """Korean text -> v2 phone symbols, one per jamo, mark or space (the official ``korean.g2p``)."""
    text = fix_g2pk2_error(divide_hangul(pronounce(latin_to_hangul(text))))
    text = _ENDS_IN_JAMO.sub(r"\1.", text)
    return [post_replace_ph(char) for char in text]


def clean(text: str) -> tuple[str, list[str], None]:
    """Official ``clean_text(text, "ko", "v2")`` -> (norm_text, phones, None)."""
    norm_text = normalize(text)
    return norm_text, g2p(norm_text), None
