"""Praat TextGrid files: reading (long, short and chronological text formats; UTF-8 or UTF-16) and writing.

The three text formats Praat writes hold the same values:

- *long* ("ooTextFile" with ``key = value`` lines and ``item [1]:`` blocks),
- *short* (the same header, then the values alone, one per line),
- *chronological* (``"Praat chronological TextGrid text file"``, the tiers' headers, then every
  interval or point of every tier in time order as ``tier_number xmin xmax`` (or ``tier_number time``)
  followed by its text).

The reader tokenises a file into values (strings, numbers, ``<flags>``) and skips the labels of the
long format, so long and short files go through one parser. Every token keeps its line number,
so a malformed file gives a :class:`TextGridError` naming the file and the line.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import LmbrainError
from .io import atomic_path

#: Word-tier intervals that are not words (compared lower-case after stripping ``{}`` and spaces).
NON_WORDS = frozenset({"sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp", "sl", "cg", "ig", ""})

CHRONO_HEADER = "Praat chronological TextGrid text file"


class TextGridError(LmbrainError, ValueError):
    """A TextGrid file is malformed; the message names the file and the line."""


@dataclass
class Interval:
    xmin: float
    xmax: float
    text: str


@dataclass
class Tier:
    name: str
    kind: str  # "IntervalTier" or "TextTier"
    xmin: float
    xmax: float
    items: list[Interval] = field(default_factory=list)


@dataclass
class TextGrid:
    xmin: float
    xmax: float
    tiers: list[Tier] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# decoding and tokenising
def _decode(raw: bytes, path: str) -> str:
    if not raw.strip():
        raise TextGridError(f"{path}: empty file, not a TextGrid")
    try:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return raw.decode("utf-16")
        if raw[:3] == b"\xef\xbb\xbf":
            return raw[3:].decode("utf-8")
        if len(raw) >= 4 and raw[1:4:2] == b"\x00\x00" and raw[0] != 0:
            return raw.decode("utf-16-le")
        if len(raw) >= 4 and raw[0:4:2] == b"\x00\x00" and raw[1] != 0:
            return raw.decode("utf-16-be")
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1 if isinstance(exc.object, bytes) else 1
        raise TextGridError(f"{path}, line {line}: cannot decode the file as UTF-8 or UTF-16 ({exc.reason})") from None


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_ ]*?(?:\?|\s*(?:\[[^\]\n]*\])?\s*[:=])")
_WORD = re.compile(r"[^\s\"!]+")


@dataclass
class _Tok:
    kind: str  # "str", "num", "flag", "bad"
    value: object
    line: int


def _tokenise(text: str, path: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n, line = 0, len(text), 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch.isspace():
            i += 1
        elif ch == "!":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif ch == '"':
            start_line = line
            j = i + 1
            parts = []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise TextGridError(f"{path}, line {start_line}: unterminated string")
                parts.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    parts.append('"')
                    j = k + 2
                    continue
                break
            value = "".join(parts)
            toks.append(_Tok("str", value, start_line))
            line += text.count("\n", i, k + 1)
            i = k + 1
        elif ch == "<":
            k = text.find(">", i)
            if k < 0:
                raise TextGridError(f"{path}, line {line}: unterminated <flag>")
            toks.append(_Tok("flag", text[i + 1 : k], line))
            i = k + 1
        elif ch == "[" or ch in ":=":
            # stray index or separator (the label regex normally consumes these)
            k = text.find("]", i) + 1 if ch == "[" else i + 1
            i = k if k > i else n
        else:
            m = _NUMBER.match(text, i)
            if m and (m.end() == n or text[m.end()].isspace() or text[m.end()] == "!"):
                toks.append(_Tok("num", float(m.group()), line))
                i = m.end()
                continue
            m = _LABEL.match(text, i)
            if m and "\n" not in m.group():
                i = m.end()
                continue
            m = _WORD.match(text, i)
            toks.append(_Tok("bad", m.group(), line))
            i = m.end()
    return toks


class _Reader:
    def __init__(self, toks: list[_Tok], path: str, last_line: int):
        self.toks, self.path, self.pos, self.last_line = toks, path, 0, last_line

    def fail(self, what: str, tok: _Tok | None = None):
        if tok is None:
            raise TextGridError(f"{self.path}, line {self.last_line}: file ends early: expected {what}")
        shown = tok.value if tok.kind != "str" else f'"{tok.value}"'
        raise TextGridError(f"{self.path}, line {tok.line}: expected {what}, got {shown!r}" if tok.kind == "bad"
                            else f"{self.path}, line {tok.line}: expected {what}, got {shown}")

    def peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def next(self, kind: str, what: str) -> _Tok:
        tok = self.peek()
        if tok is None or tok.kind != kind:
            self.fail(what, tok)
        self.pos += 1
        return tok

    def num(self, what: str) -> float:
        tok = self.next("num", f"a number for {what}")
        if not math.isfinite(tok.value):
            self.fail(f"a finite number for {what}", tok)
        return tok.value

    def count(self, what: str) -> int:
        tok = self.next("num", f"a count of {what}")
        if tok.value != int(tok.value) or tok.value < 0:
            self.fail(f"a whole number of {what}", tok)
        return int(tok.value)

    def string(self, what: str) -> str:
        return self.next("str", f"a quoted string for {what}").value


def _check_item(r: _Reader, tier: Tier, item: Interval, line: int) -> None:
    if item.xmax < item.xmin:
        raise TextGridError(f"{r.path}, line {line}: interval of tier '{tier.name}' ends ({item.xmax}) before it starts ({item.xmin})")


def _parse_ootext(r: _Reader) -> TextGrid:
    cls = r.string("the object class")
    if cls != "TextGrid":
        r.fail('Object class "TextGrid"', r.toks[r.pos - 1])
    grid = TextGrid(r.num("xmin"), r.num("xmax"))
    flag = r.next("flag", "<exists> or <absent>")
    if flag.value == "absent":
        return grid
    n_tiers = r.count("tiers")
    for _ in range(n_tiers):
        kind = r.string("the tier class")
        if kind not in ("IntervalTier", "TextTier"):
            r.fail('"IntervalTier" or "TextTier"', r.toks[r.pos - 1])
        tier = Tier(r.string("the tier name"), kind, r.num("tier xmin"), r.num("tier xmax"))
        n_items = r.count("intervals" if kind == "IntervalTier" else "points")
        for _ in range(n_items):
            line = r.peek().line if r.peek() else r.last_line
            if kind == "IntervalTier":
                item = Interval(r.num("interval xmin"), r.num("interval xmax"), r.string("interval text"))
            else:
                t = r.num("point time")
                item = Interval(t, t, r.string("point mark"))
            _check_item(r, tier, item, line)
            tier.items.append(item)
        grid.tiers.append(tier)
    extra = r.peek()
    if extra is not None:
        r.fail(f"the end of the file after {n_tiers} tiers (tier item counts do not match the items present)", extra)
    return grid


def _parse_chronological(r: _Reader) -> TextGrid:
    grid = TextGrid(r.num("xmin"), r.num("xmax"))
    n_tiers = r.count("tiers")
    for _ in range(n_tiers):
        kind = r.string("the tier class")
        if kind not in ("IntervalTier", "TextTier"):
            r.fail('"IntervalTier" or "TextTier"', r.toks[r.pos - 1])
        grid.tiers.append(Tier(r.string("the tier name"), kind, r.num("tier xmin"), r.num("tier xmax")))
    while r.peek() is not None:
        tok = r.peek()
        idx = r.count("the tier number")
        if not 1 <= idx <= n_tiers:
            r.fail(f"a tier number between 1 and {n_tiers}", tok)
        tier = grid.tiers[idx - 1]
        if tier.kind == "IntervalTier":
            item = Interval(r.num("interval xmin"), r.num("interval xmax"), r.string("interval text"))
        else:
            t = r.num("point time")
            item = Interval(t, t, r.string("point mark"))
        _check_item(r, tier, item, tok.line)
        tier.items.append(item)
    for tier in grid.tiers:
        tier.items.sort(key=lambda it: (it.xmin, it.xmax))
    return grid


def read(path: str | os.PathLike) -> TextGrid:
    """Read a TextGrid in any of Praat's three text formats (UTF-8, with or without BOM, or UTF-16)."""
    path = Path(path)
    if not path.exists():
        raise TextGridError(f"{path}: file not found")
    text = _decode(path.read_bytes(), str(path))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    toks = _tokenise(text, str(path))
    r = _Reader(toks, str(path), text.count("\n") + (0 if text.endswith("\n") else 1))
    first = r.peek()
    if first is None or first.kind != "str":
        raise TextGridError(f"{path}, line {first.line if first else 1}: not a Praat TextGrid text file "
                            '(expected File type = "ooTextFile" or "Praat chronological TextGrid text file")')
    r.pos += 1
    if first.value == CHRONO_HEADER:
        return _parse_chronological(r)
    if first.value == "ooTextFile":
        return _parse_ootext(r)
    raise TextGridError(f"{path}, line {first.line}: not a Praat TextGrid text file (file type {first.value!r})")


# ------------------------------------------------------------------------------------------
# writing
def _q(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _num(x: float) -> str:
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


def _long(grid: TextGrid) -> list[str]:
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", f"xmin = {_num(grid.xmin)} ",
           f"xmax = {_num(grid.xmax)} "]
    if not grid.tiers:
        return out + ["tiers? <absent> "]
    out += ["tiers? <exists> ", f"size = {len(grid.tiers)} ", "item []: "]
    for i, tier in enumerate(grid.tiers, 1):
        out += [f"    item [{i}]:", f'        class = "{tier.kind}" ', f"        name = {_q(tier.name)} ",
                f"        xmin = {_num(tier.xmin)} ", f"        xmax = {_num(tier.xmax)} "]
        if tier.kind == "IntervalTier":
            out.append(f"        intervals: size = {len(tier.items)} ")
            for j, it in enumerate(tier.items, 1):
                out += [f"        intervals [{j}]:", f"            xmin = {_num(it.xmin)} ",
                        f"            xmax = {_num(it.xmax)} ", f"            text = {_q(it.text)} "]
        else:
            out.append(f"        points: size = {len(tier.items)} ")
            for j, it in enumerate(tier.items, 1):
                out += [f"        points [{j}]:", f"            number = {_num(it.xmin)} ",
                        f"            mark = {_q(it.text)} "]
    return out


def _short(grid: TextGrid) -> list[str]:
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", _num(grid.xmin), _num(grid.xmax)]
    if not grid.tiers:
        return out + ["<absent>"]
    out += ["<exists>", str(len(grid.tiers))]
    for tier in grid.tiers:
        out += [_q(tier.kind), _q(tier.name), _num(tier.xmin), _num(tier.xmax), str(len(tier.items))]
        for it in tier.items:
            out += ([_num(it.xmin), _num(it.xmax)] if tier.kind == "IntervalTier" else [_num(it.xmin)]) + [_q(it.text)]
    return out


def _chronological(grid: TextGrid) -> list[str]:
    out = [_q(CHRONO_HEADER), f"{_num(grid.xmin)} {_num(grid.xmax)}   ! Time domain.",
           f"{len(grid.tiers)}   ! Number of tiers."]
    for tier in grid.tiers:
        out.append(f"{_q(tier.kind)} {_q(tier.name)} {_num(tier.xmin)} {_num(tier.xmax)}")
    entries = []
    for i, tier in enumerate(grid.tiers, 1):
        for it in tier.items:
            entries.append((it.xmin, i, it.xmax, tier.kind, it.text))
    for xmin, i, xmax, kind, text in sorted(entries, key=lambda e: (e[0], e[1])):
        out.append("")
        out.append(f"{i} {_num(xmin)} {_num(xmax)}" if kind == "IntervalTier" else f"{i} {_num(xmin)}")
        out.append(_q(text))
    return out


def write(path: str | os.PathLike, grid: TextGrid, format: str = "long", encoding: str = "utf-8") -> None:
    """Write ``grid`` as Praat writes it (``format``: long, short or chronological), atomically.

    ``encoding="utf-16"`` writes UTF-16 with a byte-order mark, as Praat does for non-ASCII text.
    """
    writers = {"long": _long, "short": _short, "chronological": _chronological}
    if format not in writers:
        raise ValueError(f"unknown TextGrid format {format!r}; use one of {sorted(writers)}")
    if encoding not in ("utf-8", "utf-16"):
        raise ValueError("encoding must be 'utf-8' or 'utf-16'")
    text = "\n".join(writers[format](grid)) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode(encoding))  # Python's utf-16 codec writes the BOM


# ------------------------------------------------------------------------------------------
def _pick_tier(grid: TextGrid, tier: int | str | None, path: str) -> Tier:
    names = ", ".join(f"{i}: {t.name!r} ({t.kind})" for i, t in enumerate(grid.tiers)) or "none"
    if isinstance(tier, str):
        for t in grid.tiers:
            if t.name == tier:
                return t
        raise TextGridError(f"{path}: no tier named {tier!r}; tiers present: {names}")
    idx = (1 if len(grid.tiers) >= 2 else 0) if tier is None else int(tier)
    if not 0 <= idx < len(grid.tiers):
        raise TextGridError(f"{path}: no tier {idx} (0-based); tiers present: {names}")
    return grid.tiers[idx]


def read_words(path: str | os.PathLike, tier: int | str | None = None) -> pd.DataFrame:
    """Word table of a TextGrid: columns ``word`` (lower-case), ``onset``, ``offset``, ``midpoint`` (s).

    The word tier is taken by position: the second tier (index 1) when there are two or more
    (LeBel et al.: tier 1 phones, tier 2 words), else the only one; ``tier`` overrides with an
    index or a name. Non-word intervals (:data:`NON_WORDS`, after stripping ``{}``) are dropped.
    """
    grid = read(path)
    t = _pick_tier(grid, tier, str(path))
    if t.kind != "IntervalTier":
        raise TextGridError(f"{path}: tier {t.name!r} is a point tier (TextTier); words need an interval tier")
    rows = []
    for it in t.items:
        word = it.text.strip().strip("{}").strip()
        if word.lower() in NON_WORDS:
            continue
        rows.append((word.lower(), it.xmin, it.xmax))
    out = pd.DataFrame(rows, columns=["word", "onset", "offset"]).astype({"onset": "float64", "offset": "float64"})
    out["midpoint"] = (out["onset"] + out["offset"]) / 2
    return out.sort_values("onset", kind="stable").reset_index(drop=True)


def words_to_tier(words: pd.DataFrame, name: str = "word", xmin: float | None = None, xmax: float | None = None) -> Tier:
    """An interval tier tiling [xmin, xmax] from a word table (gaps become empty intervals)."""
    xmin = 0.0 if xmin is None else float(xmin)
    xmax = float(words["offset"].max()) if xmax is None else float(xmax)
    items, t = [], xmin
    for word, on, off in words[["word", "onset", "offset"]].itertuples(index=False):
        if on > t:
            items.append(Interval(t, float(on), ""))
        items.append(Interval(float(on), float(off), str(word)))
        t = float(off)
    if xmax > t:
        items.append(Interval(t, xmax, ""))
    return Tier(name, "IntervalTier", xmin, xmax, items)
