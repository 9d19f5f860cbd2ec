"""lmbrain.textgrid: Praat's three text formats, encodings, exact writing, malformed files, word tables."""

import os
import random
import re
import stat

import numpy as np
import pandas as pd
import pytest

from lmbrain import LmbrainWarning
from lmbrain import textgrid as tg
from lmbrain.textgrid import NON_WORDS, NON_WORDS_HUTH, Interval, TextGrid, TextGridError, Tier

# ----------------------------------------------------------------------------------------------
# Fixtures: one TextGrid (a phone tier and a word tier, as in LeBel et al. 2023) hand-written in
# each of Praat's formats, following what Praat's writers produce (fon/TextGrid_files.cpp,
# sys/Data.cpp, sys/abcio.cpp): numbers as %.15g, inner quotes doubled.

# Long format. Praat ends every "key = value" line (and "tiers? <exists>", "item []:") with a
# space; the space is added below so that editors cannot strip it from this source file.
_LONG_LINES = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 4.2
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "phone"
        xmin = 0
        xmax = 4.2
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 0.5
            text = ""
        intervals [2]:
            xmin = 0.5
            xmax = 0.8
            text = "HH"
        intervals [3]:
            xmin = 0.8
            xmax = 1.25
            text = "AH0"
        intervals [4]:
            xmin = 1.25
            xmax = 4.2
            text = "sp"
    item [2]:
        class = "IntervalTier"
        name = "word"
        xmin = 0
        xmax = 4.2
        intervals: size = 8
        intervals [1]:
            xmin = 0
            xmax = 0.5
            text = "sentence_start"
        intervals [2]:
            xmin = 0.5
            xmax = 1.25
            text = "Hello"
        intervals [3]:
            xmin = 1.25
            xmax = 1.5
            text = "sp"
        intervals [4]:
            xmin = 1.5
            xmax = 2
            text = "{LG}"
        intervals [5]:
            xmin = 2
            xmax = 3
            text = "SAY ""HI"""
        intervals [6]:
            xmin = 3
            xmax = 3.25
            text = ""
        intervals [7]:
            xmin = 3.25
            xmax = 4
            text = "World's"
        intervals [8]:
            xmin = 4
            xmax = 4.2
            text = "SENTENCE_END"
'''
LONG = "\n".join(
    line + " " if (" = " in line and not line.startswith(("File type", "Object class"))) or line.startswith(("tiers?", "item []"))
    else line
    for line in _LONG_LINES.split("\n")
)

SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
4.2
<exists>
2
"IntervalTier"
"phone"
0
4.2
4
0
0.5
""
0.5
0.8
"HH"
0.8
1.25
"AH0"
1.25
4.2
"sp"
"IntervalTier"
"word"
0
4.2
8
0
0.5
"sentence_start"
0.5
1.25
"Hello"
1.25
1.5
"sp"
1.5
2
"{LG}"
2
3
"SAY ""HI"""
3
3.25
""
3.25
4
"World's"
4
4.2
"SENTENCE_END"
'''

# Chronological: items sorted by start time, then tier; each after an empty line and a
# "! tier name:" comment; no newline at the end of the file.
CHRONO = '''"Praat chronological TextGrid text file"
0 4.2   ! Time domain.
2   ! Number of tiers.
"IntervalTier" "phone" 0 4.2
"IntervalTier" "word" 0 4.2

! phone:
1 0 0.5
""

! word:
2 0 0.5
"sentence_start"

! phone:
1 0.5 0.8
"HH"

! word:
2 0.5 1.25
"Hello"

! phone:
1 0.8 1.25
"AH0"

! phone:
1 1.25 4.2
"sp"

! word:
2 1.25 1.5
"sp"

! word:
2 1.5 2
"{LG}"

! word:
2 2 3
"SAY ""HI"""

! word:
2 3 3.25
""

! word:
2 3.25 4
"World's"

! word:
2 4 4.2
"SENTENCE_END"'''

FIXTURES = {"long": LONG, "short": SHORT, "chronological": CHRONO}

GRID = TextGrid(0, 4.2, [
    Tier("phone", "IntervalTier", 0, 4.2, [Interval(0, 0.5, ""), Interval(0.5, 0.8, "HH"), Interval(0.8, 1.25, "AH0"),
                                           Interval(1.25, 4.2, "sp")]),
    Tier("word", "IntervalTier", 0, 4.2, [
        Interval(0, 0.5, "sentence_start"), Interval(0.5, 1.25, "Hello"), Interval(1.25, 1.5, "sp"),
        Interval(1.5, 2, "{LG}"), Interval(2, 3, 'SAY "HI"'), Interval(3, 3.25, ""), Interval(3.25, 4, "World's"),
        Interval(4, 4.2, "SENTENCE_END"),
    ]),
])

WORDS = [("hello", 0.5, 1.25, 0.875), ('say "hi"', 2.0, 3.0, 2.5), ("world's", 3.25, 4.0, 3.625)]


def rows(df):
    return [(w, a, b, m) for w, a, b, m in df[["word", "onset", "offset", "midpoint"]].itertuples(index=False)]


def put(tmp_path, text, name="story.TextGrid", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return p


def line_of(text, needle):
    """1-based number of the first line of ``text`` containing ``needle``."""
    return next(i for i, line in enumerate(text.split("\n"), 1) if needle in line)


def error_of(path):
    with pytest.raises(TextGridError) as err:
        tg.read(path)
    return str(err.value)


# ----------------------------------------------------------------------------------------------
# Reading the three formats
def test_long_fixture_looks_like_praat():
    assert "xmin = 0 \n" in LONG and "item []: \n" in LONG and "    item [1]:\n" in LONG
    assert 'File type = "ooTextFile"\n' in LONG and '            text = "SAY ""HI""" \n' in LONG


@pytest.mark.parametrize("fmt", tg.FORMATS)
def test_read_words_each_format(tmp_path, fmt):
    df = tg.read_words(put(tmp_path, FIXTURES[fmt]))
    assert list(df.columns) == ["word", "onset", "offset", "midpoint"]
    assert rows(df) == WORDS
    assert all(df[c].dtype == np.float64 for c in ("onset", "offset", "midpoint"))
    assert pd.api.types.is_string_dtype(df["word"])


@pytest.mark.parametrize("fmt", tg.FORMATS)
def test_read_grid_each_format(tmp_path, fmt):
    grid = tg.read(put(tmp_path, FIXTURES[fmt]))
    assert grid == GRID
    assert [t.kind for t in grid.tiers] == ["IntervalTier", "IntervalTier"]


@pytest.mark.parametrize("fmt", tg.FORMATS)
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16-le-bom", "utf-16-be-bom", "utf-16-le", "utf-16-be"])
def test_encodings_read_identically(tmp_path, fmt, encoding):
    text = FIXTURES[fmt]
    data = {
        "utf-8-sig": text.encode("utf-8-sig"),
        "utf-16-le-bom": b"\xff\xfe" + text.encode("utf-16-le"),
        "utf-16-be-bom": b"\xfe\xff" + text.encode("utf-16-be"),
        "utf-16-le": text.encode("utf-16-le"),   # no BOM: found from the NUL bytes
        "utf-16-be": text.encode("utf-16-be"),
    }[encoding]
    p = put(tmp_path, data)
    assert tg.read(p) == GRID
    assert rows(tg.read_words(p)) == WORDS


@pytest.mark.parametrize("fmt", tg.FORMATS)
def test_crlf_and_cr_line_breaks(tmp_path, fmt):
    assert tg.read(put(tmp_path, FIXTURES[fmt].replace("\n", "\r\n"), "crlf.TextGrid")) == GRID
    assert tg.read(put(tmp_path, FIXTURES[fmt].replace("\n", "\r"), "cr.TextGrid")) == GRID


@pytest.mark.parametrize("fmt", tg.FORMATS)
def test_number_spellings(tmp_path, fmt):
    # 2 -> 2.0E+0 (one place), every 1.5 -> 15e-1, every 0.5 -> +.5
    old, new = {"long": ("xmax = 2 \n", "xmax = 2.0E+0 \n"), "short": ("\n1.5\n2\n", "\n1.5\n2.0E+0\n"),
                "chronological": ("\n2 1.5 2\n", "\n2 1.5 2.0E+0\n")}[fmt]
    text = FIXTURES[fmt].replace(old, new)
    text = re.sub(r"(?<![\w.])1\.5(?![\w.])", "15e-1", text)
    text = re.sub(r"(?<![\w.])0\.5(?![\w.])", "+.5", text)
    assert text.count("2.0E+0") == 1 and text.count("15e-1") == 2 and text.count("+.5") == 4
    assert tg.read(put(tmp_path, text)) == GRID


def test_multiline_strings_comments_and_line_numbers(tmp_path):
    text = SHORT.replace('"HH"', '"H\nH" ! a comment after a value').replace("\n0.8\n1.25\n", "\n0.8 ! xmin\n1.25\n")
    text = "! a comment on the first line\n" + text
    grid = tg.read(put(tmp_path, text))
    assert grid.tiers[0].items[1].text == "H\nH"
    assert grid.tiers[0].items[2] == Interval(0.8, 1.25, "AH0")
    # line numbers count the line break inside the string
    bad = text.replace('"Hello"', "oops")
    msg = error_of(put(tmp_path, bad, "bad.TextGrid"))
    assert f"bad.TextGrid, line {line_of(bad, 'oops')}: expected a quoted string for the text of interval 2 of 8" in msg


def test_praat_manual_style_hand_written_file(tmp_path):
    # values with comments and free text after them, as Praat itself accepts
    text = '''"ooTextFile"
"TextGrid"
0 2.3 ! time domain of TextGrid
<exists>
3 tiers
"IntervalTier" "Mary" ! type and name of tier 1
0 2.3 ! time domain of tier 1
1 interval coming
0 2.3 "" ! interval 1 on tier 1
"IntervalTier" "John"
0 2.3
1 interval coming
0 2.3 "yes"
"TextTier" "bell"
0 2.3
1 point coming
1.5 "ding"
'''
    grid = tg.read(put(tmp_path, text))
    assert grid == TextGrid(0, 2.3, [Tier("Mary", "IntervalTier", 0, 2.3, [Interval(0, 2.3, "")]),
                                     Tier("John", "IntervalTier", 0, 2.3, [Interval(0, 2.3, "yes")]),
                                     Tier("bell", "TextTier", 0, 2.3, [Interval(1.5, 1.5, "ding")])])


def test_point_tiers_in_long_format(tmp_path):
    # tabs instead of spaces, no trailing spaces, and "time =" as older TextGrid files call "number ="
    text = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 2.3
tiers? <exists>
size = 2
item []:
\titem [1]:
\t\tclass = "TextTier"
\t\tname = "bell"
\t\txmin = 0
\t\txmax = 2.3
\t\tpoints: size = 2
\t\tpoints [1]:
\t\t\tnumber = 0.25
\t\t\tmark = "ding"
\t\tpoints [2]:
\t\t\ttime = 1.75
\t\t\tmark = "dong"
\titem [2]:
\t\tclass = "IntervalTier"
\t\tname = "words"
\t\txmin = 0
\t\txmax = 2.3
\t\tintervals: size = 1
\t\tintervals [1]:
\t\t\txmin = 0
\t\t\txmax = 2.3
\t\t\ttext = "Bell"
'''
    grid = tg.read(put(tmp_path, text))
    assert grid.tiers[0] == Tier("bell", "TextTier", 0, 2.3, [Interval(0.25, 0.25, "ding"), Interval(1.75, 1.75, "dong")])
    assert tg.read_words(put(tmp_path, text))["word"].tolist() == ["bell"]


def test_no_tiers(tmp_path):
    text = 'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0 \nxmax = 1 \ntiers? <absent> \n'
    assert tg.read(put(tmp_path, text)) == TextGrid(0, 1, [])


# ----------------------------------------------------------------------------------------------
# Writing
@pytest.mark.parametrize("fmt", tg.FORMATS)
def test_writer_reproduces_praat_files_byte_for_byte(tmp_path, fmt):
    out = tg.write(tmp_path / "out.TextGrid", GRID, format=fmt)
    assert out == tmp_path / "out.TextGrid"
    assert out.read_bytes() == FIXTURES[fmt].encode("utf-8")


@pytest.mark.parametrize("fmt", tg.FORMATS)
def test_utf16_is_written_as_praat_does(tmp_path, fmt):
    data = tg.write(tmp_path / "out.TextGrid", GRID, format=fmt, encoding="utf-16").read_bytes()
    assert data[:2] == b"\xfe\xff" and data[2:].decode("utf-16-be") == FIXTURES[fmt]


def test_chronological_point_lines():
    grid = TextGrid(0, 2, [Tier("bell", "TextTier", 0, 2, [Interval(1.5, 1.5, "ding")]),
                           Tier("w", "IntervalTier", 0, 2, [Interval(0, 2, "a")])])
    text = tg._write_chronological(grid)
    assert text.split("\n")[5:] == ["", "! w:", "2 0 2", '"a"', "", "! bell:", "1 1.5 ", '"ding"']


def test_numbers_are_written_like_praat():
    assert [tg._num(x) for x in (0, 2.0, 4.2, 0.1 + 0.2, 1 / 3, 1e-7, 123456.789, 1e16, -0.5)] == [
        "0", "2", "4.2", "0.30000000000000004", "0.3333333333333333", "1e-07", "123456.789", "1e+16", "-0.5"]


TRICKY = TextGrid(-0.5, 10000.1, [
    Tier("phone", "IntervalTier", -0.5, 10000.1, [
        Interval(-0.5, 0.1 + 0.2, ""),
        Interval(0.1 + 0.2, 1 / 3, 'a "quoted" ""x"" "'),
        Interval(1 / 3, 2.5, '"'),
        Interval(2.5, 10000.1, "ünïcødé 日本 🎧 ! <exists> \n second line\r\n\tthird\rfourth"),
    ]),
    Tier("bell", "TextTier", 0, 10000.1, [Interval(1e-7, 1e-7, "ding"), Interval(2.5, 2.5, ""), Interval(2.5, 2.5, "x")]),
    Tier('name "with" quotes\nand a line break', "IntervalTier", 0, 1, [Interval(0, 1, "x = 3")]),
    Tier("", "TextTier", 0, 1, []),
    Tier("empty", "IntervalTier", 0, 1, []),
])


@pytest.mark.parametrize("fmt", tg.FORMATS)
@pytest.mark.parametrize("encoding", tg.ENCODINGS)
@pytest.mark.parametrize("grid", [GRID, TRICKY, TextGrid(0, 1, [])], ids=["lebel", "tricky", "no_tiers"])
def test_round_trip(tmp_path, fmt, encoding, grid):
    back = tg.read(tg.write(tmp_path / "x.TextGrid", grid, format=fmt, encoding=encoding))
    # \r\n inside a text reads back as \n (CRLF files and LF files give the same text)
    expected = TextGrid(grid.xmin, grid.xmax, [
        Tier(t.name, t.kind, t.xmin, t.xmax, [Interval(i.xmin, i.xmax, i.text.replace("\r\n", "\n")) for i in t.items])
        for t in grid.tiers])
    assert back == expected


def test_write_is_atomic_and_keeps_umask_permissions(tmp_path):
    p = tmp_path / "sub" / "x.TextGrid"
    tg.write(p, GRID)
    tg.write(p, GRID, format="short")  # overwrite
    assert p.read_text() == SHORT
    assert sorted(os.listdir(p.parent)) == ["x.TextGrid"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    bad = TextGrid(0, 1, [Tier("w", "IntervalTier", 0, 1, [Interval(1, 0.5, "backwards")])])
    with pytest.raises(ValueError, match="ends"):
        tg.write(p, bad)
    assert p.read_text() == SHORT and sorted(os.listdir(p.parent)) == ["x.TextGrid"]


def test_write_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="format"):
        tg.write(tmp_path / "x.TextGrid", GRID, format="binary")
    with pytest.raises(ValueError, match="encoding"):
        tg.write(tmp_path / "x.TextGrid", GRID, encoding="latin-1")
    with pytest.raises(ValueError, match="xmin == xmax"):
        tg.write(tmp_path / "x.TextGrid", TextGrid(0, 1, [Tier("b", "TextTier", 0, 1, [Interval(0, 1, "")])]))
    with pytest.raises(ValueError, match="kind"):
        tg.write(tmp_path / "x.TextGrid", TextGrid(0, 1, [Tier("b", "PointTier", 0, 1, [])]))
    with pytest.raises(ValueError, match="non-finite"):
        tg.write(tmp_path / "x.TextGrid", TextGrid(0, float("nan"), []))
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# Malformed files
def test_non_numeric_time_names_file_and_line(tmp_path):
    for fmt, old, new in [("long", "            xmax = 3 \n", "            xmax = abc \n"),
                          ("short", "\n2\n3\n", "\n2\nabc\n"),
                          ("chronological", "\n2 2 3\n", "\n2 2 abc\n")]:
        text = FIXTURES[fmt].replace(old, new)
        assert text != FIXTURES[fmt]
        msg = error_of(put(tmp_path, text, f"{fmt}.TextGrid"))
        assert msg.startswith(f"{tmp_path / fmt}.TextGrid, line {line_of(text, 'abc')}: expected a number for xmax of ")
        assert msg.endswith("got 'abc'")
        if fmt != "chronological":
            assert "interval 5 of 8 in tier 2 ('word')" in msg


def test_non_numeric_time_message_format(tmp_path, monkeypatch):
    (tmp_path / "stories").mkdir()
    text = LONG.replace("xmax = 4.2 \ntiers?", "xmax = four \ntiers?")
    monkeypatch.chdir(tmp_path)
    put(tmp_path, text, "stories/foo.TextGrid")
    with pytest.raises(TextGridError, match=r"^stories/foo\.TextGrid, line 5: expected a number for xmax of the TextGrid, got 'four'$"):
        tg.read("stories/foo.TextGrid")


@pytest.mark.parametrize("fmt", ["long", "short"])
def test_truncated_file_reports_its_last_line(tmp_path, fmt):
    text = FIXTURES[fmt]
    cut = text[: text.index('"Hello"')]
    msg = error_of(put(tmp_path, cut, "cut.TextGrid"))
    n_lines = len(cut.rstrip().split("\n"))
    assert msg.startswith(f"{tmp_path / 'cut.TextGrid'}, line {n_lines}: the file ends early (truncated?): "
                          "expected a quoted string for the text of interval 2 of 8 in tier 2 ('word')")


def test_truncated_chronological_tier_headers(tmp_path):
    cut = CHRONO[: CHRONO.index('"IntervalTier" "word"')]
    msg = error_of(put(tmp_path, cut, "cut.TextGrid"))
    assert "cut.TextGrid, line 4: the file ends early (truncated?): expected a quoted string for the class of tier 2 of 2" in msg
    cut = CHRONO[: CHRONO.index('"Hello"')]
    msg = error_of(put(tmp_path, cut, "cut2.TextGrid"))
    assert f"cut2.TextGrid, line {len(cut.rstrip().split(chr(10)))}: the file ends early" in msg


MALFORMED = {
    "missing_header": (LONG.split("\n", 2)[2], "line 2: expected a Praat TextGrid text file"),
    "chrono_missing_header": (CHRONO.split("\n", 1)[1], "line 1: expected a Praat TextGrid text file"),
    "empty": ("", "line 1: the file is empty"),
    "blank": ("\n  \n\t\n", "line 1: the file is empty"),
    "not_textgrid": ("hello world\nthis is not a TextGrid\n", "line 1: expected a Praat TextGrid text file"),
    "csv": ("word,onset,offset\nhello,0.5,1.25\n", "line 1: expected a Praat TextGrid text file"),
    "json": ('{"word": "hello"}\n', "line 1: expected a Praat TextGrid text file"),
    "json_list": ('["word", "hello"]\n', "line 1: expected a Praat TextGrid text file"),
    "other_object": (LONG.replace('"TextGrid"', '"Pitch 1"'), 'line 2: the object class is "Pitch 1", not "TextGrid"'),
    "binary": (b"ooBinaryFile\x08TextGrid\x00\x00\x00\x00\x01\x02", "line 1: this is a binary Praat file"),
    "nul_bytes": (b"\x00\x01\x02\x00\x00\x00\x00\x01\x03\x00", "NUL"),
    "count_too_big": (LONG.replace("intervals: size = 8", "intervals: size = 9"),
                      "the file ends early (truncated?): expected a number for xmin of interval 9 of 9 in tier 2"),
    "count_too_big_first_tier": (LONG.replace("intervals: size = 4", "intervals: size = 5"),
                                 "expected a number for xmin of interval 5 of 5 in tier 1 ('phone'), got the string \"IntervalTier\""),
    "count_too_small": (LONG.replace("intervals: size = 8", "intervals: size = 7"), "expected the end of the file after tier 2 of 2"),
    "short_count_too_small": (SHORT.replace("\n4\n0\n0.5", "\n3\n0\n0.5"),
                              "for the class of tier 2 of 2 (\"IntervalTier\" or \"TextTier\"; does the item count of "
                              "tier 1 match its items?), got '1.25'"),
    "too_many_tiers": (LONG.replace("size = 2 \n", "size = 3 \n"), "expected a quoted string for the class of tier 3 of 3"),
    "backwards": (LONG.replace("xmin = 2 \n            xmax = 3 ", "xmin = 2 \n            xmax = 1.5 "),
                  "interval 5 of 8 in tier 2 ('word') ends (xmax = 1.5) before it starts (xmin = 2)"),
    "chrono_backwards": (CHRONO.replace("\n2 2 3\n", "\n2 2 1.5\n"), "ends (xmax = 1.5) before it starts (xmin = 2)"),
    "tier_backwards": (SHORT.replace('"phone"\n0\n4.2', '"phone"\n5\n4.2'), "tier 1 ('phone') ends (xmax = 4.2) before it starts"),
    "unterminated_at_end": (SHORT[:-2], "unterminated string (no closing quote"),
    "unterminated_inside": (LONG.replace('text = "Hello"', 'text = "Hello'), "unterminated string or undoubled quote"),
    "undoubled_quote": (LONG.replace('"SAY ""HI"""', '"SAY "HI""'), "unterminated string or undoubled quote"),
    "bad_tier_class": (LONG.replace('"IntervalTier" \n        name = "word"', '"PointTier" \n        name = "word"'),
                       'line 32: expected the class of tier 2 of 2 ("IntervalTier" or "TextTier"), got the string "PointTier"'),
    "bad_flag": (LONG.replace("<exists>", "<maybe>"), "expected <exists> or <absent> (tiers?), got <maybe>"),
    "fractional_count": (LONG.replace("size = 2 \n", "size = 1.5 \n"), "expected a whole number >= 0 for the number of tiers"),
    "negative_count": (SHORT.replace("\n8\n", "\n-8\n"), "expected a whole number >= 0 for the number of intervals of tier 2"),
    "infinite_time": (LONG.replace("xmax = 4.2 \ntiers", "xmax = 1e999 \ntiers"), "expected a finite number for xmax of the TextGrid"),
    "chrono_tier_number": (CHRONO.replace("\n2 2 3\n", "\n7 2 3\n"), "expected a tier number from 1 to 2, got '7'"),
    "chrono_string_for_number": (CHRONO.replace("\n2 2 3\n", '\n2 2 "3"\n'), "expected a number for xmax of the interval of tier 2"),
    "trailing_garbage": (SHORT + "garbage\n", "expected the end of the file after tier 2 of 2"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_textgrid_error(tmp_path, case):
    content, message = MALFORMED[case]
    p = put(tmp_path, content, f"{case}.TextGrid")
    msg = error_of(p)
    assert msg.startswith(f"{p}, line ")
    assert message in msg


def test_malformed_line_numbers(tmp_path):
    text = LONG.replace("xmin = 2 \n            xmax = 3 ", "xmin = 2 \n            xmax = 1.5 ")
    assert f"line {line_of(LONG, 'xmax = 3 ')}:" in error_of(put(tmp_path, text))
    text = LONG.replace('text = "Hello"', 'text = "Hello')
    assert f"line {line_of(text, 'Hello')}: unterminated" in error_of(put(tmp_path, text))
    text = LONG.replace("intervals: size = 8", "intervals: size = 7")
    assert f"line {line_of(text, 'SENTENCE_END') - 2}: expected the end of the file" in error_of(put(tmp_path, text))


def test_undecodable_bytes(tmp_path):
    data = LONG.encode()
    at = data.index(b"Hello")
    msg = error_of(put(tmp_path, data[:at] + b"\xff\xfe\xfa" + data[at:], "bad.TextGrid"))
    assert f"bad.TextGrid, line {line_of(LONG, 'Hello')}: cannot decode the bytes" in msg and "UTF-8" in msg
    odd = b"\xff\xfe" + LONG.encode("utf-16-le") + b"\x00"
    msg = error_of(put(tmp_path, odd, "odd.TextGrid"))
    assert "odd.TextGrid, line " in msg and "UTF-16" in msg
    lone_surrogate = b"\xfe\xff" + SHORT.encode("utf-16-be").replace("Hello".encode("utf-16-be"), b"\xd8\x00\x00a")
    msg = error_of(put(tmp_path, lone_surrogate, "surrogate.TextGrid"))
    assert f"surrogate.TextGrid, line {line_of(SHORT, 'Hello')}: cannot decode" in msg


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        tg.read(tmp_path / "nope.TextGrid")


@pytest.mark.parametrize("fmt", tg.FORMATS)
def test_every_truncation_gives_a_grid_or_textgrid_error(tmp_path, fmt):
    text = FIXTURES[fmt]
    p = tmp_path / "t.TextGrid"
    for cut in range(len(text)):
        p.write_text(text[:cut], encoding="utf-8")
        try:
            tg.read(p)
        except TextGridError:
            pass


@pytest.mark.parametrize("fmt", tg.FORMATS)
def test_random_corruption_gives_a_grid_or_textgrid_error(tmp_path, fmt):
    rng = random.Random(fmt)
    data = FIXTURES[fmt].encode()
    alphabet = b'0123456789.-+e"<>!=:?[] \n\r\tabcXYZ\x00\xff\xfe\xc3'
    p = tmp_path / "c.TextGrid"
    for _ in range(300):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            op = rng.random()
            if op < 0.4:
                buf[i] = rng.choice(alphabet)
            elif op < 0.7:
                del buf[i : i + rng.randint(1, 8)]
            else:
                buf[i:i] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
        p.write_bytes(bytes(buf))
        try:
            tg.read(p)
            tg.read_words(p)
        except TextGridError:
            pass


# ----------------------------------------------------------------------------------------------
# Word tables and tier selection
def test_non_words():
    assert isinstance(NON_WORDS, frozenset)
    assert NON_WORDS == {"sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp", "sl", "cg", "ig", ""}


def test_non_word_matching_strips_braces_whitespace_and_case(tmp_path):
    labels = ["{LG}", " sp ", "{ BR }", "NS", "{sl}", "CG", "Ig", "  ", "{}", "Sentence_Start", "{laugh}", "Don't", "ok "]
    items = [Interval(float(i), float(i + 1), s) for i, s in enumerate(labels)]
    grid = TextGrid(0, len(labels), [Tier("w", "IntervalTier", 0, len(labels), items)])
    df = tg.read_words(tg.write(tmp_path / "x.TextGrid", grid))
    assert df["word"].tolist() == ["laugh", "don't", "ok"]
    assert df["onset"].tolist() == [10.0, 11.0, 12.0]


def _grid(*tiers):
    return TextGrid(0, 3, list(tiers))


PHONES = Tier("phone", "IntervalTier", 0, 3, [Interval(0, 1, "K"), Interval(1, 3, "AE1")])
WORDTIER = Tier("word", "IntervalTier", 0, 3, [Interval(0, 1, "sp"), Interval(1, 2, "Cat"), Interval(2, 3, "Sat")])
BELL = Tier("bell", "TextTier", 0, 3, [Interval(1.5, 1.5, "ding")])


def test_tier_chosen_by_name_then_position(tmp_path):
    # a tier named word/words (any case, or "<speaker> - words") wins, wherever it is
    swapped = _grid(Tier("word", "IntervalTier", 0, 3, WORDTIER.items), Tier("phone", "IntervalTier", 0, 3, PHONES.items))
    assert tg.read_words(tg.write(tmp_path / "a.TextGrid", swapped))["word"].tolist() == ["cat", "sat"]
    for name in ("Words", " WORD ", "speaker1 - words"):
        grid = _grid(Tier(name, "IntervalTier", 0, 3, WORDTIER.items), PHONES, Tier("x", "IntervalTier", 0, 3, []))
        assert tg.read_words(tg.write(tmp_path / "n.TextGrid", grid))["word"].tolist() == ["cat", "sat"]
    # no tier named so: the second of two or more, else the only one
    unnamed = _grid(Tier("a", "IntervalTier", 0, 3, PHONES.items), Tier("b", "IntervalTier", 0, 3, WORDTIER.items))
    assert tg.read_words(tg.write(tmp_path / "u.TextGrid", unnamed))["word"].tolist() == ["cat", "sat"]
    assert tg.read_words(tg.write(tmp_path / "b.TextGrid", _grid(Tier("w", "IntervalTier", 0, 3, WORDTIER.items))))["word"].tolist() == ["cat", "sat"]
    three = _grid(PHONES, WORDTIER, Tier("other", "IntervalTier", 0, 3, [Interval(0, 3, "x")]))
    assert tg.read_words(tg.write(tmp_path / "c.TextGrid", three))["word"].tolist() == ["cat", "sat"]
    # two tiers named like a word tier: ambiguous
    two = _grid(Tier("words", "IntervalTier", 0, 3, WORDTIER.items), WORDTIER)
    p = tg.write(tmp_path / "two.TextGrid", two)
    with pytest.raises(TextGridError, match=re.escape(f"{p}: 2 tiers are named like the one wanted (0 'words', 1 'word'); pass tier=")):
        tg.read_words(p)
    assert tg.read_words(p, tier=0)["word"].tolist() == ["cat", "sat"]
    # ... unless only one of them is an interval tier
    marks = Tier("Words", "TextTier", 0, 3, [Interval(1.5, 1.5, "x")])
    assert tg.read_words(tg.write(tmp_path / "m.TextGrid", _grid(marks, PHONES, WORDTIER)))["word"].tolist() == ["cat", "sat"]


def test_tier_override_by_index_and_name(tmp_path):
    p = tg.write(tmp_path / "x.TextGrid", _grid(PHONES, WORDTIER, BELL))
    assert tg.read_words(p, tier=0)["word"].tolist() == ["k", "ae1"]
    assert tg.read_words(p, tier=np.int64(1))["word"].tolist() == ["cat", "sat"]
    assert tg.read_words(p, tier="word")["word"].tolist() == ["cat", "sat"]
    assert tg.read_words(p, tier="phone")["word"].tolist() == ["k", "ae1"]


def test_missing_tier_errors_list_the_tiers(tmp_path):
    p = tg.write(tmp_path / "x.TextGrid", _grid(PHONES, WORDTIER, BELL))
    listing = "tiers present: 0 'phone' (IntervalTier), 1 'word' (IntervalTier), 2 'bell' (TextTier)"
    with pytest.raises(TextGridError) as err:
        tg.read_words(p, tier="words")
    assert str(err.value) == f"{p}: no tier named 'words'; {listing}"
    for bad in (3, -1):
        with pytest.raises(TextGridError, match=re.escape(f"{p}: no tier at position {bad} (0-based); {listing}")):
            tg.read_words(p, tier=bad)
    with pytest.raises(TextGridError, match=r"tier 2 \('bell'\) is a point tier \(TextTier\); words need an interval tier"):
        tg.read_words(p, tier="bell")
    q = tg.write(tmp_path / "bell_second.TextGrid", _grid(PHONES, BELL))
    with pytest.raises(TextGridError, match="point tier"):
        tg.read_words(q)
    r = tg.write(tmp_path / "none.TextGrid", TextGrid(0, 1, []))
    with pytest.raises(TextGridError, match=re.escape(f"{r}: no tier at position 0 (0-based); the file has no tiers")):
        tg.read_words(r)
    with pytest.raises(TypeError):
        tg.read_words(p, tier=True)


def test_words_in_time_order_and_no_words_is_an_error(tmp_path):
    df = tg.read_words(tg.write(tmp_path / "o.TextGrid", _grid(PHONES, WORDTIER)))
    assert df["onset"].tolist() == [1.0, 2.0] and df.index.tolist() == [0, 1]
    assert all(df[c].dtype == np.float64 for c in ("onset", "offset", "midpoint"))
    p = tg.write(tmp_path / "e.TextGrid", _grid(PHONES, Tier("word", "IntervalTier", 0, 3, [Interval(0, 1, "sp"), Interval(1, 3, "")])))
    with pytest.raises(TextGridError, match=re.escape(f"{p}: tier 1 ('word') holds no words: its 2 intervals are all silences")):
        tg.read_words(p)
    p = tg.write(tmp_path / "z.TextGrid", _grid(PHONES, Tier("word", "IntervalTier", 0, 3, [])))
    with pytest.raises(TextGridError, match="holds no words"):
        tg.read_words(p)


def test_words_to_tier_fills_gaps_and_tiles():
    words = pd.DataFrame({"word": ["a", "b", "c"], "onset": [0.5, 1.0, 1.5], "offset": [0.8, 1.5, 1.7]})
    tier = tg.words_to_tier(words, xmax=2.0)
    assert tier == Tier("word", "IntervalTier", 0.0, 2.0, [
        Interval(0.0, 0.5, ""), Interval(0.5, 0.8, "a"), Interval(0.8, 1.0, ""), Interval(1.0, 1.5, "b"),
        Interval(1.5, 1.7, "c"), Interval(1.7, 2.0, "")])
    tier = tg.words_to_tier(words, name="words")
    assert (tier.name, tier.xmin, tier.xmax, tier.items[-1]) == ("words", 0.0, 1.7, Interval(1.5, 1.7, "c"))
    tier = tg.words_to_tier(words, xmin=0.5, xmax=1.7)
    assert tier.items[0] == Interval(0.5, 0.8, "a") and len(tier.items) == 4
    assert tg.words_to_tier(words.iloc[:0], xmax=3.0).items == [Interval(0.0, 3.0, "")]


def test_words_to_tier_round_trips_through_read_words(tmp_path):
    words = pd.DataFrame({"word": ["once", "upon", "a", "time"], "onset": [0.25, 0.6, 1.0, 1.1],
                          "offset": [0.6, 0.9, 1.1, 1.6]})
    for fmt in tg.FORMATS:
        grid = TextGrid(0, 2, [Tier("phone", "IntervalTier", 0, 2, [Interval(0, 2, "")]), tg.words_to_tier(words, xmax=2)])
        back = tg.read_words(tg.write(tmp_path / f"{fmt}.TextGrid", grid, format=fmt))
        pd.testing.assert_frame_equal(back[["word", "onset", "offset"]], words, check_dtype=False)


def test_words_to_tier_rejects_bad_tables():
    good = {"word": ["a", "b"], "onset": [0.0, 1.0], "offset": [1.0, 2.0]}
    with pytest.raises(ValueError, match="before"):
        tg.words_to_tier(pd.DataFrame({**good, "onset": [0.0, 0.5]}))         # overlap
    with pytest.raises(ValueError, match="ends"):
        tg.words_to_tier(pd.DataFrame({**good, "offset": [1.0, 0.9]}), xmax=3)  # backwards
    with pytest.raises(ValueError, match="after xmax"):
        tg.words_to_tier(pd.DataFrame(good), xmax=1.5)
    with pytest.raises(ValueError, match="lacks column"):
        tg.words_to_tier(pd.DataFrame({"word": ["a"], "onset": [0.0]}))
    with pytest.raises(ValueError, match="finite"):
        tg.words_to_tier(pd.DataFrame({**good, "onset": [0.0, float("nan")]}))


# ----------------------------------------------------------------------------------------------
# Swapped tiers: a word tier that looks like phones (issue 18)
_PHONE_LABELS = "HH AH0 L OW1 W ER1 L D DH AH0 K AE1 T S AE1 T AA1 N DH AH0 M AE1 T".split()
_WORD_LABELS = ["hello", "world", "the", "cat", "sat", "on", "the", "mat"]
_PER_WORD = [4, 4, 2, 3, 3, 2, 2, 3]  # phones per word: 23 in all


def _aligned(word_name="word", phone_name="phone", phones_first=True):
    """A phone tier and a word tier whose boundaries nest, as a forced aligner writes them."""
    phones, words, t, k = [Interval(0, 0.5, "sil")], [Interval(0, 0.5, "")], 0.5, 0
    for w, n in zip(_WORD_LABELS, _PER_WORD):
        for p in _PHONE_LABELS[k: k + n]:
            phones.append(Interval(round(t, 3), round(t + 0.1, 3), p))
            t += 0.1
        words.append(Interval(round(t - 0.1 * n, 3), round(t, 3), w))
        k += n
    phones.append(Interval(round(t, 3), 10, ""))
    words.append(Interval(round(t, 3), 10, ""))
    ph, wd = Tier(phone_name, "IntervalTier", 0, 10, phones), Tier(word_name, "IntervalTier", 0, 10, words)
    return TextGrid(0, 10, [ph, wd] if phones_first else [wd, ph])


def test_aligned_fixture_nests():
    grid = _aligned()
    assert len(grid.tiers[0].items) == 25 and len(grid.tiers[1].items) == 10
    assert {i.xmin for i in grid.tiers[1].items} <= {i.xmin for i in grid.tiers[0].items}


@pytest.mark.parametrize("names", [("tier1", "tier2"), ("", ""), ("phone", "word")], ids=["generic", "unnamed", "names_swapped"])
def test_swapped_tiers_warn_that_the_word_tier_looks_like_phones(tmp_path, names):
    # words first, phones second: by position, or by a name that went with the wrong tier, the
    # phones are taken as words; the chosen tier has 23 short labels against the other's 8 words
    word_name, phone_name = names
    p = tg.write(tmp_path / "s.TextGrid", _aligned(word_name=word_name, phone_name=phone_name, phones_first=False))
    with pytest.warns(LmbrainWarning) as rec:
        df = tg.read_words(p)
    assert df["word"].tolist()[:3] == ["sil", "hh", "ah0"]  # what is read is still returned
    msg = str(rec[0].message)
    assert msg.startswith(f"{p}: the word tier chosen, 1 ({phone_name!r}), looks like a phone tier (100% of its 23 labels "
                          "are 1-3 characters long, as phone labels are, and it has 2.9 times as many labelled intervals "
                          f"as tier 0 ({word_name!r})); if the tiers are swapped, name the word tier 'word' or pass tier=")


def test_word_tier_named_phone_or_a_lone_phone_tier_warns(tmp_path):
    grid = _aligned()
    grid.tiers[0].name, grid.tiers[1].name = "a", "phones"  # position 1 is named like a phone tier
    with pytest.warns(LmbrainWarning, match=r"it is named 'phones'"):
        tg.read_words(tg.write(tmp_path / "n.TextGrid", grid))
    lone = TextGrid(0, 10, [_aligned().tiers[0]])
    lone.tiers[0].name = "x"
    with pytest.warns(LmbrainWarning, match=r"looks like a phone tier \(100% of its 23 labels are 1-3 characters long, as phone labels are\)"):
        tg.read_words(tg.write(tmp_path / "lone.TextGrid", lone))


def test_no_phone_warning_for_word_tiers(tmp_path, recwarn):
    tg.read_words(tg.write(tmp_path / "ok.TextGrid", _aligned()))
    for fmt in tg.FORMATS:
        tg.read_words(put(tmp_path, FIXTURES[fmt]))
    # an explicit tier is the user's choice: no warning even for a phone tier
    tg.read_words(tg.write(tmp_path / "ph.TextGrid", _aligned()), tier=0)
    tg.read_words(tg.write(tmp_path / "ph2.TextGrid", _aligned(word_name="tier1", phone_name="tier2", phones_first=False)), tier=0)
    # a lone word tier of short words (most English words are short, but not 90% of them)
    words = "it was a dark and stormy night and the rain fell in torrents except at occasional intervals when it was".split()
    lone = TextGrid(0, 30, [Tier("x", "IntervalTier", 0, 30, [Interval(i, i + 1, w) for i, w in enumerate(words)])])
    assert len(tg.read_words(tg.write(tmp_path / "lone.TextGrid", lone))) == 20
    assert not [w for w in recwarn if issubclass(w.category, LmbrainWarning)]


# ----------------------------------------------------------------------------------------------
# Inconsistent times (issue 18): errors naming the file and the line
def _times_case(case):
    """(text, needle, message): a long-format file whose word tier has one inconsistent time at ``needle``."""
    ph = Tier("phone", "IntervalTier", 0, 3, [Interval(0, 3, "")])
    items = {
        "overlap": [Interval(0, 1, "a"), Interval(0.25, 2, "b")],
        "out_of_order": [Interval(1, 2, "b"), Interval(0.25, 1, "a")],
        "negative": [Interval(-0.25, 1, "a"), Interval(1, 2, "b")],
        "after_xmax": [Interval(0, 1, "a"), Interval(2.25, 3.5, "b")],
    }[case]
    text = tg._write_long(TextGrid(0, 3, [ph, Tier("word", "IntervalTier", 0, 3, items)]))  # unchecked writer
    needle = "xmin = -0.25 " if case == "negative" else "xmin = 2.25 " if case == "after_xmax" else "xmin = 0.25 "
    message = {
        "overlap": "interval 2 of 2 in tier 2 ('word') (0.25 to 2 s) overlaps interval 1, which ends at 1 s: "
                   "the intervals of a tier must not overlap",
        "out_of_order": "interval 2 of 2 in tier 2 ('word') (0.25 to 1 s) comes before interval 1, which starts at 1 s: "
                        "the intervals of a tier must be in time order",
        "negative": "interval 1 of 2 in tier 2 ('word') (-0.25 to 1 s) (a negative time) lies outside the tier's time "
                    "domain (0 to 3 s)",
        "after_xmax": "interval 2 of 2 in tier 2 ('word') (2.25 to 3.5 s) lies outside the tier's time domain (0 to 3 s)",
    }[case]
    return text, needle, message


@pytest.mark.parametrize("case", ["overlap", "out_of_order", "negative", "after_xmax"])
def test_inconsistent_interval_times_are_errors(tmp_path, case):
    text, needle, message = _times_case(case)
    p = put(tmp_path, text, f"{case}.TextGrid")
    msg = error_of(p)
    assert msg.startswith(f"{p}, line {line_of(text, needle)}: {message}")
    with pytest.raises(TextGridError):
        tg.read_words(p)


def test_inconsistent_times_in_short_and_chronological_files(tmp_path):
    grid = TextGrid(0, 3, [Tier("word", "IntervalTier", 0, 3, [Interval(0, 1, "a"), Interval(0.25, 2, "b")])])
    short = tg._write_short(grid)
    assert "overlaps interval 1, which ends at 1 s" in error_of(put(tmp_path, short, "s.TextGrid"))
    # chronological: each tier's items must come in time order; they are not re-sorted
    chrono = ('"Praat chronological TextGrid text file"\n0 3   ! Time domain.\n1   ! Number of tiers.\n'
              '"IntervalTier" "word" 0 3\n\n! word:\n1 1 2\n"b"\n\n! word:\n1 0 1\n"a"\n')
    msg = error_of(put(tmp_path, chrono, "c.TextGrid"))
    assert msg.startswith(f"{tmp_path / 'c.TextGrid'}, line 11: the interval of tier 1 ('word') starting on line 11 (0 to 1 s) "
                          "comes before the previous interval of this tier (line 7), which starts at 1 s")
    # a tier outside the file's time domain
    wide = tg._write_long(TextGrid(0, 3, [Tier("word", "IntervalTier", 0, 5, [Interval(0, 5, "a")])]))
    msg = error_of(put(tmp_path, wide, "w.TextGrid"))
    assert msg.startswith(f"{tmp_path / 'w.TextGrid'}, line {line_of(wide, 'xmax = 5 ')}: tier 1 ('word') spans 0 to 5 s, "
                          "outside the TextGrid's time domain (0 to 3 s)")
    # points out of order
    bell = tg._write_long(TextGrid(0, 3, [Tier("bell", "TextTier", 0, 3, [Interval(2, 2, "x"), Interval(1, 1, "y")])]))
    assert "point 2 of 2 in tier 1 ('bell') at 1 s comes before point 1, which starts at 2 s" in error_of(put(tmp_path, bell, "b.TextGrid"))


def test_rounding_sized_overlaps_are_accepted(tmp_path):
    # text files round times: an overlap or overhang below TIME_TOLERANCE is not an error
    eps = tg.TIME_TOLERANCE / 10
    grid = TextGrid(0, 3, [Tier("word", "IntervalTier", 0, 3, [Interval(0, 1 + eps, "a"), Interval(1, 3 + eps, "b")])])
    assert tg.read_words(tg.write(tmp_path / "r.TextGrid", grid))["word"].tolist() == ["a", "b"]


def test_implausible_and_overflowing_times(tmp_path):
    # (1e308 + 1.7e308) / 2 overflows: refused as an implausible word time, not an inf midpoint
    grid = TextGrid(0, 1.7e308, [Tier("word", "IntervalTier", 0, 1.7e308, [Interval(0, 1, "a"), Interval(1e308, 1.7e308, "b")])])
    p = tg.write(tmp_path / "o.TextGrid", grid)
    with pytest.raises(TextGridError, match=re.escape(f"{p}: the word 'b' (interval 2 of tier 0, 'word') spans 1e+308 to 1.7e+308 s: "
                                                      "not a plausible time for a word")):
        tg.read_words(p)
    samples = TextGrid(0, 3e7, [Tier("word", "IntervalTier", 0, 3e7, [Interval(0, 2.2e7, "a"), Interval(2.2e7, 3e7, "b")])])
    with pytest.raises(TextGridError, match="is the file in samples or milliseconds"):
        tg.read_words(tg.write(tmp_path / "s.TextGrid", samples))


def test_words_before_zero_warn(tmp_path):
    # Praat allows a time domain starting below 0; words there precede the audio onset
    grid = TextGrid(-2, 3, [Tier("word", "IntervalTier", -2, 3, [Interval(-2, -1, "a"), Interval(-1, 3, "b")])])
    p = tg.write(tmp_path / "n.TextGrid", grid)
    with pytest.warns(LmbrainWarning, match=re.escape(f"{p}: 2 word(s) of tier 0 ('word') start before 0 s (the first at -2 s)")):
        assert tg.read_words(p)["onset"].tolist() == [-2.0, -1.0]


def test_write_refuses_what_read_refuses(tmp_path):
    for case in ("overlap", "out_of_order", "negative", "after_xmax"):
        grid = tg.TextGrid(0, 3, [Tier("word", "IntervalTier", 0, 3, [])])
        items = {"overlap": [Interval(0, 1, "a"), Interval(0.25, 2, "b")], "out_of_order": [Interval(1, 2, "b"), Interval(0.25, 1, "a")],
                 "negative": [Interval(-0.25, 1, "a")], "after_xmax": [Interval(2.25, 3.5, "b")]}[case]
        grid.tiers[0].items = items
        with pytest.raises(ValueError, match="overlaps|time order|outside"):
            tg.write(tmp_path / f"{case}.TextGrid", grid)
    with pytest.raises(ValueError, match="outside the TextGrid's time domain"):
        tg.write(tmp_path / "t.TextGrid", TextGrid(0, 3, [Tier("word", "IntervalTier", 0, 5, [])]))
    assert not list(tmp_path.iterdir())


def test_a_folder_is_a_textgrid_error(tmp_path):
    (tmp_path / "d.TextGrid").mkdir()
    with pytest.raises(TextGridError, match=re.escape(f"{tmp_path / 'd.TextGrid'}: is a folder, not a TextGrid file")):
        tg.read_words(tmp_path / "d.TextGrid")


# ----------------------------------------------------------------------------------------------
# The Huth lab's non-word set (issue 20)
def test_non_words_huth_constant():
    assert isinstance(NON_WORDS_HUTH, frozenset)
    assert NON_WORDS_HUTH == {"sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp"}
    assert NON_WORDS - NON_WORDS_HUTH == {"sl", "cg", "ig", ""}


def test_read_words_with_the_huth_non_words(tmp_path):
    labels = ["sentence_start", "Hello", "sp", "{LG}", "{SL}", "cg", " IG ", "", "World", "{BR}", "ns", "{ls}", "SENTENCE_END"]
    grid = TextGrid(0, len(labels), [Tier("word", "IntervalTier", 0, len(labels),
                                          [Interval(float(i), float(i + 1), s) for i, s in enumerate(labels)])])
    p = tg.write(tmp_path / "h.TextGrid", grid)
    default = tg.read_words(p)
    assert default["word"].tolist() == ["hello", "world"] and default["onset"].tolist() == [1.0, 8.0]
    pd.testing.assert_frame_equal(tg.read_words(p, non_words=NON_WORDS), default)
    huth = tg.read_words(p, non_words=NON_WORDS_HUTH)
    # the reference keeps sl, cg, ig and the empty label as words
    assert huth["word"].tolist() == ["hello", "sl", "cg", "ig", "", "world"]
    assert huth["onset"].tolist() == [1.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert huth["midpoint"].tolist() == [1.5, 4.5, 5.5, 6.5, 7.5, 8.5]
    # any collection works, compared like the built-in sets
    assert tg.read_words(p, non_words=["{Hello}", "WORLD", "sp", ""])["word"].tolist() == [
        "sentence_start", "lg", "sl", "cg", "ig", "br", "ns", "ls", "sentence_end"]
    with pytest.raises(TypeError, match="not the string 'sp'"):
        tg.read_words(p, non_words="sp")


def test_a_damaged_tier_that_is_not_read_only_warns(tmp_path):
    """Overlapping phones must not make a story's words unreadable (and vice versa): the tier read must be
    sound, a damaged other tier warns; read() itself stays strict by default."""
    import warnings

    from lmbrain import LmbrainWarning
    from lmbrain.stimulus import read_phones

    text = ('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 3\ntiers? <exists>\nsize = 2\n'
            'item []:\n'
            '    item [1]:\n        class = "IntervalTier"\n        name = "phone"\n        xmin = 0\n        xmax = 3\n'
            '        intervals: size = 3\n'
            '        intervals [1]:\n            xmin = 0\n            xmax = 1.5\n            text = "HH"\n'
            '        intervals [2]:\n            xmin = 1\n            xmax = 2\n            text = "AY"\n'
            '        intervals [3]:\n            xmin = 2\n            xmax = 3\n            text = "T"\n'
            '    item [2]:\n        class = "IntervalTier"\n        name = "word"\n        xmin = 0\n        xmax = 3\n'
            '        intervals: size = 2\n'
            '        intervals [1]:\n            xmin = 0\n            xmax = 2\n            text = "HI"\n'
            '        intervals [2]:\n            xmin = 2\n            xmax = 3\n            text = "THERE"\n')
    path = tmp_path / "x.TextGrid"
    path.write_text(text)
    with pytest.raises(TextGridError, match="overlaps"):
        tg.read(path)
    with pytest.warns(LmbrainWarning, match=r"overlaps .*tier 0 is not read here"):
        words = tg.read_words(path)
    assert words["word"].tolist() == ["hi", "there"]
    with pytest.raises(TextGridError, match="overlaps"):
        read_phones(path)


def test_read_is_cached_by_file_state_and_returns_copies(tmp_path, monkeypatch):
    """A second read of an unchanged file is not parsed again and returns an independent copy; a
    changed file (size or modification time) is parsed again."""
    import os

    from lmbrain import textgrid as tg

    path = tmp_path / "a.TextGrid"
    grid = tg.TextGrid(0.0, 2.0, [tg.Tier("words", "IntervalTier", 0.0, 2.0,
                                           [tg.Interval(0.0, 1.0, "hello"), tg.Interval(1.0, 2.0, "world")])])
    tg.write(path, grid)
    calls = []
    real = tg._read
    monkeypatch.setattr(tg, "_read", lambda *a: calls.append(a) or real(*a))
    first = tg.read(path)
    first.tiers[0].items[0].text = "edited"
    second = tg.read(path)
    assert len(calls) == 1 and second.tiers[0].items[0].text == "hello"
    grid.tiers[0].items[1].text = "there"
    tg.write(path, grid)
    os.utime(path, ns=(1, 1))  # a new modification time, even on a coarse clock
    assert tg.read(path).tiers[0].items[1].text == "there" and len(calls) == 2
