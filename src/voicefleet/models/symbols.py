"""The GPT-SoVITS v2 phoneme table: 732 symbols whose index is the phoneme id.

Both SoVITS (`text_embedding`) and GPT (the phoneme embedding) index their tables with these
ids, so the order must be exactly the official one. It is built the official way:

    sorted(set(pad + Chinese initials/finals + Japanese + punctuation/pauses + ARPAbet))
    + ["[", "]"] + sorted(Korean) + sorted(Cantonese)

The first 322 entries are the v1 table. The inventories below are written compactly (a
final with its tones, a vowel with its stresses) and expanded here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

PAD = "_"
PUNCTUATION = ["!", "?", "…", ",", ".", "-"]
PAUSES = ["SP", "SP2", "SP3", "UNK"]

# Mandarin: initials (AA/EE/OO are the zero-initial markers) and finals with tones 1-5 (5 = neutral).
_ZH_INITIALS = "AA EE OO b c ch d f g h j k l m n p q r s sh t w x y z zh"
_ZH_FINALS = ("E En a ai an ang ao e ei en eng er i i0 ia ian iang iao ie in ing iong ir iu o ong ou u ua uai "
              "uan uang ui un uo v van ve vn")
# Japanese (pyopenjtalk phonemes, lower-case plus the devoiced/special capitals).
_JA = "I N U a b by ch cl d dy e f g gy h hy i j k ky m my n ny o p py r ry s sh t ts u v w y z"
# ARPAbet: vowels carry stress 0-2, consonants none; ER and IH also occur unstressed.
_ARPA_VOWELS = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW"
_ARPA_CONSONANTS = "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH ER IH"
# Korean jamo plus the two pause marks.
_KO = "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ空停"
# Cantonese (jyutping, prefixed "Y"): symbols used without a tone, and finals used with tones 1-6.
_YUE_TONELESS = ("Ya Yaa Yai Yak Yau Yb Yc Yd Ye Yf Yg Ygw Yh Yj Yk Ykw Yl Ym Yn Yng Yo Yoi Yok Yon You Yp Ys Yt "
                 "Yuk Yw Yz")
_YUE_TONED = ("Ya Yaa Yaai Yaak Yaam Yaan Yaang Yaap Yaat Yaau Yai Yak Yam Yan Yang Yap Yat Yau Ye Yei Yek Yeng "
              "Yeoi Yeon Yeot Yg Yi Yik Yim Yin Ying Yip Yit Yiu Yk Ym Yn Yo Yoe Yoek Yoeng Yoi Yok Yon Yong Yot "
              "You Yp Yt Yu Yui Yuk Yun Yung Yut Yyu Yyun Yyut")

V1_SIZE = 322


@lru_cache(maxsize=1)
def symbols_v2() -> tuple[str, ...]:
    zh = _ZH_INITIALS.split() + [f + str(t) for f in _ZH_FINALS.split() for t in range(1, 6)]
    arpa = _ARPA_CONSONANTS.split() + [v + str(s) for v in _ARPA_VOWELS.split() for s in range(3)]
    base = sorted(set([PAD] + zh + _JA.split() + PUNCTUATION + PAUSES + arpa))
    yue = _YUE_TONELESS.split() + [f + str(t) for f in _YUE_TONED.split() for t in range(1, 7)]
    return tuple(base + ["[", "]"] + sorted(_KO) + sorted(set(yue)))


@lru_cache(maxsize=1)
def symbol_to_id() -> dict[str, int]:
    return {s: i for i, s in enumerate(symbols_v2())}


def phoneme_ids(phonemes: Sequence[str] | str) -> list[int]:
    """Official v2 symbols (a sequence, or one space-separated string) -> phoneme ids."""
    if isinstance(phonemes, str):
        phonemes = phonemes.split()
    table = symbol_to_id()
    unknown = [p for p in phonemes if p not in table]
    if unknown:
        raise ValueError(f"unknown phoneme symbol(s) {unknown[:5]}: not in the v2 symbol table")
    return [table[p] for p in phonemes]
