"""The GPT-SoVITS list file: one ``wav_path|speaker|lang|text`` line per clip.

Rules, following the official ``prepare_datasets`` scripts where they define any:

* UTF-8 (a byte-order mark is ignored), ``\\n`` or ``\\r\\n`` line ends; blank lines are skipped.
* Exactly four ``|``-separated fields; the audio path, speaker and language must not be empty. A
  line that breaks these rules makes the whole file unreadable: `ListFileError` names the line.
  (The official scripts print a traceback for such a line and go on without it.)
* Relative audio paths are resolved against the list file's folder (or against `audio_dir`, which
  like the official ``inp_wav_dir`` takes only the file name). Paths may be URIs.
* Language codes are case-insensitive. The official codes are zh, en, ja, ko, yue (and the v1
  spellings ZH, JP, EN, KO, YUE); voicefleet also takes the UI's single-language modes all_zh,
  all_ja, all_ko, all_yue as the same languages. The mixed modes (auto, auto_yue) and any other
  code are kept as a row and later rejected as "unsupported_language".
* The text may be empty (the `slice` command writes such skeleton rows); it is rejected later as
  "empty_transcript", not here.

The clip id is the audio path exactly as written in the list: stable when the folder moves, and
the key the train/validation split hashes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from voicefleet.platform.data import uris

logger = logging.getLogger(__name__)

FIELDS = "wav_path|speaker|lang|text"
# list-file code (lower case) -> the language its transcript is cleaned in (1-get-text.py's table)
SUPPORTED_LANGUAGES = {"zh": "zh", "all_zh": "zh", "en": "en", "ja": "ja", "jp": "ja", "all_ja": "ja",
                       "ko": "ko", "all_ko": "ko", "yue": "yue", "all_yue": "yue"}
# UI modes we recognise but do not prepare: a transcript is one language.
KNOWN_UNSUPPORTED = {"auto", "auto_yue"}


class ListFileError(ValueError):
    """A list file that cannot be read or parsed; the message names the file and the line."""


@dataclass(frozen=True)
class ListEntry:
    """One list row.

    `lang` is the normalised language ("zh", "en", "ja", "ko" or "yue"), or None when `lang_code`
    is not supported.
    `audio` is the resolved location (local path or URI) of `clip_id`.
    """

    line: int  # 1-based line number in the list file
    clip_id: str
    audio: str
    speaker: str
    lang_code: str
    lang: str | None
    text: str


@dataclass(frozen=True)
class ListFile:
    location: str
    sha256: str
    entries: tuple[ListEntry, ...]


def normalize_language(code: str) -> str | None:
    """The language ("zh", "en", "ja", "ko", "yue") of a supported code (any case), else None."""
    return SUPPORTED_LANGUAGES.get(code.strip().lower())


def parse_list_text(text: str, *, location: str = "<list>", base: str | None = None,
                    audio_dir: str | None = None) -> tuple[ListEntry, ...]:
    """Parse list-file text. `base` is the folder relative paths are resolved against."""
    base = base if base is not None else (uris.parent(location) if location != "<list>" else ".")
    entries = []
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 4:
            raise ListFileError(f"{location}: line {number}: expected 4 fields {FIELDS} separated by '|', "
                                f"found {len(fields)}: {_short(line)!r}")
        path, speaker, lang_code, transcript = (f.strip() for f in fields)
        for name, value in (("audio path", path), ("speaker", speaker), ("language", lang_code)):
            if not value:
                raise ListFileError(f"{location}: line {number}: empty {name} in {_short(line)!r} ({FIELDS})")
        if audio_dir is not None:
            audio = uris.join(audio_dir, uris.basename(path))
        else:
            audio = uris.join(base, path)
        lang = normalize_language(lang_code)
        if lang is None and lang_code.lower() not in KNOWN_UNSUPPORTED:
            logger.warning("%s: line %d: unknown language code %r (supported: %s)", location, number,
                           lang_code, ", ".join(SUPPORTED_LANGUAGES))
        entries.append(ListEntry(number, path, audio, speaker, lang_code, lang, transcript))
    if not entries:
        raise ListFileError(f"{location}: no rows; expected lines of the form {FIELDS}")
    return tuple(entries)


def read_list_file(location: str, *, audio_dir: str | None = None) -> ListFile:
    """Read and parse a list file from a local path or a URI."""
    try:
        data = uris.read_bytes(location)
    except FileNotFoundError:
        raise ListFileError(f"list file not found: {location}") from None
    except OSError as e:
        raise ListFileError(f"cannot read list file {location}: {e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ListFileError(f"{location}: line {line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    entries = parse_list_text(text, location=location, base=uris.parent(location), audio_dir=audio_dir)
    return ListFile(location, uris.sha256_hex(data), entries)


def format_list_line(path: str, speaker: str, lang: str, text: str = "") -> str:
    """One list line; refuses fields that would break the format."""
    for name, value in (("path", path), ("speaker", speaker), ("lang", lang), ("text", text)):
        if "|" in value or "\n" in value:
            raise ValueError(f"list field {name} must not contain '|' or a line break, got {value!r}")
    return f"{path}|{speaker}|{lang}|{text}"


def _short(line: str, limit: int = 80) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."
