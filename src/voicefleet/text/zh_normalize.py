"""Chinese text normalisation, reproducing GPT-SoVITS v2 ``chinese2.text_normalize``.

The official pipeline (PaddleSpeech's TextNormalizer as modified by GPT-SoVITS, then punctuation
mapping) is reproduced rule for rule, including its quirks, because the phonemes a checkpoint
was trained on depend on them:

* the unit table (``m`` -> 米, ``s`` -> 秒, ``kg`` -> 千克, ...) is applied anywhere in a sentence,
  even inside English words, before Latin letters are deleted;
* ``/`` outside a fraction or date becomes 每, ``-`` between operands becomes 减;
* a run of three or more digits with no measure word after it is read digit by digit with 1 as 幺;
* in a time range such as ``9:30-10:15`` the second half is read as 半 whenever the *first* minute
  is 30;
* a temperature always reads 度, even after 摄氏度;
* full-width letters/digits are folded to ASCII and traditional characters are simplified.

Sentence by sentence: split on sentence punctuation, :func:`normalize_sentence`, then
:func:`map_punctuation`; finally runs of punctuation collapse to their first mark.
"""

from __future__ import annotations

import re
import unicodedata

from voicefleet.models.symbols import PUNCTUATION
from voicefleet.text.zh_tables import traditional_to_simplified_table

DIGIT_WORDS = "零一二三四五六七八九"
# Place-value words by power of ten; larger numbers recurse on the part above the largest power.
_PLACE_WORDS = {1: "十", 2: "百", 3: "千", 4: "万", 8: "亿"}

# Units that the official expands wherever they occur, in the official order: earlier entries win
# ("cm" before "m"), and "m" is replaced before "mm", so "mm" reads 米米.
MEASURE_UNITS: tuple[tuple[str, str], ...] = (
    ("cm2", "平方厘米"), ("cm²", "平方厘米"), ("cm3", "立方厘米"), ("cm³", "立方厘米"), ("cm", "厘米"),
    ("db", "分贝"), ("ds", "毫秒"), ("kg", "千克"), ("km", "千米"),
    ("m2", "平方米"), ("m²", "平方米"), ("m³", "立方米"), ("m3", "立方米"), ("ml", "毫升"),
    ("m", "米"), ("mm", "毫米"), ("s", "秒"),
)
_TEMPERATURE_UNITS = ("°C", "℃", "度", "摄氏度")
# Measure words after which a number is read as a quantity (三千九百九十九元, 两周) rather than digit
# by digit. The official alternation reduces to these single characters plus six two-character
# words whose first character is not a measure word on its own.
_MEASURE_CHARS = (
    "万丈世丘丝两个丸亩人亿代令件伏位例元冬出刀分列刻勺匹千升单卮厘双叠口只台合名吨周啖回场块坡堂堆堵"
    "墙壳壶处夏夜天头套季客家寸对寻封尺尾层山岁岭常幅幢平年床座张忽户所手扎打批把担挑捆撮支斗斛斤方日"
    "旬时春曲更月本朵条杯板枚枝架栋株根桶棵段毛毫江泡注溪炮煲片瓶百盆盏盒盘目石砣碗碟秋秒程窠笼管箩箱"
    "篇篮簋米粒纪线罐网罗群脚腔艘袋袭角课贯贴趟跳身辆辈道里针钟钧钱钵铢铺锅锱间阙队阵面页顶项颗首"
)
_MEASURE_WORDS = ("小时", "公分", "美元", "十吨", "微克", "微米")

_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_OPERATOR_WORDS = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于"}
# Readings of Greek letters: each key lists the letter forms that share the reading.
_GREEK_READINGS = {
    "α": "阿尔法", "β": "贝塔", "γΓ": "伽玛", "δΔ": "德尔塔", "ε": "艾普西龙", "ζ": "捷塔", "η": "依塔",
    "θΘ": "西塔", "ι": "艾欧塔", "κ": "喀帕", "λΛ": "拉姆达", "μ": "缪", "ν": "拗", "ξΞ": "克西",
    "ο": "欧米克伦", "πΠ": "派", "ρ": "肉", "ςΣσ": "西格玛", "τ": "套", "υ": "宇普西龙", "φΦ": "服艾",
    "χ": "器", "ψΨ": "普赛", "ωΩ": "欧米伽",
}
# Marks deleted before sentence splitting, and again by the last pass of normalize_sentence.
_DROPPED_MARKS = "—《》【】<>{}()（）#&@“”^_|\\"
_SENTENCE_END = re.compile(r"([：、，；。？！,;?!][”’]?)")
# Punctuation marks -> the six v2 punctuation symbols (the official's rep_map); "..." is handled first.
_PUNCTUATION_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    "$": ".", "/": ",", "—": "-", "~": "…", "～": "…",
}
_NOT_KEPT = re.compile("[^\u4e00-\u9fa5" + re.escape("".join(PUNCTUATION)) + "]+")
_PUNCTUATION_RUN = re.compile("([" + re.escape("".join(PUNCTUATION)) + "])[" + re.escape("".join(PUNCTUATION)) + "]+")


# ---------------------------------------------------------------------------------------------
# Reading numbers.


def _digit_word(char: str) -> str:
    return DIGIT_WORDS[unicodedata.decimal(char)]


def verbalize_digits(digits: str, *, one_as_yao: bool = False) -> str:
    """Digit by digit: "2024" -> 二零二四; with ``one_as_yao`` 1 reads 幺 (phone-number style)."""
    words = "".join(_digit_word(d) for d in digits)
    return words.replace("一", "幺") if one_as_yao else words


def _place_value_words(digits: str) -> list[str]:
    """Words for a digit string that may have leading zeros; a skipped place reads 零 once."""
    significant = digits.lstrip("0")
    if not significant:
        return []
    if len(significant) == 1:
        zero = [DIGIT_WORDS[0]] if len(significant) < len(digits) else []
        return zero + [_digit_word(significant)]
    power = max(p for p in _PLACE_WORDS if p < len(significant))
    # The split is on the full string, leading zeros included, exactly as the official does.
    return _place_value_words(digits[:-power]) + [_PLACE_WORDS[power]] + _place_value_words(digits[-power:])


def verbalize_cardinal(digits: str) -> str:
    """An integer digit string as a number: "6300" -> 六千三百, "15" -> 十五, "000" -> 零, "" -> ""."""
    if not digits:
        return ""
    digits = digits.lstrip("0")
    if not digits:
        return DIGIT_WORDS[0]
    words = _place_value_words(digits)
    if words[:2] == [DIGIT_WORDS[1], _PLACE_WORDS[1]]:
        words = words[1:]  # 一十五 is said 十五
    return "".join(words)


def verbalize_number(number: str) -> str:
    """"35.6" -> 三十五点六, ".5" -> 零点五; trailing decimal zeros collapse to one ("3.20" -> 三点二零)."""
    integer, _, decimals = number.partition(".")
    if "." in decimals:
        raise ValueError(f"number {number!r} has more than one decimal point")
    words = verbalize_cardinal(integer)
    decimals = decimals.rstrip("0") + "0" if decimals.endswith("0") else decimals
    if decimals:
        words = (words or DIGIT_WORDS[0]) + "点" + verbalize_digits(decimals)
    return words


def _signed_number(match: re.Match) -> str:
    """Shared replacement of the number patterns: "-3.5" -> 负三点五, ".5" -> 零点五."""
    if match["fraction"]:
        return verbalize_number(match["fraction"])  # a bare ".5" keeps no sign
    return ("负" if match["sign"] else "") + verbalize_number(match["value"])


# ---------------------------------------------------------------------------------------------
# Patterns, in the order normalize_sentence applies them.

_DATE = re.compile(
    r"(?P<year>\d{4}|\d{2})年(?:(?P<month>0?[1-9]|1[0-2])月)?"
    r"(?:(?P<day>0?[1-9]|[12][0-9]|30|31)(?P<day_word>[日号]))?"
)
_NUMERIC_DATE = re.compile(
    r"(?P<year>\d{4})(?P<sep>[- /.])(?P<month>0[1-9]|1[012])(?P=sep)(?P<day>0[1-9]|[12][0-9]|3[01])"
)


def _clock(tag: str) -> str:
    return rf"(?P<hour{tag}>[0-1]?[0-9]|2[0-3]):(?P<minute{tag}>[0-5][0-9])(?::(?P<second{tag}>[0-5][0-9]))?"


_TIME_RANGE = re.compile(_clock("") + "[~-]" + _clock("2"))
_TIME = re.compile(_clock(""))

_NUMBER_BODY = r"(?:-?\d+(?:\.\d+)?|\.\d+)"
_RANGE_UNITS = "|".join(re.escape(u) for u in ("%", *_TEMPERATURE_UNITS, *(k for k, _ in MEASURE_UNITS)))
_UNIT_RANGE = re.compile(rf"{_NUMBER_BODY}(?:{_RANGE_UNITS})~{_NUMBER_BODY}(?:{_RANGE_UNITS})")
_TEMPERATURE = re.compile(r"(?P<sign>-?)(?P<value>\d+(?:\.\d+)?)(?:°C|℃|度|摄氏度)")

_OPERAND = rf"(?:-?\d+(?:\.\d+)?[{_SUPERSCRIPTS}]*|\.\d+[{_SUPERSCRIPTS}]*|[A-Za-z][{_SUPERSCRIPTS}]*)"
_ARITHMETIC = re.compile(rf"(?P<left>{_OPERAND})(?P<op>[+\-×÷=])(?P<right>{_OPERAND})")
_POWER = re.compile(rf"[{_SUPERSCRIPTS}]+")

_FRACTION = re.compile(r"(?P<sign>-?)(?P<numerator>\d+)/(?P<denominator>\d+)")
_PERCENT = re.compile(r"(?P<sign>-?)(?P<value>\d+(?:\.\d+)?)%")
_MOBILE = re.compile(r"(?<!\d)(?:\+?86 ?)?1(?:[38]\d|5[0-35-9]|7[678]|9[89])\d{8}(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)(?:0(?:10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7}(?!\d)")
_SERVICE_NUMBER = re.compile(r"400-?\d{3}-?\d{4}")
_NUMBER_RANGE = re.compile(
    r"(?<![\d+\-×÷=])(?P<first>-?\d+(?:\.\d+)?)[-~](?P<second>-?\d+(?:\.\d+)?)(?![\d+\-×÷=])"
)
_NEGATIVE_INTEGER = re.compile(r"-(?P<value>\d+)")
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:\.\d+)+")
_DECIMAL = re.compile(r"(?P<sign>-?)(?P<value>\d+\.\d+)|(?P<fraction>\.\d+)")
_QUANTITY = re.compile(
    r"(?P<value>\d+)(?P<approx>[多余几+])?(?P<measure>" + "|".join(_MEASURE_WORDS) + f"|[{_MEASURE_CHARS}])"
)
_DIGIT_RUN = re.compile(r"\d{3,}")
_NUMBER = re.compile(r"(?P<sign>-?)(?P<value>\d+(?:\.\d+)?)|(?P<fraction>\.\d+)")


def _say_date(match: re.Match) -> str:
    words = verbalize_digits(match["year"]) + "年"
    if match["month"]:
        words += verbalize_cardinal(match["month"]) + "月"
    if match["day"]:
        words += verbalize_cardinal(match["day"]) + match["day_word"]
    return words


def _say_numeric_date(match: re.Match) -> str:
    return (verbalize_digits(match["year"]) + "年" + verbalize_cardinal(match["month"]) + "月"
            + verbalize_cardinal(match["day"]) + "日")


def _clock_part(number: str) -> str:
    """Minutes/seconds: a leading zero is read ("05" -> 零五)."""
    words = verbalize_number(number.lstrip("0"))
    return DIGIT_WORDS[0] + words if number.startswith("0") else words


def _say_clock(hour: str, minute: str, second: str | None, *, half_if_minute: str) -> str:
    words = verbalize_number(hour) + "点"
    if minute.lstrip("0"):
        words += "半" if int(half_if_minute) == 30 else _clock_part(minute) + "分"
    if second and second.lstrip("0"):
        words += _clock_part(second) + "秒"
    return words


def _say_time(match: re.Match) -> str:
    return _say_clock(match["hour"], match["minute"], match["second"], half_if_minute=match["minute"])


def _say_time_range(match: re.Match) -> str:
    start = _say_time(match)
    # Official quirk: the end reads 半 when the *start* minute is 30 (and the end minute is not 0).
    end = _say_clock(match["hour2"], match["minute2"], match["second2"], half_if_minute=match["minute"])
    return f"{start}至{end}"


def _say_temperature(match: re.Match) -> str:
    # Always 度, 摄氏度 included: the official compares the decimal-part group with "摄氏度".
    return ("零下" if match["sign"] else "") + verbalize_number(match["value"]) + "度"


def _expand_units(sentence: str) -> str:
    for unit, words in MEASURE_UNITS:
        sentence = sentence.replace(unit, words)
    return sentence


def _say_arithmetic(match: re.Match) -> str:
    return match["left"] + _OPERATOR_WORDS[match["op"]] + match["right"]


def _say_power(match: re.Match) -> str:
    return "的" + unicodedata.normalize("NFKC", match[0]) + "次方"


def _say_fraction(match: re.Match) -> str:
    sign = "负" if match["sign"] else ""
    return f"{sign}{verbalize_number(match['denominator'])}分之{verbalize_number(match['numerator'])}"


def _say_percent(match: re.Match) -> str:
    return ("负" if match["sign"] else "") + "百分之" + verbalize_number(match["value"])


def _say_phone(number: str, separator: str | None) -> str:
    """Digit groups read with 幺, joined by a full-width comma (a pause after punctuation mapping)."""
    groups = number.strip("+").split(separator)
    return "，".join(verbalize_digits(group, one_as_yao=True) for group in groups)


def _say_number_range(match: re.Match) -> str:
    return _NUMBER.sub(_signed_number, match["first"]) + "到" + _NUMBER.sub(_signed_number, match["second"])


def _say_version(match: re.Match) -> str:
    return "".join("点" if c == "." else verbalize_number(c) for c in match[0])


def _say_quantity(match: re.Match) -> str:
    number = verbalize_number(match["value"])
    approx = "多" if match["approx"] == "+" else match["approx"] or ""
    return ("两" if number == "二" else number) + approx + match["measure"]


def _final_replacements() -> dict[int, str]:
    """Character table for the official last pass: symbols read aloud, marks dropped.

    "-" and "=" left after the arithmetic pass are read 减 and 等 (the official deletes them only
    after replacing them).
    """
    table: dict[str, str] = {"/": "每", "+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等"}
    for value in range(1, 11):  # circled numbers ①..⑩
        table[chr(0x2460 + value - 1)] = "十" if value == 10 else DIGIT_WORDS[value]
    for letters, reading in _GREEK_READINGS.items():
        table.update(dict.fromkeys(letters, reading))
    table.update(dict.fromkeys(_DROPPED_MARKS, ""))
    return str.maketrans(table)


_FINAL_TABLE = _final_replacements()
_FULL_WIDTH_TABLE = str.maketrans(
    {chr(ord(c) + 0xFEE0): c for c in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    | {"\u3000": " "}
)


def normalize_sentence(sentence: str) -> str:
    """Verbalise one sentence: dates, times, units, arithmetic, numbers, symbols (official order)."""
    sentence = sentence.translate(traditional_to_simplified_table()).translate(_FULL_WIDTH_TABLE)
    sentence = _DATE.sub(_say_date, sentence)
    sentence = _NUMERIC_DATE.sub(_say_numeric_date, sentence)
    sentence = _TIME_RANGE.sub(_say_time_range, sentence)
    sentence = _TIME.sub(_say_time, sentence)
    sentence = _UNIT_RANGE.sub(lambda m: m[0].replace("~", "至"), sentence)
    sentence = _TEMPERATURE.sub(_say_temperature, sentence)
    sentence = _expand_units(sentence)
    while _ARITHMETIC.search(sentence):  # "3+5=8": each pass reads the operators it can pair up
        sentence = _ARITHMETIC.sub(_say_arithmetic, sentence)
    sentence = _POWER.sub(_say_power, sentence)
    sentence = _FRACTION.sub(_say_fraction, sentence)
    sentence = _PERCENT.sub(_say_percent, sentence)
    sentence = _MOBILE.sub(lambda m: _say_phone(m[0], None), sentence)
    sentence = _LANDLINE.sub(lambda m: _say_phone(m[0], "-"), sentence)
    sentence = _SERVICE_NUMBER.sub(lambda m: _say_phone(m[0], "-"), sentence)
    sentence = _NUMBER_RANGE.sub(_say_number_range, sentence)
    sentence = _NEGATIVE_INTEGER.sub(lambda m: "负" + verbalize_number(m["value"]), sentence)
    sentence = _VERSION.sub(_say_version, sentence)
    sentence = _DECIMAL.sub(_signed_number, sentence)
    sentence = _QUANTITY.sub(_say_quantity, sentence)
    sentence = _DIGIT_RUN.sub(lambda m: verbalize_digits(m[0], one_as_yao=True), sentence)
    sentence = _NUMBER.sub(_signed_number, sentence)
    return sentence.translate(_FINAL_TABLE)


def split_sentences(text: str) -> list[str]:
    """Drop ASCII spaces and bracket marks, then cut after each sentence-ending mark."""
    text = text.replace(" ", "").translate(str.maketrans(dict.fromkeys(_DROPPED_MARKS, "")))
    text = _SENTENCE_END.sub("\\1\n", text).strip()
    return [sentence.strip() for sentence in re.split(r"\n+", text)]


def map_punctuation(sentence: str) -> str:
    """Map marks to the v2 punctuation symbols and delete everything but CJK and those symbols."""
    sentence = sentence.replace("嗯", "恩").replace("呣", "母")  # the official's two spelling swaps
    sentence = sentence.replace("...", "…").translate(str.maketrans(_PUNCTUATION_MAP))
    return _NOT_KEPT.sub("", sentence)


def collapse_punctuation(text: str) -> str:
    """A run of punctuation symbols keeps only its first: "!!!" -> "!", "?!" -> "?"."""
    return _PUNCTUATION_RUN.sub(r"\1", text)


def normalize(text: str) -> str:
    """Official ``chinese2.text_normalize``: raw text -> CJK characters and v2 punctuation only."""
    sentences = [map_punctuation(normalize_sentence(s)) for s in split_sentences(text)]
    return collapse_punctuation("".join(sentences))
