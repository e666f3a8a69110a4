"""Slice context (2.5D): which slices of the same scan sit at offsets ``-k .. +k`` of a slice.

One rule for training, evaluation and deployment: neighbours are taken in the scan's slice order
(``slice_index`` in a manifest, the z order of a DICOM/NIfTI volume), and at a scan's ends the edge
slice is repeated (replicate padding), so every slice has ``2k + 1`` context slices and slice 0 of a scan
never borrows from another scan. Offsets count slices, not millimetres: a scan with a missing slice
(a gap in ``slice_index``) still takes its next stored slice. ``k = 0`` is the paper's single slice.

The functions return row indices; the caller reads those rows and stacks them as channels, centre slice
in the middle (channel ``k``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["context_offsets", "neighbour_rows", "volume_neighbours"]


def context_offsets(k: int) -> np.ndarray:
    """``int64[2k+1]``: the offsets ``-k .. +k`` (raises ``ValueError`` for a negative ``k``)."""
    k = int(k)
    if k < 0:
        raise ValueError(f"context_slices must be >= 0, got {k}")
    return np.arange(-k, k + 1, dtype=np.int64)


def volume_neighbours(n_slices: int, k: int) -> np.ndarray:
    """``int64[n, 2k+1]``: for each slice ``z`` of an ``n``-slice volume, the slices ``z-k .. z+k``, clamped."""
    if n_slices < 0:
        raise ValueError(f"n_slices must be >= 0, got {n_slices}")
    z = np.arange(int(n_slices), dtype=np.int64)[:, None]
    return np.clip(z + context_offsets(k)[None, :], 0, max(0, int(n_slices) - 1))


def neighbour_rows(
    scan_ids: Sequence[str] | np.ndarray, slice_index: Sequence[int] | np.ndarray, k: int
) -> np.ndarray:
    """``int64[n, 2k+1]`` row numbers of each row's context slices within the same scan.

    Args:
        scan_ids: scan of each row (rows of one scan need not be contiguous).
        slice_index: position of each row inside its scan; only the order matters.
        k: context slices on each side.

    Raises:
        ValueError: lengths differ, or a scan lists the same ``slice_index`` twice (ambiguous order).
    """
    scans = np.asarray(scan_ids).astype(str)
    pos = np.asarray(slice_index, dtype=np.int64)
    if scans.shape != pos.shape or scans.ndim != 1:
        raise ValueError(
            f"scan_ids and slice_index must be 1-D of one length, got {scans.shape} and {pos.shape}"
        )
    offsets = context_offsets(k)
    out = np.empty((len(scans), len(offsets)), dtype=np.int64)
    # Sort by (scan, slice_index): each scan becomes one contiguous run in slice order.
    order = np.lexsort((pos, scans))
    s_sorted, p_sorted = scans[order], pos[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for a, b in zip(starts, ends, strict=True):
        if b - a > 1 and np.any(p_sorted[a + 1 : b] == p_sorted[a : b - 1]):
            dup = int(p_sorted[a:b][np.flatnonzero(np.diff(p_sorted[a:b]) == 0)[0]])
            raise ValueError(
                f"scan {str(s_sorted[a])!r} lists slice_index {dup} twice: its slice order is ambiguous"
            )
        local = volume_neighbours(b - a, k)  # positions within this scan's run
        out[order[a:b]] = order[a + local]
    return out
