from pathlib import Path

import pytest
from PIL import Image


def write_image_folder(root: Path, classes=("cat", "dog"), per_class=4, size=(8, 8), mode="RGB",
                       splits=("train", "test")) -> Path:
    """A tiny ImageFolder tree of random-ish PNGs; pixel values depend on class and index."""
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                value = (40 * c + 13 * i) % 256
                color = value if mode == "L" else (value, 255 - value, (3 * value) % 256)
                Image.new(mode, size, color).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def make_image_folder():
    """``write_image_folder`` as a fixture, so test modules need not import conftest."""
    return write_image_folder


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test writes its decoded-image cache into its own temp folder."""
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
