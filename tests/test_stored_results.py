"""What is committed under docs/results and benchmarks/results stays a record, not a store: reports, JSON and
the figures the reports show; never a checkpoint, a cache or an array dump, and nothing large."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORES = [ROOT / "docs" / "results", ROOT / "benchmarks" / "results"]
ALLOWED = {".json", ".md", ".png", ".svg", ".csv", ".txt"}
# Named for the message: what a run leaves behind that must stay in runs/ or the cache.
FORBIDDEN = {".pt", ".pth", ".ckpt", ".npy", ".npz", ".pkl", ".pickle", ".safetensors", ".bin", ".tmp"}
MAX_BYTES = 2 * 2**20


def stored_files(stores=STORES):
    """The committed files under ``stores`` (git's index; every file when not in a git checkout, or for a
    temp folder): what a run is writing there right now is not yet a record."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", *map(str, stores)], cwd=ROOT, capture_output=True,
                                check=True).stdout.decode().split("\0")
        tracked = {ROOT / name for name in listed if name}
    except (OSError, subprocess.CalledProcessError):
        tracked = None
    files = sorted(p for store in stores for p in store.rglob("*") if p.is_file())
    return files if tracked is None or not tracked else [p for p in files if p in tracked]


def problems(stores=STORES, max_bytes=MAX_BYTES) -> list[str]:
    found = []
    for path in stored_files(stores):
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        suffix = path.suffix.lower()
        if suffix in FORBIDDEN:
            found.append(f"{where}: a checkpoint/cache/array file ({suffix}) does not belong in the stored results")
        elif suffix not in ALLOWED:
            found.append(f"{where}: unexpected file type {suffix or '(none)'}; stored results hold {sorted(ALLOWED)}")
        if path.stat().st_size > max_bytes:
            found.append(f"{where}: {path.stat().st_size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
    return found


def test_stored_results_hold_only_small_records():
    assert stored_files(), "no stored results found: has docs/results moved?"
    assert problems() == []


def test_every_stored_figure_is_shown_by_a_report():
    reports = "\n".join(p.read_text() for store in STORES for p in store.rglob("*.md"))
    unshown = [str(p.relative_to(ROOT)) for p in stored_files() if p.suffix == ".png"
               and f"{p.parent.name}/{p.name}" not in reports and f"({p.name})" not in reports]
    assert unshown == []


@pytest.mark.parametrize("name, size", [("run/model.pt", 10), ("cache.npy", 10), ("features.pkl", 10),
                                        ("big.png", MAX_BYTES + 1), ("weights.pth", 10)])
def test_the_check_catches_a_checkpoint_cache_or_large_file(tmp_path, name, size):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"\0" * size)
    (tmp_path / "report.md").write_text("fine")
    found = problems([tmp_path])
    assert len(found) == 1 and Path(name).name in found[0]
