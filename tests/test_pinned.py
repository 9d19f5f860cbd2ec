"""Pinned downloads through pip: the hash is checked before anything reads the file, and nothing in a
downloaded source distribution runs (measured offline with a local file:// package index serving a
fake sdist whose setup.py leaves a marker file when it runs)."""

import subprocess
import sys
import tarfile

import pytest

import lmbrain.pinned as pinned_mod
from lmbrain.pinned import FetchError, PinnedFile, fetch_pinned, sha256_file


def _sdist(tmp_path, name, marker, extra=""):
    src = tmp_path / "build" / name / "lmbfake-0.1"
    src.mkdir(parents=True)
    (src / "setup.py").write_text(f"open({str(marker)!r}, 'a').write('setup.py ran\\n')\n{extra}"
                                  "from setuptools import setup\nsetup(name='lmbfake', version='0.1')\n")
    (src / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: lmbfake\nVersion: 0.1\n")
    archive = tmp_path / "build" / name / "lmbfake-0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="lmbfake-0.1")
    return archive


def _index(tmp_path, served, advertised: str | None):
    """A PEP 503 file:// index serving ``served`` as lmbfake-0.1.tar.gz, advertising ``advertised`` as its sha256."""
    project = tmp_path / "index" / "lmbfake"
    project.mkdir(parents=True, exist_ok=True)
    (project / "lmbfake-0.1.tar.gz").write_bytes(served.read_bytes())
    href = "lmbfake-0.1.tar.gz" + (f"#sha256={advertised}" if advertised else "")
    (project / "index.html").write_text(f'<!DOCTYPE html><html><body><a href="{href}">lmbfake-0.1.tar.gz</a></body></html>')
    return ["--isolated", "--index-url", (tmp_path / "index").as_uri()]  # pip's own config and env ignored: offline


@pytest.fixture
def fake(tmp_path):
    marker = tmp_path / "setup_py_ran"
    genuine = _sdist(tmp_path, "genuine", marker)
    pin = PinnedFile("lmbfake", "0.1", "lmbfake-0.1.tar.gz", sha256_file(genuine))
    return pin, genuine, marker


def test_pip_download_runs_setup_code_before_any_hash_check(fake, tmp_path):
    """The control: what lmbrain used to do (pip download --no-binary :all:) runs the archive's setup.py."""
    pin, genuine, marker = fake
    args = _index(tmp_path, genuine, pin.sha256)
    res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                          "--no-build-isolation", "-d", str(tmp_path / "out"), "lmbfake==0.1", *args],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert marker.exists()  # setup.py ran while pip prepared the metadata


def test_fetch_through_pips_finder_runs_nothing(fake, tmp_path):
    pin, genuine, marker = fake
    args = _index(tmp_path, genuine, pin.sha256)
    path = fetch_pinned(pin, tmp_path / "cache", pip_args=args)
    assert path == tmp_path / "cache" / pin.filename and sha256_file(path) == pin.sha256
    assert not marker.exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [pin.filename]  # no temporary folder left
    # cached: checked and returned without pip
    (tmp_path / "index").rename(tmp_path / "gone")
    assert fetch_pinned(pin, tmp_path / "cache", pip_args=args) == path


def test_fetch_works_with_an_index_that_publishes_no_hashes(fake, tmp_path):
    pin, genuine, marker = fake
    path = fetch_pinned(pin, tmp_path / "cache", pip_args=_index(tmp_path, genuine, None))
    assert sha256_file(path) == pin.sha256 and not marker.exists()


@pytest.mark.parametrize("advertised", ["pinned", "tampered", None])
def test_a_tampered_archive_is_refused_and_never_run(fake, tmp_path, advertised):
    """The index serves another archive (advertising the pinned hash, its own hash, or none)."""
    pin, genuine, marker = fake
    tampered = _sdist(tmp_path, "tampered", marker, extra="import os\n")
    hashes = {"pinned": pin.sha256, "tampered": sha256_file(tampered), None: None}
    args = _index(tmp_path, tampered, hashes[advertised])
    with pytest.raises(FetchError, match="not the pinned"):
        fetch_pinned(pin, tmp_path / "cache", pip_args=args)
    assert not marker.exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_cached_file_with_another_hash_is_refused(fake, tmp_path):
    pin, genuine, marker = fake
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / pin.filename).write_bytes(b"something else")
    with pytest.raises(FetchError, match=r"lmbfake-0.1.tar.gz: checksum mismatch .*Delete the file"):
        fetch_pinned(pin, tmp_path / "cache")


def _break_pip_api(tmp_path, monkeypatch):
    """Make the finder helper report that pip's internal API changed (exit 3), as a new pip might."""
    helper = tmp_path / "helper.py"
    helper.write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setattr(pinned_mod, "PIP_FETCH", helper)


def test_fallback_checks_the_hash_before_pip_prepares_anything(fake, tmp_path, monkeypatch):
    pin, genuine, marker = fake
    _break_pip_api(tmp_path, monkeypatch)
    tampered = _sdist(tmp_path, "tampered", marker, extra="import os\n")
    with pytest.raises(FetchError, match="could not download lmbfake==0.1"):
        fetch_pinned(pin, tmp_path / "cache", pip_args=_index(tmp_path, tampered, None))
    assert not marker.exists()  # pip --require-hashes rejected it before preparing metadata
    assert list((tmp_path / "cache").iterdir()) == []


def test_fallback_fetches_the_pinned_archive(fake, tmp_path, monkeypatch):
    """The fallback (pip download --require-hashes) gets the pinned file; it then lets pip run the
    verified archive's setup.py for metadata, which is why it is only the fallback."""
    pin, genuine, marker = fake
    _break_pip_api(tmp_path, monkeypatch)
    path = fetch_pinned(pin, tmp_path / "cache", pip_args=_index(tmp_path, genuine, pin.sha256))
    assert sha256_file(path) == pin.sha256
    assert marker.exists()


def test_an_unreachable_index_says_what_to_do(fake, tmp_path):
    pin, _, marker = fake
    args = ["--isolated", "--index-url", (tmp_path / "no-index").as_uri()]
    with pytest.raises(FetchError) as err:
        fetch_pinned(pin, tmp_path / "cache", pip_args=args)
    message = str(err.value)
    assert "check access to PyPI" in message and f"place {pin.filename}" in message and pin.sha256 in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_download_with_another_hash_is_refused_even_if_pip_let_it_through(fake, tmp_path, monkeypatch):
    """lmbrain hashes what pip delivered again before it moves it into the cache."""
    pin, genuine, marker = fake

    def deliver_tampered(p, folder, pip_args=()):
        path = folder / p.filename
        path.write_bytes(b"tampered")
        return path

    monkeypatch.setattr(pinned_mod, "download", deliver_tampered)
    with pytest.raises(FetchError, match="refusing to use it"):
        fetch_pinned(pin, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
