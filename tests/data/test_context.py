"""Slice context: neighbours stay inside their scan, follow slice order, and repeat the edge slice."""

from __future__ import annotations

import numpy as np
import pytest

from dvt_search.data.context import context_offsets, neighbour_rows, volume_neighbours


def test_volume_neighbours_clamp_at_both_ends():
    got = volume_neighbours(4, 2)
    assert got.tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3], [1, 2, 3, 3, 3]]
    assert volume_neighbours(3, 0).tolist() == [[0], [1], [2]]
    assert volume_neighbours(1, 1).tolist() == [[0, 0, 0]]


def test_rows_follow_slice_order_not_row_order_and_never_cross_scans():
    # Two interleaved scans, rows shuffled; scan "b" has a gap in slice_index (3 missing).
    scans = np.array(["a", "b", "a", "b", "a", "b"])
    pos = np.array([2, 4, 0, 0, 1, 2])
    got = neighbour_rows(scans, pos, 1)
    # scan a: rows 0 (pos 2), 2 (pos 0), 4 (pos 1), i.e. in slice order rows 2, 4, 0
    assert got[2].tolist() == [2, 2, 4]  # first slice of a: edge repeated
    assert got[4].tolist() == [2, 4, 0]
    assert got[0].tolist() == [4, 0, 0]  # last slice of a
    # scan b in order: rows 3 (pos 0), 5 (pos 2), 1 (pos 4): the gap is skipped, not filled from a
    assert got[5].tolist() == [3, 5, 1]
    assert got[1].tolist() == [5, 1, 1]
    for r in range(len(scans)):
        assert set(scans[got[r]]) == {scans[r]}
        assert got[r, 1] == r  # the centre channel is the row itself


def test_k_zero_is_the_row_itself_and_negative_k_is_refused():
    assert neighbour_rows(["x", "x"], [1, 0], 0).tolist() == [[0], [1]]
    with pytest.raises(ValueError, match="context_slices"):
        context_offsets(-1)


def test_duplicate_slice_index_is_named():
    with pytest.raises(ValueError, match="scan 'x' lists slice_index 3 twice"):
        neighbour_rows(["x", "x", "y"], [3, 3, 3], 1)
