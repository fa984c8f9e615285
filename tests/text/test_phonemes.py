"""`voicefleet.text.phonemes`: what synthesis reads, checked against the official inference entries.

Every inference entry of every ``text_frontend_v2*.json`` whose text the synthesis splitter keeps
as one fragment, unchanged, must give the official ``get_phones_and_bert`` phone ids (for Chinese
and English entries, under the official English dictionaries, as test_frontend checks them).
"""

from __future__ import annotations

import json

import pytest

from voicefleet.text import phonemes as ph
from voicefleet.text.errors import TextFrontendError
from voicefleet.text.splitting import split_text


def test_single_fragment_texts_match_the_official_inference_entries(compat_dir):
    records = [r for path in sorted(compat_dir.glob("text_frontend_v2*.json"))
               for r in json.loads(path.read_text(encoding="utf-8"))]
    checked, mismatched = 0, {}
    for r in records:
        if r.get("kind") in ("en", "zh", "mixed"):
            continue  # those depend on the English dictionary mode: test_frontend covers them
        for entry in r["inference"]:
            if entry["status"] != "ok" or split_text(r["text"], "cut5", entry["language_arg"]) != [r["text"]]:
                continue
            checked += 1
            got = ph.phonemes(r["text"], entry["language_arg"])
            if (got["phone_ids"], got["norm_text"]) != (entry["phone_ids"], entry["norm_text"]):
                mismatched[f"{r['id']}/{entry['language_arg']}"] = (got["phones"], entry["phones"])
    if not checked:
        pytest.skip("no fixture text is a single synthesis fragment")
    assert not mismatched, f"{len(mismatched)}/{checked} differ: {mismatched}"


def test_report_joins_its_fragments():
    text = "今日はいい天気ですね。Hello there, friend!"
    report = ph.phonemes(text, "ja")
    assert [f["text"] for f in report["fragments"]] == split_text(text, "cut5", "ja")  # the synthesis fragments
    assert len(report["fragments"]) == 3
    assert report["phones"] == [p for f in report["fragments"] for p in f["phones"]]
    assert report["phone_ids"] == [i for f in report["fragments"] for i in f["phone_ids"]]
    assert report["norm_text"] == "".join(f["norm_text"] for f in report["fragments"])
    assert [s["lang"] for f in report["fragments"] for s in f["segments"]] == ["ja", "en", "en"]
    assert json.loads(json.dumps(report, ensure_ascii=False)) == report


@pytest.mark.parametrize(("text", "mode", "message"), [
    ("", "zh", "empty text"), ("。。。", "zh", "nothing to synthesise"),
    ("안녕하세요.", "all_yue", "no phonemes in"), ("hello", "fr", "unsupported language 'fr': use one of"),
])
def test_bad_text_is_refused(text, mode, message):
    with pytest.raises(TextFrontendError, match=message):
        ph.phonemes(text, mode)


def test_batch_reports_each_line_and_goes_on_after_a_bad_one():
    requests = [(1, {"text": "你好，世界。"}), (2, {"text": "안녕하세요.", "lang": "ko"}), (4, ValueError("not JSON")),
                (5, {"text": "x", "voice": "a"}), (6, ["text"]), (7, {"text": "我哋去飲茶。", "lang": "yue"})]
    results = list(ph.phonemes_batch(requests, "zh"))
    assert [r["line"] for r in results] == [1, 2, 4, 5, 6, 7]
    assert results[0]["lang"] == "zh" and results[1]["lang"] == "ko" and results[5]["lang"] == "yue"
    assert results[0] == {"line": 1, **ph.phonemes("你好，世界。", "zh")}
    assert results[2]["error"] == "not JSON" and "voice" in results[3]["error"] and "text" in results[4]["error"]
