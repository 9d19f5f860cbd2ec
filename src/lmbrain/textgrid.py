"""Praat TextGrid files: reading and writing the three text formats, and the word table.

Praat writes a TextGrid as text in one of three layouts, which hold the same values:

``long`` (Praat's "Save as text file")::

    File type = "ooTextFile"
    Object class = "TextGrid"

    xmin = 0
    xmax = 2.3
    tiers? <exists>
    size = 1
    item []:
        item [1]:
            class = "IntervalTier"
            name = "word"
            xmin = 0
            xmax = 2.3
            intervals: size = 1
            intervals [1]:
                xmin = 0
                xmax = 2.3
                text = ""

(Praat ends every ``key = value`` line, ``tiers? <exists>`` and ``item []:`` with a space, left
out here. A point tier has ``points: size = n``, ``points [i]:``, ``number = t`` and
``mark = "..."`` instead.)

``short`` ("Save as short text file"): the same two header lines, an empty line, then the values
alone, one per line: ``0``, ``2.3``, ``<exists>``, ``1``, ``"IntervalTier"``, ``"word"``, ``0``,
``2.3``, ``1``, ``0``, ``2.3``, ``""``.

``chronological`` ("Save as chronological text file"; layout from Praat's
``TextGrid_writeToChronologicalTextFile`` in ``fon/TextGrid_files.cpp``)::

    "Praat chronological TextGrid text file"
    0 2.3   ! Time domain.
    2   ! Number of tiers.
    "IntervalTier" "word" 0 2.3
    "TextTier" "bell" 0 2.3

    ! word:
    1 0 2.3
    ""

    ! bell:
    2 1.5
    "ding"

i.e. the tiers' headers (class, name, xmin, xmax), then every interval (``tier xmin xmax``) and
point (``tier time`` and a trailing space, left out above) of every tier, sorted by start time and then by tier number,
each preceded by an empty line and a ``! name:`` comment and followed by its quoted text on its
own line. Praat ends this file without a final newline.

Reading follows Praat's own text reader: a file is a sequence of numbers, ``"strings"`` (inner
quotes doubled, line breaks allowed) and ``<flags>``; ``!`` starts a comment that runs to the end
of the line; the ``key =`` labels of the long format are skipped, so the long and the short format
go through one parser (free text after a value on the same line, as in hand-written files such as
``3 tiers``, is skipped too). Unlike Praat, a word where a value should be (``xmin = abc``) is an
error rather than skipped, so that a :class:`TextGridError` can name the file, the line and what was
expected. Files may be UTF-8 (with or without a byte-order mark) or UTF-16 (either byte order; found
from the byte-order mark or, without one, from the NUL bytes).

Writing reproduces Praat's output byte for byte: numbers as Praat's ``Melder_double`` prints them
(``%.15g``, or 16 or 17 significant digits where 15 do not give the same double back), LF line
breaks, and ``encoding="utf-16"`` as Praat writes it (big-endian with a byte-order mark).
"""

from __future__ import annotations

import math
import operator
import os
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import LmbrainError, LmbrainWarning

__all__ = [
    "NON_WORDS",
    "NON_WORDS_HUTH",
    "SILENCES",
    "WORD_TIER_NAMES",
    "PHONE_TIER_NAMES",
    "TIME_TOLERANCE",
    "MAX_WORD_TIME",
    "CHRONOLOGICAL_HEADER",
    "FORMATS",
    "ENCODINGS",
    "TextGridError",
    "Interval",
    "Tier",
    "TextGrid",
    "read",
    "write",
    "read_words",
    "words_to_tier",
]

#: Word-tier labels that are not words: compared case-insensitively after stripping ``{``, ``}``
#: and surrounding whitespace (so ``{LG}``, ``SP`` and an empty interval are all dropped).
NON_WORDS = frozenset({"sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp", "sl", "cg", "ig", ""})

#: The 7 labels the Huth lab's released code drops from the word tier (``DEFAULT_BAD_WORDS`` of its
#: ``dsutils.make_word_ds``), compared the same way. Unlike :data:`NON_WORDS` it keeps ``sl``, ``cg``,
#: ``ig`` and empty intervals, which then count as words (an empty one as the word ``""``).
NON_WORDS_HUTH = frozenset({"sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp"})

#: Phone-tier labels that are silences or non-speech, dropped by ``lmbrain.stimulus.read_phones``
#: unless ``include_silence=True``: :data:`NON_WORDS` plus ``sil``.
SILENCES = NON_WORDS | {"sil"}

#: Tier names (case-insensitive, surrounding spaces ignored) that mark the word tier; a name such as
#: ``"speaker1 - words"`` (Montreal Forced Aligner) counts too.
WORD_TIER_NAMES = frozenset({"word", "words"})

#: Tier names that mark the phone tier, matched as :data:`WORD_TIER_NAMES`.
PHONE_TIER_NAMES = frozenset({"phone", "phones", "phoneme", "phonemes"})

#: Seconds by which intervals may overlap or stick out of their tier's time domain before
#: :func:`read` refuses them (text files round times; Praat's own files tile exactly).
TIME_TOLERANCE = 1e-6

#: Word times (s) beyond which :func:`read_words` refuses a word as implausible (about 11.6 days).
MAX_WORD_TIME = 1e6

#: The first line of a chronological TextGrid file (without its quotes).
CHRONOLOGICAL_HEADER = "Praat chronological TextGrid text file"

#: The formats :func:`write` can produce.
FORMATS = ("long", "short", "chronological")

#: The encodings :func:`write` can produce.
ENCODINGS = ("utf-8", "utf-16")

_TIER_KINDS = ("IntervalTier", "TextTier")
_EXPECTED_HEADER = ('a Praat TextGrid text file (first line File type = "ooTextFile" or '
                    '"Praat chronological TextGrid text file")')


class TextGridError(LmbrainError, ValueError):
    """A TextGrid file cannot be read, or holds no usable word tier.

    The message names the file and, for a malformed file, the line (1-based) where reading failed
    and what was expected there, e.g.
    ``"stories/foo.TextGrid, line 17: expected a number for xmax of interval 3 of 9 in tier 2 ('word'), got 'abc'"``.
    """


@dataclass
class Interval:
    """One interval of an interval tier, or one point of a point tier.

    Attributes
    ----------
    xmin, xmax : float
        Start and end time (s). For a point (an item of a ``TextTier``) both are the point's time.
    text : str
        The label (Praat: ``text`` of an interval, ``mark`` of a point).
    """

    xmin: float
    xmax: float
    text: str


@dataclass
class Tier:
    """One tier of a TextGrid.

    Attributes
    ----------
    name : str
        The tier name.
    kind : str
        ``"IntervalTier"`` or ``"TextTier"`` (a point tier).
    xmin, xmax : float
        The tier's time domain (s).
    items : list of Interval
        The intervals (or points) in time order, inside ``[xmin, xmax]``; intervals do not overlap.
        Praat's interval tiers tile ``[xmin, xmax]`` without gaps (see :func:`words_to_tier`); this
        reader accepts gaps.
    """

    name: str
    kind: str  # "IntervalTier" or "TextTier"
    xmin: float
    xmax: float
    items: list[Interval] = field(default_factory=list)
    #: The first inconsistency of the tier's times (with ``read(..., strict=False)``), else None.
    problem: str | None = None


@dataclass
class TextGrid:
    """A Praat TextGrid: a time domain ``[xmin, xmax]`` (s) and a list of tiers."""

    xmin: float
    xmax: float
    tiers: list[Tier] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Decoding
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _count_breaks(s: str) -> int:
    return len(_LINE_BREAK.findall(s))


def _decode(raw: bytes, name: str) -> str:
    """The text of a TextGrid file: UTF-8 (BOM optional) or UTF-16 (BOM, or guessed from NUL bytes)."""
    if not raw.strip():
        raise TextGridError(f"{name}, line 1: the file is empty; expected a Praat TextGrid")
    if raw.startswith(b"ooBinaryFile"):
        raise TextGridError(f"{name}, line 1: this is a binary Praat file; only text TextGrids can be read "
                            "(in Praat: Save as text file)")
    if raw.startswith(b"\xef\xbb\xbf"):
        encoding, body = "utf-8", raw[3:]
    elif raw.startswith(b"\xff\xfe"):
        encoding, body = "utf-16-le", raw[2:]
    elif raw.startswith(b"\xfe\xff"):
        encoding, body = "utf-16-be", raw[2:]
    elif b"\x00" in raw:
        head = raw[:4096]
        at_even, at_odd = head[0::2].count(0), head[1::2].count(0)
        if at_odd > 2 * at_even:
            encoding, body = "utf-16-le", raw
        elif at_even > 2 * at_odd:
            encoding, body = "utf-16-be", raw
        else:
            line = raw[: raw.index(b"\x00")].count(b"\n") + 1
            raise TextGridError(f"{name}, line {line}: NUL bytes in a file without a UTF-16 byte-order mark; "
                                "not a text TextGrid")
    else:
        encoding, body = "utf-8", raw
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        line = _count_breaks(body[: exc.start].decode(encoding, errors="replace")) + 1
        bad = body[exc.start : exc.end]
        raise TextGridError(f"{name}, line {line}: cannot decode the bytes {bad!r} as {encoding.upper()} "
                            f"({exc.reason}); a TextGrid must be UTF-8 or UTF-16") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise TextGridError(f"{name}, line {_count_breaks(text[:nul]) + 1}: a NUL character; not a text TextGrid")
    if not text.strip():
        raise TextGridError(f"{name}, line 1: the file is empty; expected a Praat TextGrid")
    return text


# ----------------------------------------------------------------------------------------------
# Tokenising
_SPACE = re.compile(r"[^\S\r\n]+")
_COMMENT = re.compile(r"![^\r\n]*")
_STRING = re.compile(r'"(?:[^"]++|"")*+"')
_FLAG = re.compile(r'<[^<>\s"!]*>')
# ``File type =``, ``xmin =``, ``tiers?``, ``item []:``, ``intervals: size =``, ``points [3]:`` ...
_LABEL = re.compile(r"[^\W\d]\w*(?:[ \t]+[^\W\d]\w*)*[ \t]*(?:\[[ \t]*\d*[ \t]*\][ \t]*:?|[=:?])")
_WORD = re.compile(r'[^\s"!<]+|<[^\s"!]*')
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


class _Tok:
    __slots__ = ("kind", "value", "line", "raw")

    def __init__(self, kind: str, value, line: int, raw: str):
        self.kind = kind  # "num", "str", "flag", "bad" (a word where a value should be) or "free"
        self.value = value
        self.line = line
        self.raw = raw


def _tokenise(text: str, name: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, n, line = 0, len(text), 1
    seen_value = False  # a value already on this line: later bare words are free text
    while pos < n:
        c = text[pos]
        if c == "\n" or c == "\r":
            pos += 2 if text.startswith("\r\n", pos) else 1
            line += 1
            seen_value = False
        elif c.isspace():
            pos = _SPACE.match(text, pos).end()
        elif c == "!":
            pos = _COMMENT.match(text, pos).end()
        elif c == '"':
            m = _STRING.match(text, pos)
            if m is None:
                raise TextGridError(f"{name}, line {line}: unterminated string (no closing quote before the end of the file)")
            raw = m.group()
            end_line = line + _count_breaks(raw)
            if m.end() < n and not text[m.end()].isspace():
                if all(t.kind != "str" for t in toks):  # still looking for the header
                    eol = _LINE_BREAK.search(text, pos)
                    got = text[pos : eol.start() if eol else n]
                    raise TextGridError(f"{name}, line {line}: expected {_EXPECTED_HEADER}, got {got[:60]!r}")
                where = "on this line" if end_line == line else f"on line {end_line}"
                raise TextGridError(
                    f"{name}, line {line}: unterminated string or undoubled quote: the string that starts here ends "
                    f"at a quote {where} followed by {text[m.end()]!r} (inner quotes must be doubled)")
            toks.append(_Tok("str", raw[1:-1].replace('""', '"').replace("\r\n", "\n"), line, raw))
            line = end_line
            pos = m.end()
            seen_value = True
        else:
            m = _FLAG.match(text, pos) if c == "<" else None
            if m is not None:
                toks.append(_Tok("flag", m.group()[1:-1], line, m.group()))
                pos = m.end()
                seen_value = True
                continue
            if not seen_value:
                m = _LABEL.match(text, pos)
                if m is not None:
                    pos = m.end()
                    continue
            m = _WORD.match(text, pos)
            word = m.group()
            pos = m.end()
            if _NUMBER.fullmatch(word):
                toks.append(_Tok("num", float(word), line, word))
                seen_value = True
            else:
                # After a value on the same line, a word is free text ("3 tiers"), which the parser
                # skips as Praat does unless a value of the wrong kind follows it.
                toks.append(_Tok("free" if seen_value else "bad", word, line, word))
    return toks


# ----------------------------------------------------------------------------------------------
# Parsing
class _Parser:
    def __init__(self, toks: list[_Tok], name: str, last_line: int):
        self.toks, self.name, self.last_line, self.pos = toks, name, last_line, 0
        self.strict = True

    def fail(self, expected: str, tok: _Tok | None):
        if tok is None:
            raise TextGridError(f"{self.name}, line {self.last_line}: the file ends early (truncated?): expected {expected}")
        if tok.kind == "str":
            shown = tok.value if len(tok.value) <= 40 else tok.value[:37] + "..."
            shown = f'the string "{shown}"'
        elif tok.kind == "flag":
            shown = tok.raw
        else:
            shown = repr(tok.raw)
        raise TextGridError(f"{self.name}, line {tok.line}: expected {expected}, got {shown}")

    def _skip_free(self) -> int:
        start = self.pos
        while self.pos < len(self.toks) and self.toks[self.pos].kind == "free":
            self.pos += 1
        return start

    def at_end(self) -> bool:
        self._skip_free()
        return self.pos >= len(self.toks)

    def peek(self) -> _Tok | None:
        self._skip_free()
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self, kind: str, expected: str) -> _Tok:
        start = self._skip_free()
        tok = self.toks[self.pos] if self.pos < len(self.toks) else None
        if tok is None or tok.kind != kind:
            # free text right before the mismatch is the likelier culprit ("2 2 abc")
            self.fail(expected, self.toks[start] if start < self.pos else tok)
        self.pos += 1
        return tok

    def number(self, what: str) -> tuple[float, int]:
        tok = self.take("num", f"a number for {what}")
        if not math.isfinite(tok.value):
            self.fail(f"a finite number for {what}", tok)
        return tok.value, tok.line

    def count(self, what: str) -> int:
        tok = self.take("num", f"a count for {what}")
        if tok.value < 0 or not float(tok.value).is_integer():
            self.fail(f"a whole number >= 0 for {what}", tok)
        return int(tok.value)

    def string(self, what: str) -> str:
        return self.take("str", f"a quoted string for {what}").value

    def tier_header(self, i: int, n: int, grid: TextGrid) -> Tier:
        tok = self.peek()
        what = f'the class of tier {i} of {n} ("IntervalTier" or "TextTier")'
        if tok is not None and tok.kind != "str" and i > 1:
            what = what[:-1] + f"; does the item count of tier {i - 1} match its items?)"
        kind = self.string(what)
        if kind not in _TIER_KINDS:
            self.fail(what, tok)
        name = self.string(f"the name of tier {i}")
        xmin, _ = self.number(f"xmin of tier {i} ({name!r})")
        xmax, line = self.number(f"xmax of tier {i} ({name!r})")
        if xmax < xmin:
            raise TextGridError(f"{self.name}, line {line}: tier {i} ({name!r}) ends (xmax = {xmax:g}) "
                                f"before it starts (xmin = {xmin:g})")
        if xmin < grid.xmin - TIME_TOLERANCE or xmax > grid.xmax + TIME_TOLERANCE:
            raise TextGridError(f"{self.name}, line {line}: tier {i} ({name!r}) spans {xmin:g} to {xmax:g} s, outside "
                                f"the TextGrid's time domain ({grid.xmin:g} to {grid.xmax:g} s); a tier must lie "
                                "within the file's xmin and xmax")
        return Tier(name, kind, xmin, xmax, [])

    def item(self, tier: Tier, where: str) -> tuple[Interval, int]:
        """The next interval (or point) of ``tier`` and the line its first value is on."""
        if tier.kind == "IntervalTier":
            xmin, first = self.number(f"xmin of {where}")
            xmax, line = self.number(f"xmax of {where}")
            text = self.string(f"the text of {where}")
            if xmax < xmin:
                raise TextGridError(f"{self.name}, line {line}: {where} ends (xmax = {xmax:g}) "
                                    f"before it starts (xmin = {xmin:g})")
            return Interval(xmin, xmax, text), first
        time, first = self.number(f"the time of {where}")
        return Interval(time, time, self.string(f"the mark of {where}")), first

    def check_item(self, tier: Tier, it: Interval, line: int, where: str, prev: str) -> None:
        """Refuse an item outside its tier's time domain, out of time order, or (intervals) overlapping.

        ``it`` is about to be appended to ``tier``; ``prev`` names the item before it in messages. When
        the parser is not strict, the first such problem is recorded on the tier instead.
        """
        try:
            self._check_item(tier, it, line, where, prev)
        except TextGridError as exc:
            if self.strict:
                raise
            tier.problem = tier.problem or str(exc)

    def _check_item(self, tier: Tier, it: Interval, line: int, where: str, prev: str) -> None:
        point = tier.kind == "TextTier"
        span = f"at {it.xmin:g} s" if point else f"({it.xmin:g} to {it.xmax:g} s)"
        if it.xmin < tier.xmin - TIME_TOLERANCE or it.xmax > tier.xmax + TIME_TOLERANCE:
            hint = " (a negative time)" if it.xmin < 0 <= tier.xmin else ""
            raise TextGridError(f"{self.name}, line {line}: {where} {span}{hint} lies outside the tier's time domain "
                                f"({tier.xmin:g} to {tier.xmax:g} s); every item must lie within its tier's xmin and xmax")
        if not tier.items:
            return
        last = tier.items[-1]
        if it.xmin < last.xmin - TIME_TOLERANCE:
            unit = "points" if point else "intervals"
            raise TextGridError(f"{self.name}, line {line}: {where} {span} comes before {prev}, which starts at "
                                f"{last.xmin:g} s: the {unit} of a tier must be in time order (Praat never writes "
                                "them otherwise; was the file edited or concatenated by hand?)")
        if not point and it.xmin < last.xmax - TIME_TOLERANCE:
            raise TextGridError(f"{self.name}, line {line}: {where} {span} overlaps {prev}, which ends at "
                                f"{last.xmax:g} s: the intervals of a tier must not overlap")


def _parse_ootext(p: _Parser) -> TextGrid:
    tok = p.peek()
    cls = p.string('the object class ("TextGrid")')
    if cls.split(" ")[0] != "TextGrid":
        raise TextGridError(f'{p.name}, line {tok.line}: the object class is "{cls}", not "TextGrid"')
    xmin, _ = p.number("xmin of the TextGrid")
    xmax, line = p.number("xmax of the TextGrid")
    if xmax < xmin:
        raise TextGridError(f"{p.name}, line {line}: the TextGrid ends (xmax = {xmax:g}) before it starts (xmin = {xmin:g})")
    tok = p.peek()
    flag = p.take("flag", "<exists> or <absent> (tiers?)").value
    if flag not in ("exists", "absent"):
        p.fail("<exists> or <absent> (tiers?)", tok)
    grid = TextGrid(xmin, xmax, [])
    n_tiers = p.count("the number of tiers (size)") if flag == "exists" else 0
    for i in range(1, n_tiers + 1):
        tier = p.tier_header(i, n_tiers, grid)
        unit = "intervals" if tier.kind == "IntervalTier" else "points"
        n_items = p.count(f"the number of {unit} of tier {i} ({tier.name!r})")
        for j in range(1, n_items + 1):
            where = f"{unit[:-1]} {j} of {n_items} in tier {i} ({tier.name!r})"
            it, line = p.item(tier, where)
            p.check_item(tier, it, line, where, f"{unit[:-1]} {j - 1}")
            tier.items.append(it)
        grid.tiers.append(tier)
    if not p.at_end():
        p.fail(f"the end of the file after tier {n_tiers} of {n_tiers} "
               "(does a tier's interval count or the number of tiers not match what follows?)", p.peek())
    return grid


def _parse_chronological(p: _Parser) -> TextGrid:
    xmin, _ = p.number("xmin of the TextGrid (time domain)")
    xmax, line = p.number("xmax of the TextGrid (time domain)")
    if xmax < xmin:
        raise TextGridError(f"{p.name}, line {line}: the TextGrid ends (xmax = {xmax:g}) before it starts (xmin = {xmin:g})")
    n_tiers = p.count("the number of tiers")
    grid = TextGrid(xmin, xmax, [])
    for i in range(1, n_tiers + 1):
        grid.tiers.append(p.tier_header(i, n_tiers, grid))
    last_line = [0] * n_tiers  # where each tier's latest item started, for messages
    while not p.at_end():
        tok = p.peek()
        i = p.count("a tier number")
        if not 1 <= i <= n_tiers:
            p.fail(f"a tier number from 1 to {n_tiers}", tok)
        tier = grid.tiers[i - 1]
        unit = "interval" if tier.kind == "IntervalTier" else "point"
        where = f"the {unit} of tier {i} ({tier.name!r}) starting on line {tok.line}"
        it, _ = p.item(tier, where)
        # Praat writes each tier's items in time order (the file is sorted by time, then tier):
        # an item out of order is a damaged file, not something to sort silently.
        p.check_item(tier, it, tok.line, where, f"the previous {unit} of this tier (line {last_line[i - 1]})")
        tier.items.append(it)
        last_line[i - 1] = tok.line
    return grid


def read(path: str | os.PathLike, strict: bool = True) -> TextGrid:
    """Read a Praat TextGrid text file in any of the three formats.

    Parameters
    ----------
    path : str or os.PathLike
        A ``long``, ``short`` or ``chronological`` text TextGrid, UTF-8 (with or without a
        byte-order mark) or UTF-16 (little- or big-endian).
    strict : bool
        True: inconsistent item times in any tier (see Raises) are an error. False: they are recorded
        as the tier's :attr:`Tier.problem` and the items kept as they are, so that a reader can refuse
        the tier it needs and only warn about the others (:func:`read_words` does).

    Returns
    -------
    TextGrid
        Times in seconds. Items of a ``TextTier`` have ``xmin == xmax`` (the point time).

    Raises
    ------
    TextGridError
        The file is empty, undecodable, not a TextGrid, truncated or malformed (non-numeric
        time, unterminated string, an interval count that does not match the intervals present,
        an interval that ends before it starts, ...), or its times are inconsistent: items of a
        tier out of time order (Praat never writes them so; they are not re-sorted), intervals of
        a tier that overlap, an item outside its tier's ``[xmin, xmax]`` (e.g. a negative time in a
        file starting at 0) or a tier outside the file's. Overlaps and overhangs up to
        :data:`TIME_TOLERANCE` are accepted. The message names the file and the line. Also when
        ``path`` is a folder.
    FileNotFoundError
        ``path`` does not exist.
    """
    name = os.fspath(path)
    try:
        st = os.stat(path)
        key = (os.path.realpath(name), st.st_ino, st.st_size, st.st_mtime_ns, bool(strict))
    except OSError:
        key = None
    if key is not None and key in _PARSED:
        _PARSED.move_to_end(key)
        return pickle.loads(_PARSED[key])  # a fresh copy: callers may edit what they get
    grid = _read(path, name, strict)
    if key is not None:
        _PARSED[key] = pickle.dumps(grid, protocol=pickle.HIGHEST_PROTOCOL)
        while len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
    return grid


# parsed files, keyed by path, inode, size, modification time and strictness (a changed file is read
# again): a stage reads a story's transcript for its words and again for its phones; unpickling a
# copy is ~10x faster than parsing
_PARSED: OrderedDict = OrderedDict()
_PARSED_MAX = 256


def _read(path, name: str, strict: bool) -> TextGrid:
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise TextGridError(f"{name}: is a folder, not a TextGrid file") from None
    text = _decode(raw, name)
    toks = _tokenise(text, name)
    p = _Parser(toks, name, last_line=_count_breaks(text.rstrip()) + 1)
    p.strict = strict
    first = p.peek()
    if first is None or first.kind != "str":
        p.fail(_EXPECTED_HEADER, first)
    p.pos += 1
    if first.value == CHRONOLOGICAL_HEADER:
        return _parse_chronological(p)
    if first.value.startswith("ooTextFile"):
        return _parse_ootext(p)
    p.fail(_EXPECTED_HEADER, first)


# ----------------------------------------------------------------------------------------------
# Writing
def _num(x: float) -> str:
    """A number as Praat writes it (``Melder_double``: %.15g, else %.16g, else %.17g)."""
    x = float(x)
    for digits in (15, 16):
        s = f"{x:.{digits}g}"
        if float(s) == x:
            return s
    return f"{x:.17g}"


def _quote(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _check_grid(grid: TextGrid) -> None:
    def finite(x, what):
        if not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(float(x)):
            raise ValueError(f"cannot write a TextGrid with a non-finite or non-numeric {what}: {x!r}")

    finite(grid.xmin, "xmin")
    finite(grid.xmax, "xmax")
    for i, tier in enumerate(grid.tiers, 1):
        if tier.kind not in _TIER_KINDS:
            raise ValueError(f"tier {i} ({tier.name!r}): kind must be 'IntervalTier' or 'TextTier', not {tier.kind!r}")
        if not isinstance(tier.name, str):
            raise ValueError(f"tier {i}: the name must be a str, not {type(tier.name).__name__}")
        finite(tier.xmin, f"xmin of tier {i}")
        finite(tier.xmax, f"xmax of tier {i}")
        if tier.xmax < tier.xmin:
            raise ValueError(f"tier {i} ({tier.name!r}) ends before it starts")
        for j, it in enumerate(tier.items, 1):
            finite(it.xmin, f"xmin of item {j} of tier {i}")
            finite(it.xmax, f"xmax of item {j} of tier {i}")
            if not isinstance(it.text, str):
                raise ValueError(f"item {j} of tier {i} ({tier.name!r}): the text must be a str, not {type(it.text).__name__}")
            if tier.kind == "TextTier" and it.xmin != it.xmax:
                raise ValueError(f"point {j} of tier {i} ({tier.name!r}): a point needs xmin == xmax, got {it.xmin} and {it.xmax}")
            if it.xmax < it.xmin:
                raise ValueError(f"interval {j} of tier {i} ({tier.name!r}) ends ({it.xmax}) before it starts ({it.xmin})")
            # what read() refuses, write() refuses too
            if it.xmin < tier.xmin - TIME_TOLERANCE or it.xmax > tier.xmax + TIME_TOLERANCE:
                raise ValueError(f"item {j} of tier {i} ({tier.name!r}) lies outside the tier's time domain")
            if j > 1:
                last = tier.items[j - 2]
                if it.xmin < last.xmin - TIME_TOLERANCE:
                    raise ValueError(f"item {j} of tier {i} ({tier.name!r}) starts before item {j - 1}: items must be in time order")
                if tier.kind == "IntervalTier" and it.xmin < last.xmax - TIME_TOLERANCE:
                    raise ValueError(f"interval {j} of tier {i} ({tier.name!r}) overlaps interval {j - 1}")
        if tier.xmin < grid.xmin - TIME_TOLERANCE or tier.xmax > grid.xmax + TIME_TOLERANCE:
            raise ValueError(f"tier {i} ({tier.name!r}) lies outside the TextGrid's time domain")


def _write_long(grid: TextGrid) -> str:
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
           f"xmin = {_num(grid.xmin)} ", f"xmax = {_num(grid.xmax)} "]
    if not grid.tiers:
        out.append("tiers? <absent> ")
        return "\n".join(out) + "\n"
    out += ["tiers? <exists> ", f"size = {len(grid.tiers)} ", "item []: "]
    for i, tier in enumerate(grid.tiers, 1):
        out += [f"    item [{i}]:", f"        class = {_quote(tier.kind)} ", f"        name = {_quote(tier.name)} ",
                f"        xmin = {_num(tier.xmin)} ", f"        xmax = {_num(tier.xmax)} "]
        if tier.kind == "IntervalTier":
            out.append(f"        intervals: size = {len(tier.items)} ")
            for j, it in enumerate(tier.items, 1):
                out += [f"        intervals [{j}]:", f"            xmin = {_num(it.xmin)} ",
                        f"            xmax = {_num(it.xmax)} ", f"            text = {_quote(it.text)} "]
        else:
            out.append(f"        points: size = {len(tier.items)} ")
            for j, it in enumerate(tier.items, 1):
                out += [f"        points [{j}]:", f"            number = {_num(it.xmin)} ",
                        f"            mark = {_quote(it.text)} "]
    return "\n".join(out) + "\n"


def _write_short(grid: TextGrid) -> str:
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", _num(grid.xmin), _num(grid.xmax)]
    if not grid.tiers:
        out.append("<absent>")
        return "\n".join(out) + "\n"
    out += ["<exists>", str(len(grid.tiers))]
    for tier in grid.tiers:
        out += [_quote(tier.kind), _quote(tier.name), _num(tier.xmin), _num(tier.xmax), str(len(tier.items))]
        for it in tier.items:
            if tier.kind == "IntervalTier":
                out += [_num(it.xmin), _num(it.xmax), _quote(it.text)]
            else:
                out += [_num(it.xmin), _quote(it.text)]
    return "\n".join(out) + "\n"


def _write_chronological(grid: TextGrid) -> str:
    out = [_quote(CHRONOLOGICAL_HEADER), f"{_num(grid.xmin)} {_num(grid.xmax)}   ! Time domain.",
           f"{len(grid.tiers)}   ! Number of tiers."]
    for tier in grid.tiers:
        out.append(f"{_quote(tier.kind)} {_quote(tier.name)} {_num(tier.xmin)} {_num(tier.xmax)}")
    entries = [(it.xmin, i, it, tier) for i, tier in enumerate(grid.tiers, 1) for it in tier.items]
    entries.sort(key=lambda e: (e[0], e[1]))  # by time, then tier; stable within a tier
    for _, i, it, tier in entries:
        comment = _LINE_BREAK.sub(" ", tier.name)  # a line break would end Praat's comment early
        out += ["", f"! {comment}:"]
        if tier.kind == "IntervalTier":
            out.append(f"{i} {_num(it.xmin)} {_num(it.xmax)}")
        else:
            out.append(f"{i} {_num(it.xmin)} ")
        out.append(_quote(it.text))
    return "\n".join(out)  # Praat writes no final newline here


_WRITERS = {"long": _write_long, "short": _write_short, "chronological": _write_chronological}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 random name collisions
        raise FileExistsError(f"{path}: could not create a temporary file beside it")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write(path: str | os.PathLike, grid: TextGrid, format: str = "long", encoding: str = "utf-8") -> Path:
    """Write ``grid`` exactly as Praat writes it, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder is created if needed. The file appears complete or not at all
        (written to a temporary file in the same folder, then moved into place).
    grid : TextGrid
        Times in seconds (finite); points of a ``TextTier`` need ``xmin == xmax``.
    format : {"long", "short", "chronological"}
        Praat's "Save as text file", "Save as short text file" and
        "Save as chronological text file" layouts (see the module docstring).
    encoding : {"utf-8", "utf-16"}
        UTF-8 without a byte-order mark, or UTF-16 as Praat writes it (big-endian, with a
        byte-order mark).

    Returns
    -------
    pathlib.Path
        ``path``, so that ``read(write(path, grid)) == grid``.

    Raises
    ------
    ValueError
        A bad ``format`` or ``encoding``, or a grid :func:`read` would refuse: non-finite times,
        an interval that ends before it starts, items out of time order, overlapping intervals,
        items outside their tier's time domain or tiers outside the grid's.
    """
    if format not in _WRITERS:
        raise ValueError(f"unknown TextGrid format {format!r}; use one of {', '.join(FORMATS)}")
    enc = str(encoding).lower().replace("_", "-")
    if enc not in ENCODINGS:
        raise ValueError(f"unknown TextGrid encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    _check_grid(grid)
    text = _WRITERS[format](grid)
    data = text.encode("utf-8") if enc == "utf-8" else b"\xfe\xff" + text.encode("utf-16-be")
    path = Path(path)
    _atomic_write_bytes(path, data)
    return path


# ----------------------------------------------------------------------------------------------
# Words
def _tier_list(grid: TextGrid) -> str:
    if not grid.tiers:
        return "the file has no tiers"
    return "tiers present: " + ", ".join(f"{i} {t.name!r} ({t.kind})" for i, t in enumerate(grid.tiers))


def _label_key(text: str) -> str:
    """A label as :data:`NON_WORDS` is matched: stripped of whitespace and ``{}``, lower-cased."""
    return text.strip().strip("{}").strip().lower()


def _non_word_set(non_words: Iterable[str]) -> frozenset:
    if isinstance(non_words, str):
        raise TypeError(f"non_words must be a collection of labels (e.g. NON_WORDS_HUTH), not the string {non_words!r}")
    labels = frozenset(non_words)
    if not all(isinstance(w, str) for w in labels):
        raise TypeError("non_words must hold strings")
    return frozenset(_label_key(w) for w in labels)


def _named(tier_name: str, names: frozenset) -> bool:
    """Whether a tier's name is one of ``names`` (case-insensitive; ``"<speaker> - words"`` too)."""
    n = tier_name.strip().lower()
    return n in names or (" - " in n and n.rsplit(" - ", 1)[1].strip() in names)


def _select_tier(grid: TextGrid, tier: int | str | None, name: str, names: frozenset = WORD_TIER_NAMES,
                 default: int | None = None) -> tuple[int, Tier]:
    """The tier ``tier`` asks for; ``None``: the one named in ``names``, else ``default`` (a position).

    ``default=None`` means the second tier when there are two or more, else the only one.
    """
    if isinstance(tier, str):
        for i, t in enumerate(grid.tiers):
            if t.name == tier:
                return i, t
        raise TextGridError(f"{name}: no tier named {tier!r}; {_tier_list(grid)}")
    if tier is None:
        named = [i for i, t in enumerate(grid.tiers) if _named(t.name, names)]
        if len(named) > 1:  # e.g. a "words" point tier beside a "word" interval tier
            intervals = [i for i in named if grid.tiers[i].kind == "IntervalTier"]
            named = intervals if len(intervals) == 1 else named
        if len(named) == 1:
            return named[0], grid.tiers[named[0]]
        if len(named) > 1:
            listed = ", ".join(f"{i} {grid.tiers[i].name!r}" for i in named)
            raise TextGridError(f"{name}: {len(named)} tiers are named like the one wanted ({listed}); "
                                f"pass tier= (a 0-based position or a name) to choose; {_tier_list(grid)}")
        idx = default if default is not None else (1 if len(grid.tiers) >= 2 else 0)
    else:
        if isinstance(tier, bool):
            raise TypeError("tier must be None, an int (0-based position) or a str (name), not a bool")
        idx = operator.index(tier)
    if not 0 <= idx < len(grid.tiers):
        raise TextGridError(f"{name}: no tier at position {idx} (0-based); {_tier_list(grid)}")
    return idx, grid.tiers[idx]


def _speech_labels(tier: Tier) -> list[str]:
    return [k for k in (_label_key(it.text) for it in tier.items) if k not in SILENCES]


#: Share of 1-3 character labels from which a tier reads as phones (ARPAbet labels such as ``AH0``
#: all are; in English running text about half of the words are).
_PHONE_SHORT_SHARE = 0.9


def _phone_like(grid: TextGrid, idx: int) -> str | None:
    """Why tier ``idx``, taken as the word tier, looks like a phone tier; ``None`` when it does not.

    It does when it is named like a phone tier (:data:`PHONE_TIER_NAMES`), or when at least 90% of
    its labels (silences aside) are 1-3 characters long and either another interval tier has at
    most 2/3 as many labelled intervals (a word spans about three phones, so the word tier of an
    aligned pair always has the fewer intervals; 10 labels at least), or it is the only interval
    tier and has 20 labels or more.
    """
    t = grid.tiers[idx]
    if _named(t.name, PHONE_TIER_NAMES):
        return f"it is named {t.name!r}"
    labels = _speech_labels(t)
    n = len(labels)
    if n < 10:
        return None
    share = sum(len(k) <= 3 for k in labels) / n
    if share < _PHONE_SHORT_SHARE:
        return None
    short = f"{share:.0%} of its {n} labels are 1-3 characters long, as phone labels are"
    others = [(j, len(_speech_labels(o))) for j, o in enumerate(grid.tiers) if j != idx and o.kind == "IntervalTier"]
    fewer = [(j, m) for j, m in others if 0 < m and n >= 1.5 * m]
    if fewer:
        j, m = min(fewer, key=lambda jm: jm[1])
        return f"{short}, and it has {n / m:.1f} times as many labelled intervals as tier {j} ({grid.tiers[j].name!r})"
    if not others and n >= 20:
        return short
    return None


def read_words(path: str | os.PathLike, tier: int | str | None = None,
               non_words: Iterable[str] = NON_WORDS) -> pd.DataFrame:
    """The words of a TextGrid's word tier, one row per word interval, in time order.

    Parameters
    ----------
    path : str or os.PathLike
        A TextGrid in any format :func:`read` accepts.
    tier : int, str or None
        Which tier holds the words. ``None``: the tier named ``word`` or ``words`` (any case; see
        :data:`WORD_TIER_NAMES`) when exactly one is; when none is, by position: the second tier
        (index 1) when the file has two or more (LeBel et al. 2023: tier 1 phones, tier 2 words),
        else the only one. An int picks a 0-based position, a str a tier name (exact).
    non_words : collection of str
        Labels that are not words, compared case-insensitively after stripping ``{``, ``}`` and
        surrounding whitespace: :data:`NON_WORDS` (lmbrain's default) or :data:`NON_WORDS_HUTH`
        (the Huth lab's reference code, which keeps ``sl``, ``cg``, ``ig`` and empty labels).

    Returns
    -------
    pandas.DataFrame
        Columns ``word`` (str: the label stripped of surrounding whitespace and ``{}``, lower-cased),
        ``onset``, ``offset`` and ``midpoint`` (float64, seconds; ``midpoint = (onset + offset) / 2``),
        in time order; shape ``(n_words, 4)``, never empty. Intervals whose label is in
        ``non_words`` (``sp``, ``{LG}``, ``sentence_start``, empty, ...) are dropped.

    Raises
    ------
    TextGridError
        The file is malformed or its times are inconsistent (see :func:`read`: intervals out of
        order, overlapping or outside the file's time domain); the requested tier does not exist
        (the message lists the tiers present); several tiers are named ``word``/``words`` and
        ``tier`` is not given (unless exactly one of them is an interval tier); the word tier is a
        point tier; it holds no word at all; or a word's time is implausible (beyond
        :data:`MAX_WORD_TIME` s: a file in samples, say).
    TypeError
        ``non_words`` is a string or holds something other than strings.

    Warns
    -----
    LmbrainWarning
        The tier chosen with ``tier=None`` looks like a phone tier, so the tiers are probably
        swapped. The heuristic: the tier is named like one (:data:`PHONE_TIER_NAMES`); or, of its
        labels other than silences (at least 10 of them), 90% or more are 1-3 characters long
        (ARPAbet phones all are; about half of English running words are) and another interval
        tier has at most 2/3 as many labelled intervals (a word spans about three phones, so of an
        aligned pair the word tier has the fewer), or it is the only interval tier and has 20
        labels or more. Also: words that start before 0 s (the audio onset), which a file whose
        time domain starts below 0 allows.
    """
    name = os.fspath(path)
    drop = _non_word_set(non_words)
    grid = read(path, strict=False)
    idx, t = _select_tier(grid, tier, name)
    if t.kind != "IntervalTier":
        raise TextGridError(f"{name}: tier {idx} ({t.name!r}) is a point tier (TextTier); words need an interval tier; "
                            f"{_tier_list(grid)}")
    check_tier_times(grid, idx, name)
    if tier is None:
        reason = _phone_like(grid, idx)
        if reason is not None:
            warnings.warn(f"{name}: the word tier chosen, {idx} ({t.name!r}), looks like a phone tier ({reason}); "
                          "if the tiers are swapped, name the word tier 'word' or pass tier= (a position or a name); "
                          f"{_tier_list(grid)}", LmbrainWarning, stacklevel=2)
    words, onsets, offsets = [], [], []
    for j, it in enumerate(t.items, 1):
        label = it.text.strip().strip("{}").strip()
        if label.lower() in drop:
            continue
        if not (abs(it.xmin) <= MAX_WORD_TIME and abs(it.xmax) <= MAX_WORD_TIME):
            raise TextGridError(f"{name}: the word {label!r} (interval {j} of tier {idx}, {t.name!r}) spans {it.xmin:g} to "
                                f"{it.xmax:g} s: not a plausible time for a word (beyond {MAX_WORD_TIME:g} s); "
                                "TextGrid times are seconds (is the file in samples or milliseconds?)")
        words.append(label.lower())
        onsets.append(it.xmin)
        offsets.append(it.xmax)
    if not words:
        raise TextGridError(f"{name}: tier {idx} ({t.name!r}) holds no words: its {len(t.items)} intervals are all "
                            "silences or non-word labels (sp, {LG}, empty, ...); is it the word tier? "
                            f"{_tier_list(grid)}")
    onset = np.asarray(onsets, dtype=np.float64)
    offset = np.asarray(offsets, dtype=np.float64)
    if onset[0] < 0:
        n_neg = int((onset < 0).sum())
        warnings.warn(f"{name}: {n_neg} word(s) of tier {idx} ({t.name!r}) start before 0 s (the first at "
                      f"{onset[0]:g} s); word times are read as seconds from the audio onset", LmbrainWarning, stacklevel=2)
    order = np.argsort(onset, kind="stable")  # already in order (read() checks); kept as a guarantee
    return pd.DataFrame({
        "word": pd.Series([words[i] for i in order], dtype=str),
        "onset": onset[order],
        "offset": offset[order],
        "midpoint": (onset[order] + offset[order]) / 2,
    })


def check_tier_times(grid: TextGrid, idx: int, name: str) -> None:
    """Raise the time problem of the tier being read (a damaged file); warn about the other tiers' problems.

    ``grid`` comes from ``read(path, strict=False)``: a tier whose items are out of order, overlap or
    lie outside its domain carries the first such problem. The tier the caller reads must be sound;
    a damaged tier the caller does not read (e.g. the phone tier when words are read) only warns.
    """
    if grid.tiers[idx].problem:
        raise TextGridError(grid.tiers[idx].problem)
    for i, other in enumerate(grid.tiers):
        if i != idx and other.problem:
            warnings.warn(f"{other.problem} (tier {i} is not read here: its words or phones are not used)",
                          LmbrainWarning, stacklevel=3)


def words_to_tier(words_df: pd.DataFrame, name: str = "word", xmin: float | None = None,
                  xmax: float | None = None) -> Tier:
    """An interval tier holding a word table, with empty intervals filling the gaps.

    Praat's interval tiers tile their time domain without gaps, so every stretch not covered
    by a word (before the first, between words, after the last) becomes an interval with text ``""``.

    Parameters
    ----------
    words_df : pandas.DataFrame
        Columns ``word`` (str), ``onset`` and ``offset`` (s), one row per word; rows must be in time
        order and must not overlap (a word may start exactly where the previous one ends).
    name : str
        The tier name.
    xmin, xmax : float, optional
        The tier's time domain (s). Default: ``min(0, first onset)`` and the last offset.

    Returns
    -------
    Tier
        An ``IntervalTier`` whose items tile ``[xmin, xmax]``.

    Raises
    ------
    ValueError
        Missing columns, non-finite times, a word ending before it starts, overlapping or
        unsorted words, or words outside ``[xmin, xmax]``.
    """
    missing = [c for c in ("word", "onset", "offset") if c not in words_df.columns]
    if missing:
        raise ValueError(f"words_to_tier: the word table lacks column(s) {missing}")
    texts = ["" if pd.isna(w) else str(w) for w in words_df["word"]]
    on = pd.to_numeric(words_df["onset"], errors="coerce").to_numpy(dtype=np.float64)
    off = pd.to_numeric(words_df["offset"], errors="coerce").to_numpy(dtype=np.float64)
    if not (np.isfinite(on).all() and np.isfinite(off).all()):
        raise ValueError("words_to_tier: onsets and offsets must be finite numbers")
    lo = min(0.0, float(on[0])) if len(on) and xmin is None else (0.0 if xmin is None else float(xmin))
    hi = (float(off[-1]) if len(off) else lo) if xmax is None else float(xmax)
    if hi < lo:
        raise ValueError(f"words_to_tier: xmax ({hi}) is before xmin ({lo})")
    items: list[Interval] = []
    t = lo
    for k, (text, a, b) in enumerate(zip(texts, on.tolist(), off.tolist())):
        if b < a:
            raise ValueError(f"words_to_tier: word {k} ({text!r}) ends ({b}) before it starts ({a})")
        if a < t:
            what = "xmin" if k == 0 else f"the end of word {k - 1} ({t})"
            raise ValueError(f"words_to_tier: word {k} ({text!r}) starts at {a}, before {what}; "
                             "words must be sorted, non-overlapping and inside [xmin, xmax]")
        if a > t:
            items.append(Interval(t, a, ""))
        items.append(Interval(a, b, text))
        t = b
    if t > hi:
        raise ValueError(f"words_to_tier: the last word ends at {t}, after xmax ({hi})")
    if hi > t or not items:
        items.append(Interval(t, hi, ""))
    return Tier(name, "IntervalTier", lo, hi, items)
