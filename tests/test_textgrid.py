"""TextGrid reading in Praat's three text formats and two encodings, writing, and malformed files."""

import pytest

from lmbrain import textgrid as tg
from lmbrain.stimulus import read_textgrid

LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0 
xmax = 3.5 
tiers? <exists> 
size = 2 
item []: 
    item [1]:
        class = "IntervalTier" 
        name = "phone" 
        xmin = 0 
        xmax = 3.5 
        intervals: size = 1 
        intervals [1]:
            xmin = 0 
            xmax = 3.5 
            text = "" 
    item [2]:
        class = "IntervalTier" 
        name = "word" 
        xmin = 0 
        xmax = 3.5 
        intervals: size = 6 
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
            xmax = 3.5 
            text = "" 
'''

SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
3.5
<exists>
2
"IntervalTier"
"phone"
0
3.5
1
0
3.5
""
"IntervalTier"
"word"
0
3.5
6
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
3.5
""
'''

CHRONO = '''"Praat chronological TextGrid text file"
0 3.5   ! Time domain.
2   ! Number of tiers.
"IntervalTier" "phone" 0 3.5
"IntervalTier" "word" 0 3.5

1 0 3.5
""

2 0 0.5
"sentence_start"

2 0.5 1.25
"Hello"

2 1.25 1.5
"sp"

2 1.5 2
"{LG}"

2 2 3
"SAY ""HI"""

2 3 3.5
""
'''

EXPECTED = [("hello", 0.5, 1.25, 0.875), ('say "hi"', 2.0, 3.0, 2.5)]


def rows(df):
    return [(w, a, b, m) for w, a, b, m in df[["word", "onset", "offset", "midpoint"]].itertuples(index=False)]


@pytest.mark.parametrize("text", [LONG, SHORT, CHRONO], ids=["long", "short", "chronological"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom"])
def test_formats_and_encodings(tmp_path, text, encoding):
    p = tmp_path / "x.TextGrid"
    if encoding == "utf-16-le-bom":
        p.write_bytes(b"\xff\xfe" + text.encode("utf-16-le"))
    elif encoding == "utf-16-be-bom":
        p.write_bytes(b"\xfe\xff" + text.encode("utf-16-be"))
    else:
        p.write_bytes(text.encode(encoding))
    df = read_textgrid(p)
    assert list(df.columns) == ["word", "onset", "offset", "midpoint"]
    assert rows(df) == EXPECTED
    grid = tg.read(p)
    assert [t.name for t in grid.tiers] == ["phone", "word"] and grid.xmax == 3.5


def test_crlf_and_scientific_numbers(tmp_path):
    p = tmp_path / "x.TextGrid"
    p.write_bytes(SHORT.replace("\n1.25\n", "\n125e-2\n").replace("\n", "\r\n").encode())
    assert rows(read_textgrid(p)) == EXPECTED


def test_point_tiers_and_tier_selection(tmp_path):
    grid = tg.TextGrid(0, 2, [tg.Tier("bell", "TextTier", 0, 2, [tg.Interval(1.0, 1.0, "ding")]),
                              tg.Tier("word", "IntervalTier", 0, 2, [tg.Interval(0, 1, "a"), tg.Interval(1, 2, "B")])])
    for fmt in ("long", "short", "chronological"):
        p = tmp_path / f"{fmt}.TextGrid"
        tg.write(p, grid, format=fmt)
        assert tg.read(p) == grid
    p = tmp_path / "long.TextGrid"
    assert read_textgrid(p)["word"].tolist() == ["a", "b"]          # position 1
    assert read_textgrid(p, tier="word")["word"].tolist() == ["a", "b"]
    with pytest.raises(tg.TextGridError, match="point tier"):
        read_textgrid(p, tier=0)
    with pytest.raises(tg.TextGridError, match=r"no tier named 'words'.*'bell'"):
        read_textgrid(p, tier="words")
    with pytest.raises(tg.TextGridError, match="no tier 5"):
        read_textgrid(p, tier=5)


@pytest.mark.parametrize("fmt", ["long", "short", "chronological"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_round_trip(tmp_path, fmt, encoding):
    grid = tg.read_words  # noqa: F841 (keep the API referenced)
    src = tmp_path / "src.TextGrid"
    src.write_text(LONG)
    g = tg.read(src)
    g.tiers[1].items[1].text = "Ünïcødé \"quoted\""
    out = tmp_path / "out.TextGrid"
    tg.write(out, g, format=fmt, encoding=encoding)
    assert tg.read(out) == g
    if encoding == "utf-16":
        assert out.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")


def test_words_to_tier_fills_gaps():
    import pandas as pd

    words = pd.DataFrame({"word": ["a", "b"], "onset": [0.5, 1.0], "offset": [0.8, 1.5]})
    tier = tg.words_to_tier(words, xmax=2.0)
    assert [(i.xmin, i.xmax, i.text) for i in tier.items] == [(0, 0.5, ""), (0.5, 0.8, "a"), (0.8, 1.0, ""),
                                                              (1.0, 1.5, "b"), (1.5, 2.0, "")]


def _line_of(text, needle):
    return next(i for i, l in enumerate(text.splitlines(), 1) if needle in l)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("nonnumeric", LONG.replace("xmin = 2 ", "xmin = two "), "line {L}: expected a number for interval xmin, got 'two'"),
        ("truncated", LONG[: LONG.index("intervals [5]")], "file ends early"),
        ("empty", "", "empty file"),
        ("not_textgrid", "hello world\n", "not a Praat TextGrid"),
        ("wrong_class", LONG.replace('"TextGrid"', '"Pitch"'), 'expected Object class "TextGrid"'),
        ("count", LONG.replace("intervals: size = 6", "intervals: size = 7"), "expected"),
        ("too_few", LONG.replace("intervals: size = 6", "intervals: size = 5"), "do not match"),
        ("backwards", SHORT.replace("1.5\n2\n", "1.5\n1\n"), "ends (1.0) before it starts (1.5)"),
        ("unterminated", LONG.replace('text = "Hello"', 'text = "Hello'), "unterminated string"),
        ("chrono_tier", CHRONO.replace("2 2 3\n", "7 2 3\n"), "tier number between 1 and 2"),
    ],
)
def test_malformed_files(tmp_path, name, content, message):
    p = tmp_path / f"{name}.TextGrid"
    p.write_text(content)
    if "{L}" in message:
        message = message.format(L=_line_of(content, "xmin = two"))
    with pytest.raises(tg.TextGridError) as err:
        tg.read(p)
    assert f"{name}.TextGrid" in str(err.value)
    assert message in str(err.value)


def test_undecodable_bytes(tmp_path):
    p = tmp_path / "bad.TextGrid"
    p.write_bytes(LONG.encode()[:200] + b"\xff\xfe\xfa" + LONG.encode()[200:])
    with pytest.raises(tg.TextGridError, match=r"bad.TextGrid, line \d+: cannot decode"):
        tg.read(p)


def test_truncated_reports_last_line(tmp_path):
    p = tmp_path / "t.TextGrid"
    text = SHORT[: SHORT.index('"Hello"')]
    p.write_text(text)
    with pytest.raises(tg.TextGridError, match=rf"line {text.count(chr(10))}: file ends early"):
        tg.read(p)
