"""The README's snakemake commands (code blocks, and the profile commands of the cluster section) plan
cleanly: each is run as a dry run (-n) on the default configuration in a fresh directory."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    cmds = [line.split("#")[0].strip() for b in blocks for line in b.splitlines() if line.startswith("snakemake ")]
    cmds += ["snakemake --profile config/profiles/local", "snakemake --profile config/profiles/slurm"]
    for profile in re.findall(r"--profile (config/profiles/\w+)", text):
        assert (ROOT / profile).is_dir(), profile
    return sorted(set(cmds))


@pytest.mark.parametrize("command", _commands())
def test_readme_command_plans(command, tmp_path):
    args = command.split()[1:]
    args = [str(ROOT / a) if a.startswith("config/") else a for a in args]
    proc = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-n", *args,
                           "--configfile", str(ROOT / "config/config.yaml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    targets = [a for a in args if a.startswith("results/")]
    for target in targets:
        assert target in proc.stdout, proc.stdout[-2000:]


def _table_rows_of_another_width(text: str) -> list[str]:
    """The rows of the Markdown tables in ``text`` whose number of cells differs from their header's, or
    that do not end with a pipe. GitHub splits a cell at every unescaped pipe, inside code spans too, and
    drops the cells beyond the header's: a stray cell or a ``|x|`` in a cell's text loses that text."""
    bad, width, fence = [], None, False
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fence, width = not fence, None
            continue
        if fence or not line.startswith("|"):
            width = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line))
        if width is None:
            width = cells
        elif cells != width or not line.rstrip().endswith("|"):
            bad.append(f"line {n}: {cells - 1} cells against the header's {width - 1}: {line[:60]}")
    return bad


def test_every_readme_table_row_has_its_headers_cells():
    assert _table_rows_of_another_width("| a | b |\n| --- | --- |\n| 1 | 2 |\n") == []
    assert len(_table_rows_of_another_width("| a | b |\n| --- | --- |\n| 1 | 2 | | 3\n| x (|y|) | 2 |\n")) == 2
    assert _table_rows_of_another_width("| a | b |\n| --- | --- |\n| x (\\|y\\|) | 2 |\n") == []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert _table_rows_of_another_width(doc.read_text()) == [], doc.name


def test_readme_links_name_files_of_the_repository():
    """Every relative link of the README (a figure, docs/demo-runs.md) names a file of the repository."""
    text = (ROOT / "README.md").read_text()
    links = [link for link in re.findall(r"\]\(([^)\s#]+)\)", text) if "://" not in link]
    assert "docs/demo-runs.md" in links
    assert [link for link in links if not (ROOT / link).is_file()] == []
