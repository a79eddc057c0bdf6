"""write_atomically: a write cut short leaves the old contents whole."""

from __future__ import annotations

import pytest

from wmrobot.files import write_atomically


@pytest.mark.parametrize("sync", [True, False])
def test_a_write_cut_short_leaves_the_old_contents(tmp_path, sync):
    path = tmp_path / "f.bin"
    write_atomically(path, lambda f: f.write(b"old"), sync=sync)

    def dies_half_way(f):
        f.write(b"ne")
        raise OSError("killed")

    with pytest.raises(OSError, match="killed"):
        write_atomically(path, dies_half_way, sync=sync)
    assert path.read_bytes() == b"old"
    assert (tmp_path / "f.bin.partial").read_bytes() == b"ne"  # what opening a store removes
    write_atomically(path, lambda f: f.write(b"new"), sync=sync)
    assert path.read_bytes() == b"new"
    assert not (tmp_path / "f.bin.partial").exists()


def test_human_bytes_picks_the_unit_and_the_digits():
    from wmrobot.files import human_bytes

    assert human_bytes(512) == "512 B"
    assert human_bytes(3.2 * 1024) == "3.2 KiB"
    assert human_bytes(71 * 2**30) == "71 GiB"
    assert human_bytes(2**60) == "1024 PiB"  # no unit past PiB
