"""Cutting input text into synthesis fragments, with the official methods' semantics.

Methods (official names):
- cut0: no cutting;
- cut1: every four sentences;
- cut2: about every 50 characters (a short remainder joins the previous fragment);
- cut3: at the Chinese full stop 。;
- cut4: at the English full stop . (not between digits);
- cut5: at every punctuation mark (decimal points excepted).

Then, as the official preprocessing does: repeated punctuation collapses, a very short first
clause gets a leading full stop, fragments shorter than 5 characters merge into their
neighbour, pure-punctuation fragments are dropped, each fragment ends in punctuation, and any
fragment over 510 characters (BERT's limit) is re-split at punctuation.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence, TypeVar

# Sentence-ending marks used by the splitter (full and half width).
SENTENCE_MARKS = "，。？！,.?!~:：—…"
PAUSE_PUNCTUATION = "!?…,.-"  # what a fragment may consist of and still count as "only punctuation"
CUT5_MARKS = set(",.;?!、，。？！;：…")
MAX_FRAGMENT_CHARS = 510
MIN_FRAGMENT_CHARS = 5

METHODS: dict[str, Callable[[str], list[str]]] = {}
T = TypeVar("T")


def _method(name: str):
    def register(fn: Callable[[str], list[str]]):
        METHODS[name] = fn
        return fn
    return register


def _only_punctuation(text: str, marks: str | set[str] = PAUSE_PUNCTUATION + " ") -> bool:
    return set(text).issubset(set(marks))


def sentences(text: str) -> list[str]:
    """Split after every sentence mark; the last sentence gets a 。 if it has none."""
    text = text.replace("……", "。").replace("——", "，")
    if text[-1] not in SENTENCE_MARKS:
        text += "。"
    out, start = [], 0
    for i, ch in enumerate(text):
        if ch in SENTENCE_MARKS:
            out.append(text[start:i + 1])
            start = i + 1
    return out


@_method("cut0")
def cut0(text: str) -> list[str]:
    return [] if _only_punctuation(text) else [text]


@_method("cut1")
def cut1(text: str) -> list[str]:
    parts = sentences(text.strip("\n"))
    if len(parts) <= 4:
        groups = [text.strip("\n")]
    else:
        # groups of four; the remainder joins the last full group
        bounds = list(range(0, len(parts), 4))
        bounds[-1] = len(parts)
        groups = ["".join(parts[a:b]) for a, b in zip(bounds, bounds[1:])]
    return [g for g in groups if not _only_punctuation(g)]


@_method("cut2")
def cut2(text: str) -> list[str]:
    text = text.strip("\n")
    parts = sentences(text)
    if len(parts) < 2:
        return [text]
    groups, current, size = [], "", 0
    for part in parts:
        current += part
        size += len(part)
        if size > 50:
            groups.append(current)
            current, size = "", 0
    if current:
        groups.append(current)
    if len(groups) > 1 and len(groups[-1]) < 50:
        groups[-2:] = [groups[-2] + groups[-1]]
    return [g for g in groups if not _only_punctuation(g)]


@_method("cut3")
def cut3(text: str) -> list[str]:
    return [p for p in text.strip("\n").strip("。").split("。") if not _only_punctuation(p)]


@_method("cut4")
def cut4(text: str) -> list[str]:
    parts = re.split(r"(?<!\d)\.(?!\d)", text.strip("\n").strip("."))
    return [p for p in parts if not _only_punctuation(p)]


@_method("cut5")
def cut5(text: str) -> list[str]:
    text = text.strip("\n")
    pieces, current = [], []
    for i, ch in enumerate(text):
        current.append(ch)
        decimal_point = ch == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()
        if ch in CUT5_MARKS and not decimal_point:
            pieces.append("".join(current))
            current = []
    if current:
        pieces.append("".join(current))
    return [p for p in pieces if not set(p).issubset(CUT5_MARKS)]


def collapse_repeated_punctuation(text: str) -> str:
    """'!!!' -> '!', '?.' -> '?' (the first mark of a run of pause punctuation wins)."""
    marks = re.escape(PAUSE_PUNCTUATION)
    return re.sub(f"([{marks}])([{marks}])+", r"\1", text)


def merge_short(items: Sequence[str], threshold: int = MIN_FRAGMENT_CHARS) -> list[str]:
    """Join consecutive fragments until each has at least `threshold` characters."""
    if len(items) < 2:
        return list(items)
    out, current = [], ""
    for item in items:
        current += item
        if len(current) >= threshold:
            out.append(current)
            current = ""
    if current:
        if out:
            out[-1] += current
        else:
            out.append(current)
    return out


def split_long(text: str, max_chars: int = MAX_FRAGMENT_CHARS) -> list[str]:
    """Re-split an over-long fragment at sentence marks into pieces of at most `max_chars`."""
    out, current = [], ""
    for piece in re.split(f"([{re.escape(SENTENCE_MARKS)}])", text):
        if len(current + piece) > max_chars:
            out.append(current)
            current = piece
        else:
            current += piece
    if current:
        out.append(current)
    return [o for o in out if o]


def first_clause(text: str) -> str:
    return re.split(f"[{re.escape(SENTENCE_MARKS)}]", text)[0].strip()


def split_text(text: str, method: str = "cut5", lang: str = "zh") -> list[str]:
    """Input text -> synthesis fragments, as the official preprocessing cuts it.

    `lang` only chooses the full stop that is added ('.' for English, '。' otherwise).
    """
    if method not in METHODS:
        raise ValueError(f"unknown text split method {method!r}; choose one of {', '.join(METHODS)}")
    stop = "." if lang.lower() == "en" else "。"
    text = collapse_repeated_punctuation(text).strip("\n")
    if not text.strip():
        return []
    if text[0] not in SENTENCE_MARKS and len(first_clause(text)) < 4:
        text = stop + text
    parts: list[str] = []
    for chunk in METHODS[method](text):
        parts.extend(chunk.split("\n"))
    parts = merge_short([p for p in parts if p not in ("", " ")])
    fragments = []
    for part in parts:
        if not part.strip() or not re.sub(r"\W+", "", part):
            continue
        if part[-1] not in SENTENCE_MARKS:
            part += stop
        fragments.extend(split_long(part) if len(part) > MAX_FRAGMENT_CHARS else [part])
    return fragments


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted, then chunked); order restorable."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
