"""Progress bars for long loops (calibration, evaluation, analysis): tqdm on stderr."""
from __future__ import annotations

from typing import Iterable, Optional


def progress(iterable: Iterable, desc: str, disable: bool = False, total: Optional[int] = None):
    """Wrap ``iterable`` in a tqdm bar on stderr (``disable`` for quiet runs and tests)."""
    from tqdm.auto import tqdm

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True)
