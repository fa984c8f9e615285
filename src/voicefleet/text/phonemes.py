"""What synthesis makes of a text, before any model runs: fragments, language pieces, phonemes.

    fragments = text_fragments("今日は。Hello!", "ja")   # what `Synthesizer.fragments` decodes
    report = phonemes("今日は。Hello!", "ja")           # the same as JSON-ready data

`text_fragments` is the text half of synthesis: the text is cut into fragments as the official
preprocessing cuts it (`voicefleet.text.splitting`), each fragment goes through the official
language handling (`voicefleet.text.frontend.phones_and_bert_segments`), and fragments without
phonemes are dropped. The synthesis pipeline decodes exactly these fragments (adding BERT
features), so `phonemes` shows the phones and ids the model is given. `voicefleet phonemes`
prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from voicefleet.text.errors import TextFrontendError
from voicefleet.text.frontend import Segment, check_mode, phones_and_bert_segments, require_speech
from voicefleet.text.splitting import split_text

DEFAULT_SPLIT_METHOD = "cut5"  # `SynthesisParams.text_split_method`'s default (the official one)


@dataclass(frozen=True)
class Fragment:
    """One synthesis fragment: its text and its language pieces, in order."""

    text: str
    segments: list[Segment]

    @property
    def norm_text(self) -> str:
        return "".join(s.norm_text for s in self.segments)

    @property
    def phones(self) -> list[str]:
        return [p for s in self.segments for p in s.phones]

    @property
    def phone_ids(self) -> list[int]:
        return [i for s in self.segments for i in s.phone_ids]


def text_fragments(text: str, mode: str, split_method: str = DEFAULT_SPLIT_METHOD) -> list[Fragment]:
    """The fragments synthesis decodes for ``text`` in language ``mode``; those without phonemes
    are left out (the list may be empty: the caller decides what that means)."""
    mode = check_mode(mode)
    fragments = [Fragment(piece, phones_and_bert_segments(piece, mode))
                 for piece in split_text(text, split_method, mode)]
    return [f for f in fragments if f.phone_ids]


def phonemes(text: str, mode: str, split_method: str = DEFAULT_SPLIT_METHOD) -> dict[str, Any]:
    """``text`` as synthesis reads it: normalised text, phones and phone ids, whole and per fragment.

    Raises `TextFrontendError` for an unknown mode, and for a text with nothing to say in it.
    """
    if not isinstance(text, str) or not text.strip():
        raise TextFrontendError("empty text: give some text to speak")
    mode = check_mode(mode)
    fragments = text_fragments(text, mode, split_method)
    if not fragments:
        raise TextFrontendError("nothing to synthesise: the text has no speakable content")
    phones = [p for f in fragments for p in f.phones]
    require_speech(phones, text, mode)
    return {
        "text": text, "lang": mode, "norm_text": "".join(f.norm_text for f in fragments), "phones": phones,
        "phone_ids": [i for f in fragments for i in f.phone_ids],
        "fragments": [{"text": f.text, "norm_text": f.norm_text, "phones": f.phones, "phone_ids": f.phone_ids,
                       "segments": [{"text": s.text, "lang": s.lang, "norm_text": s.norm_text, "phones": s.phones}
                                    for s in f.segments]} for f in fragments],
    }


def phonemes_batch(requests: Iterable[tuple[int, Any]], default_mode: str,
                   split_method: str = DEFAULT_SPLIT_METHOD) -> Iterator[dict[str, Any]]:
    """`phonemes` for each ``(line number, {"text": ..., "lang": ...})``, in order.

    A request that fails gives ``{"line": n, "error": message}`` instead, so one bad line does not
    stop the rest; ``lang`` defaults to ``default_mode``. A request may also be the ValueError
    met while reading it (a line that is not JSON): it is reported the same way.
    """
    for line, request in requests:
        try:
            if isinstance(request, ValueError):
                raise request
            if not isinstance(request, dict) or not isinstance(request.get("text"), str):
                raise TextFrontendError('expected an object with a "text" string (and optionally "lang")')
            unknown = set(request) - {"text", "lang"}
            if unknown:
                raise TextFrontendError(f"unknown fields {sorted(unknown)}: only \"text\" and \"lang\"")
            yield {"line": line, **phonemes(request["text"], request.get("lang", default_mode), split_method)}
        except (TextFrontendError, ValueError) as exc:
            yield {"line": line, "error": str(exc)}
