"""Tiling for the inference commands: windows that own each base once, batches by length, the window options."""

from __future__ import annotations

import numpy as np
import pytest

from hnet_dna.inference.tiling import length_batches, tiles


@pytest.mark.parametrize("length,window,stride,trail", [(10, None, None, 0), (10, 16, 8, 0), (100, 16, 8, 0),
                                                        (101, 16, 5, 0), (17, 16, 15, 0), (100, 16, 8, 4),
                                                        (101, 16, 5, 10), (100, 16, 8, 7), (17, 16, 15, 1)])
def test_tiles_take_every_base_once_with_its_left_and_right_context(length, window, stride, trail):
    """Contiguous ownership, each base once; past the first window a base has at least window -
    stride - trail bases before it in its window, and (but in the last window) trail after it."""
    cover = np.zeros(length, dtype=int)
    prev_end = 0
    for t in tiles(length, window, stride, trail=trail):
        assert t.start <= t.own_start < t.own_end <= t.end <= length
        assert t.own_start == prev_end  # contiguous ownership, in order
        prev_end = t.own_end
        cover[t.own_start:t.own_end] += 1
        if t.start > 0:
            assert t.own_start - t.start >= window - stride - trail
        if t.end < length:
            assert t.end - t.own_end == trail  # the window's last trail bases are right context only
    assert (cover == 1).all()


def test_length_batches_group_similar_lengths_within_limits():
    lengths = [5, 100, 7, 98, 6, 99, 50]
    batches = length_batches(lengths, max_bases=250, max_batch=2)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert all(len(b) <= 2 and max(lengths[i] for i in b) * len(b) <= 250 for b in batches)
    assert batches[0] == [1, 5]  # longest first


def test_window_options_are_checked_once_for_every_command():
    from hnet_dna.config import ConfigError
    from hnet_dna.inference.tiling import check_windows

    check_windows(None, None, 1)
    check_windows(256, 255, 8)
    for window, stride, batch, message in ((256, 256, 8, "below --window"), (256, 0, 8, "--stride must be"),
                                           (1, None, 8, "--window must be >= 2"), (None, 5, 8, "needs --window"),
                                           (256, None, 0, "--batch-size")):
        with pytest.raises(ConfigError, match=message):
            check_windows(window, stride, batch)


@pytest.mark.parametrize("command", ["embed", "score", "boundaries", "ism"])
def test_help_says_what_memory_a_window_needs(command):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", f"hnet_dna.{command}", "--help"], capture_output=True, text=True)
    text = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "MB per 1,000 bases of each window" in text and "left context" in text
