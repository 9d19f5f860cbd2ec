"""Atomic outputs: complete or absent whatever kills the job, with the usual permissions."""

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from lmbrain.io import atomic_dir, atomic_path, remove_stale_builds


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_a_file_replaced_inside_the_block_keeps_the_umask_permissions(tmp_path):
    """safetensors writes its own file (mode 0600) over the temporary path: model.safetensors was
    unreadable to lab mates. The result gets 0666 less the umask however it was written."""
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o002)
    try:
        with atomic_path(tmp_path / "m.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.unlink()
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
    finally:
        os.umask(old)
    for name in ("m.safetensors", "x.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o664, name


def test_atomic_dir_appears_only_when_complete(tmp_path):
    out = tmp_path / "features" / "story"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "k1.h5").write_text("half")
            raise RuntimeError("boom")
    assert not out.exists() and os.listdir(out.parent) == []
    with atomic_dir(out) as tmp:
        (tmp / "k1.h5").write_text("done")
        assert not out.exists()
    assert (out / "k1.h5").read_text() == "done"
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()
    with atomic_dir(out) as tmp:  # a rerun replaces the old result as a whole
        (tmp / "k2.h5").write_text("new")
    assert sorted(os.listdir(out)) == ["k2.h5"] and sorted(os.listdir(out.parent)) == ["story"]
    with pytest.raises(FileExistsError):
        with atomic_dir(out, replace=False):
            pass
    assert (out / "k2.h5").exists()


def test_a_killed_block_leaves_no_result_and_its_leftovers_are_removed(tmp_path):
    """kill -9 in the middle of writing: no output folder (so Snakemake reruns the job), and the next
    attempt at the same output removes the dead process's temporary folder (and nothing else)."""
    out = tmp_path / "encoding" / "hidden-L1"
    code = textwrap.dedent(f"""
        import os, signal
        from lmbrain.io import atomic_dir
        with atomic_dir({str(out)!r}) as tmp:
            (tmp / "k1").mkdir()
            (tmp / "k1" / "voxels.tsv").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".hidden-L1.building-")
    (out.parent / ".hidden-L1.old").mkdir()  # not lmbrain's naming: untouched
    with atomic_dir(out) as tmp:
        (tmp / "k1").mkdir()
    assert sorted(p.name for p in out.parent.iterdir()) == [".hidden-L1.old", "hidden-L1"]
    assert remove_stale_builds(out) == []
