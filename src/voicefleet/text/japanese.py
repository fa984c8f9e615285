"""Japanese (ja) front end: GPT-SoVITS v2 ``clean_text(text, "ja", "v2")``.

    norm_text, phones, word2ph = clean(text)   # word2ph is None, as officially
    phones = g2p(norm_text)                    # prosody-marked phones, "#" not yet UNK

The official steps, in order:

1. `normalize`: runs of the punctuation ``! ? … , . -`` collapse to their first mark
   (``……`` -> ``…``; full-width ``！！`` is untouched and stays two marks);
2. `g2p`: ``％`` becomes パーセント and the text is lower-cased; it is cut at every character that
   is not a Latin letter, a digit (any Unicode digit, full-width ones included), 々, kana, a CJK
   ideograph or a full-width letter; each piece goes through Open JTalk and comes back as
   phones with prosody marks (`prosody_phones`), and each cutting character is kept as a phone
   itself, spaces excepted. A digit comma or decimal point therefore cuts a number in two
   (``1,980`` is read イチ , キューヒャクハチジュー), as officially;
3. `post_replace_ph`: Japanese and full-width marks become v2 punctuation (、-> ``,`` 。-> ``.``);
4. ``clean``: anything outside the v2 table becomes ``UNK``, which includes every accent-phrase
   border ``#`` and marks such as 「」.

`prosody_phones` is ESPnet's ``pyopenjtalk_g2p_prosody`` (which the official code uses) read from
Open JTalk's full-context labels: the phoneme (unvoiced vowels lower-cased), ``_`` for a pause,
``#`` at an accent-phrase border, ``]`` at a pitch fall, ``[`` at a pitch rise; the sentence
start and end marks are cut off.

Open JTalk itself (MeCab, the naist-jdic dictionary, the NJD rules for readings, numbers,
accents) is called through pyopenjtalk, never rewritten. Its dictionary must be on disk:
``OPEN_JTALK_DICT_DIR`` names it; unset, pyopenjtalk's own folder is used when it holds one
(pyopenjtalk downloads it there on machines with internet), else Debian's
``open-jtalk-mecab-naist-jdic`` (`DEBIAN_DICT_DIR`). Without any, Japanese text fails with a
one-line error saying how to install one; pyopenjtalk's download is never triggered.

The official user dictionary (``GPT_SoVITS/text/ja_userdic/userdict.csv``, English words and Latin
letters with katakana readings) is compiled with pyopenjtalk and loaded, as the official code
does at import. It is read from ``$VOICEFLEET_TEXT_DATA`` (the folder of a GPT-SoVITS checkout's
``GPT_SoVITS/text``, or a flat copy named ``ja_userdict.csv``); the compiled ``user.dict`` is
cached under ``$VOICEFLEET_CACHE_DIR/ja_userdict`` (default ``~/.cache/voicefleet``), keyed by the
CSV's md5. Without it Japanese works and only Latin words fed to the Japanese cleaner are read
differently, exactly as the official code behaves when the file is missing (it says nothing;
voicefleet logs it once).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
from pathlib import Path

from voicefleet.models.symbols import PUNCTUATION
from voicefleet.text.errors import TextFrontendError

logger = logging.getLogger(__name__)

DICT_ENV = "OPEN_JTALK_DICT_DIR"
DEBIAN_DICT_DIR = "/var/lib/mecab/dic/open-jtalk/naist-jdic"  # Debian's open-jtalk-mecab-naist-jdic
TEXT_DATA_ENV = "VOICEFLEET_TEXT_DATA"
# Where the user dictionary is looked for inside $VOICEFLEET_TEXT_DATA, in this order.
USERDICT_NAMES = ("ja_userdic/userdict.csv", "ja_userdict.csv")
_INSTALL_DICT = (
    "apt-get install open-jtalk-mecab-naist-jdic (Debian/Ubuntu), or set OPEN_JTALK_DICT_DIR to an "
    "Open JTalk dictionary folder (open_jtalk_dic_utf_8-1.11)")
_INSTALL_PYOPENJTALK = "pip install pyopenjtalk==0.4.1 (it builds from source: needs a C/C++ compiler and cmake)"

# A character of Japanese text; anything else cuts the text and is kept as a phone (spaces dropped).
# Python's \d matches every Unicode decimal digit, as in the official pattern.
_JA_CHARS = r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
_MARK_RE = re.compile(f"[^{_JA_CHARS}]")
_REPEATED_PUNCTUATION_RE = re.compile("([{0}])([{0}])+".format("".join(re.escape(p) for p in PUNCTUATION)))
_SYMBOLS_TO_KANA = (("％", "パーセント"),)
# post_replace_ph's table; its "..." entry can never match the single characters it is given.
_MARKS = {"：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ","}

# Full-context label fields (ESPnet's regexes): p3 the phoneme, A:a1/a2/a3 the accent position,
# F:f1 the accent phrase's mora count, E:e3 whether the sentence is a question.
_P3_RE = re.compile(r"\-(.*?)\+")
_A1_RE = re.compile(r"/A:([0-9\-]+)\+")
_A2_RE = re.compile(r"\+(\d+)\+")
_A3_RE = re.compile(r"\+(\d+)/")
_F1_RE = re.compile(r"/F:(\d+)_")
_E3_RE = re.compile(r"!(\d+)_")
_MISSING = -50  # ESPnet's value for a field a label does not have (the "xx" of silences)
# Substring tests, as ESPnet writes them: p3 in "AEIOU" / p3 in "aeiouAEIOUNcl" ("cl" matches).
_UNVOICED_VOWELS = "AEIOU"
_BORDER_PHONES = "aeiouAEIOUNcl"


# ---------------------------------------------------------------------------------------------
# Open JTalk through pyopenjtalk
# ---------------------------------------------------------------------------------------------

def _has_dictionary(folder: str | os.PathLike | bytes) -> bool:
    folder = os.fsdecode(folder)
    return os.path.isfile(os.path.join(folder, "sys.dic"))


def _cache_dir() -> Path:
    root = os.environ.get("VOICEFLEET_CACHE_DIR")
    if root:
        return Path(root) / "ja_userdict"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "voicefleet" / "ja_userdict"


def find_user_dictionary() -> Path | None:
    """The official user dictionary CSV in ``$VOICEFLEET_TEXT_DATA``, or None."""
    folder = os.environ.get(TEXT_DATA_ENV)
    if not folder:
        return None
    for name in USERDICT_NAMES:
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


@contextlib.contextmanager
def _quiet_fds():
    """Silence the C library's own progress output (MeCab writes it on stdout/stderr)."""
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def compile_user_dictionary(pyopenjtalk, csv_path: Path) -> Path:
    """``user.dict`` compiled from ``csv_path`` with pyopenjtalk, cached by the CSV's md5.

    Written to a temporary file beside the cache entry and renamed into place, so concurrent
    processes (Ray actors) never read a half-written dictionary.
    """
    digest = hashlib.md5(csv_path.read_bytes()).hexdigest()
    folder = _cache_dir()
    target = folder / f"user-{digest}.dict"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=".user-", suffix=".dict", dir=folder)
    os.close(fd)
    try:
        with _quiet_fds():
            pyopenjtalk.mecab_dict_index(str(csv_path), staged)
        os.replace(staged, target)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)
    logger.info("compiled the Japanese user dictionary %s into %s", csv_path, target)
    return target


class _OpenJTalk:
    """pyopenjtalk with a dictionary on disk and the user dictionary loaded, built on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._module = None

    def __call__(self):
        with self._lock:
            if self._module is None:
                self._module = self._load()
            return self._module

    @staticmethod
    def _load():
        configured = os.environ.get(DICT_ENV)
        if configured and not _has_dictionary(configured):
            raise TextFrontendError(
                f"{DICT_ENV}={configured} holds no Open JTalk dictionary (no sys.dic): {_INSTALL_DICT}")
        if not configured and _has_dictionary(DEBIAN_DICT_DIR):
            os.environ.setdefault(DICT_ENV, DEBIAN_DICT_DIR)  # read by pyopenjtalk at import
        try:
            import pyopenjtalk
        except ImportError as exc:
            raise TextFrontendError(f"Japanese needs pyopenjtalk ({exc}): {_INSTALL_PYOPENJTALK}") from exc
        if not _has_dictionary(pyopenjtalk.OPEN_JTALK_DICT_DIR):
            if _has_dictionary(DEBIAN_DICT_DIR):  # pyopenjtalk was imported before with no dictionary
                pyopenjtalk.OPEN_JTALK_DICT_DIR = DEBIAN_DICT_DIR.encode("utf-8")
            else:  # pyopenjtalk would download one now: refuse instead
                raise TextFrontendError(f"Japanese needs the Open JTalk dictionary, which is not installed: "
                                        f"{_INSTALL_DICT}")
        logger.debug("Open JTalk dictionary: %s", os.fsdecode(pyopenjtalk.OPEN_JTALK_DICT_DIR))
        csv_path = find_user_dictionary()
        if csv_path is None:
            logger.info("no Japanese user dictionary (%s in $%s): Latin words in Japanese text are read "
                        "without it", " or ".join(USERDICT_NAMES), TEXT_DATA_ENV)
        else:
            try:
                user_dict = compile_user_dictionary(pyopenjtalk, csv_path)
            except (OSError, RuntimeError) as exc:
                raise TextFrontendError(f"could not compile the Japanese user dictionary {csv_path}: {exc}") from exc
            pyopenjtalk.update_global_jtalk_with_user_dict(str(user_dict))
        return pyopenjtalk


_OPENJTALK = _OpenJTalk()


def full_context_labels(text: str) -> list[str]:
    """Open JTalk's full-context labels for one piece of Japanese text."""
    pyopenjtalk = _OPENJTALK()
    return pyopenjtalk.make_label(pyopenjtalk.run_frontend(text))


def reading(text: str) -> str:
    """Open JTalk's katakana reading (``pyopenjtalk.g2p(text, kana=True)``), for checking."""
    return _OPENJTALK().g2p(text, kana=True)


# ---------------------------------------------------------------------------------------------
# The official Python layer
# ---------------------------------------------------------------------------------------------

def _field(regex: re.Pattern, label: str) -> int:
    match = regex.search(label)
    return int(match.group(1)) if match else _MISSING


def prosody_phones(labels: list[str]) -> list[str]:
    """Full-context labels -> phones with prosody marks, start ``^`` and end ``$``/``?`` included."""
    phones: list[str] = []
    last = len(labels) - 1
    for n, label in enumerate(labels):
        p3 = _P3_RE.search(label).group(1)
        if p3 in _UNVOICED_VOWELS:
            p3 = p3.lower()
        if p3 == "sil":
            if n == 0:
                phones.append("^")
            elif n == last:
                question = _field(_E3_RE, label)
                if question == 0:
                    phones.append("$")
                elif question == 1:
                    phones.append("?")
            else:  # ESPnet asserts silences only at the ends
                raise TextFrontendError(f"Open JTalk gave a silence inside the text (label {n} of {last + 1})")
            continue
        if p3 == "pau":
            phones.append("_")
            continue
        phones.append(p3)
        a1, a2, a3 = _field(_A1_RE, label), _field(_A2_RE, label), _field(_A3_RE, label)
        moras = _field(_F1_RE, label)
        a2_next = _field(_A2_RE, labels[n + 1])
        if a3 == 1 and a2_next == 1 and p3 in _BORDER_PHONES:
            phones.append("#")  # accent phrase border
        elif a1 == 0 and a2_next == a2 + 1 and a2 != moras:
            phones.append("]")  # pitch falls
        elif a2 == 1 and a2_next == 2:
            phones.append("[")  # pitch rises
    return phones


def normalize(text: str) -> str:
    """Runs of ``! ? … , . -`` collapse to their first mark; nothing else changes."""
    return _REPEATED_PUNCTUATION_RE.sub(r"\1", text)


def post_replace_ph(phone: str) -> str:
    return _MARKS.get(phone, phone)


def pieces(text: str) -> list[tuple[str, str]]:
    """The text cut as the official ``preprocess_jap`` cuts it: (piece, mark after it) pairs.

    ``text`` is taken after ``％`` -> パーセント and lower-casing. The last pair's mark is "".
    """
    chunks = _MARK_RE.split(text)
    marks = _MARK_RE.findall(text)
    return [(chunk, marks[i] if i < len(marks) else "") for i, chunk in enumerate(chunks)]


def g2p(norm_text: str) -> list[str]:
    """Normalised Japanese text -> phones with prosody marks (the official ``japanese.g2p``)."""
    text = norm_text
    for symbol, kana in _SYMBOLS_TO_KANA:
        text = text.replace(symbol, kana)
    text = text.lower()  # English words to lower case (no effect on Japanese)
    phones: list[str] = []
    for chunk, mark in pieces(text):
        if chunk:
            phones += prosody_phones(full_context_labels(chunk))[1:-1]
        if mark and mark != " ":
            phones.append(mark)
    return [post_replace_ph(p) for p in phones]


def clean(text: str) -> tuple[str, list[str], None]:
    """Official ``clean_text(text, "ja", "v2")`` -> (norm_text, phones, None); "#" etc. are UNK."""
    from voicefleet.models.symbols import symbol_to_id

    table = symbol_to_id()
    norm_text = normalize(text)
    return norm_text, [p if p in table else "UNK" for p in g2p(norm_text)], None
