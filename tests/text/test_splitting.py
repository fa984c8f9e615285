"""Text splitting methods: what each cuts, merging of short pieces, re-splitting of long ones."""

from __future__ import annotations

import pytest

from voicefleet.text.splitting import (
    METHODS,
    collapse_repeated_punctuation,
    length_buckets,
    merge_short,
    split_long,
    split_text,
)

ZH = "大家好啊，我是小明。你好，我是小红。你好，我是小刚。你好，我是小张。你好，我是小李。"


def test_cut0_keeps_the_text_whole():
    assert split_text(ZH, "cut0") == [ZH]


def test_cut1_groups_four_sentences_and_the_remainder_joins_the_last_group():
    sentences = [s + "。" for s in ["第一句话", "第二句话", "第三句话", "第四句话", "第五句话", "第六句话",
                                    "第七句话", "第八句话", "第九句话"]]
    out = split_text("".join(sentences), "cut1")
    assert out == ["".join(sentences[:4]), "".join(sentences[4:])]


def test_cut2_about_fifty_characters():
    text = "这是一个比较长的句子，用来测试按字数切分的方法是否正确。" * 6
    out = split_text(text, "cut2")
    assert len(out) > 1
    assert "".join(out) == text
    assert all(len(piece) > 50 for piece in out)


def test_cut3_and_cut4_cut_at_full_stops_only():
    # cut3 drops the 。 it cuts at; the fragment gets one back at the end
    assert split_text("今天一直在下雨。明天晴天，后天多云。", "cut3") == ["今天一直在下雨。", "明天晴天，后天多云。"]
    assert split_text("It costs 3.5 dollars. That is cheap, I think.", "cut4", lang="en") == [
        "It costs 3.5 dollars.", " That is cheap, I think."]


def test_cut5_every_punctuation_mark_but_not_decimal_points():
    out = split_text("价格是3.5元，真的很便宜！你要买吗？", "cut5")
    assert out == ["价格是3.5元，", "真的很便宜！", "你要买吗？"]
    # a piece under five characters merges into the next one
    assert split_text("价格是3.5元，很便宜！你买吗？", "cut5") == ["价格是3.5元，", "很便宜！你买吗？"]


def test_short_fragments_merge_and_each_fragment_ends_in_punctuation():
    out = split_text("好的，是，我知道了，谢谢你的帮助", "cut5")
    assert out[0] == "好的，是，"  # "好的，" alone is shorter than five characters
    assert all(piece[-1] in "。，！？,.?!" for piece in out)


def test_short_first_clause_gets_a_leading_full_stop():
    assert split_text("嗯，好的好的好的。", "cut0")[0].startswith("。")
    assert split_text("Hi, how are you doing today?", "cut0", lang="en")[0].startswith(".")


def test_repeated_punctuation_collapses_and_pure_punctuation_is_dropped():
    assert collapse_repeated_punctuation("what?!..") == "what?"
    assert split_text("……。！", "cut5") == []
    assert split_text("   ", "cut5") == []


def test_over_long_fragment_is_re_split_under_the_limit():
    long = ("很长的句子" * 30 + "，") * 5
    pieces = split_long(long, 200)
    assert "".join(pieces) == long
    assert all(len(p) <= 200 for p in pieces)
    assert all(len(p) <= 510 for p in split_text(long, "cut0"))


def test_merge_short_threshold():
    assert merge_short(["a", "bc", "defgh", "i"], 3) == ["abc", "defghi"]


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="cut9"):
        split_text("你好", "cut9")
    assert set(METHODS) == {f"cut{i}" for i in range(6)}


def test_length_buckets_cover_every_index_once_and_group_similar_lengths():
    lengths = [50, 3, 47, 8, 30, 5]
    buckets = length_buckets(lengths, 2)
    assert sorted(i for b in buckets for i in b) == list(range(6))
    assert buckets[0] == [1, 5] and buckets[-1] == [2, 0]
