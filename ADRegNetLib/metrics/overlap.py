r"""Label overlap (Dice)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ._common import check_same_shape, to_numpy

__all__ = ["dice"]


def dice(labels_a, labels_b, label_ids: Optional[Sequence[int]] = None, include_background: bool = False) -> dict:
    """Dice overlap per label, 2|A ∩ B| / (|A| + |B|).

    Args:
        labels_a, labels_b: (Z, Y, X) integer label maps on the same grid (numpy or torch).
        label_ids: labels to score; default: every label present in either map (0 excluded
            unless ``include_background``).
        include_background: also score label 0 when ``label_ids`` is None.

    Returns:
        dict ``per_label`` {label: dice} and ``mean`` over the labels scored. A requested label
        absent from both maps scores NaN (undefined) and is left out of the mean; ``mean`` is NaN
        when no label could be scored.

    Raises:
        ValueError: shapes differ or the maps are not whole numbers.
    """
    a = to_numpy(labels_a, "labels_a", dtype=None)
    b = to_numpy(labels_b, "labels_b", dtype=None)
    check_same_shape(a, b, "labels_a and labels_b")
    for name, arr in (("labels_a", a), ("labels_b", b)):
        if arr.dtype == np.bool_:
            continue
        if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be a label map of whole numbers; got fractional values (an intensity image?)")
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    if label_ids is None:
        ids = np.union1d(np.unique(a), np.unique(b))
        if not include_background:
            ids = ids[ids != 0]
    else:
        ids = np.asarray(list(label_ids), dtype=np.int64)
    per_label = {}
    # One pass over the joint histogram instead of one mask per label.
    lo = int(min(a.min(), b.min(), ids.min() if ids.size else 0))
    hi = int(max(a.max(), b.max(), ids.max() if ids.size else 0))
    n = hi - lo + 1
    count_a = np.bincount((a - lo).ravel(), minlength=n)
    count_b = np.bincount((b - lo).ravel(), minlength=n)
    same = a == b
    count_both = np.bincount((a[same] - lo).ravel(), minlength=n)
    for label in ids:
        k = int(label) - lo
        denom = count_a[k] + count_b[k]
        per_label[int(label)] = float(2.0 * count_both[k] / denom) if denom > 0 else float("nan")
    values = np.array([v for v in per_label.values() if not np.isnan(v)])
    return {"per_label": per_label, "mean": float(values.mean()) if values.size else float("nan")}
