"""Test-wide setup: find the real datasets the way CI does.

CI sets ATTNLAB_DATA=../shared/data; a developer checkout beside ../shared gets the same default here,
so `python -m pytest` behaves the same in both places. An explicit ATTNLAB_DATA always wins.
"""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "ATTNLAB_DATA" not in os.environ and _SHARED.is_dir():
    os.environ["ATTNLAB_DATA"] = str(_SHARED)
