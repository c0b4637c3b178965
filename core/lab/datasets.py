"""Where attnlab finds datasets, and where it keeps processed caches.

The data root is chosen once, in this order: an explicit ``--data-dir``, then ``$ATTNLAB_DATA``, then
``~/.cache/attnlab``. Each dataset lives in a sub-folder of that root (``fsdd/``, ``conll2000/``, ...).
Data folders are treated as read-only: processed forms (feature tensors, vocabularies) go to
:func:`cache_dir`, which never points inside the data root, under names from :func:`content_key`, so a
file replaced under the same name, or another tree with the same names, is read again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

DATA_ENV = "ATTNLAB_DATA"
CACHE_ENV = "ATTNLAB_CACHE"
DEFAULT_ROOT = Path("~/.cache/attnlab")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where attnlab looked for it.

    The message says which dataset, where it was looked for, which files are missing, the layout
    expected, where to download it and how to point attnlab at it.
    """

    def __init__(self, message: str, *, name: str, path: Path, missing: list[str], url: str):
        super().__init__(message)
        self.name = name
        self.path = path
        self.missing = missing
        self.url = url


def resolve_data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder that holds the datasets.

    Args:
        data_dir (str | PathLike, optional): the ``--data-dir`` value; wins when given.
            Otherwise ``$ATTNLAB_DATA``, otherwise ``~/.cache/attnlab``. (default: ``None``)
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser().absolute()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser().absolute()
    return DEFAULT_ROOT.expanduser().absolute()


def _present(folder: Path, pattern: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        return any(folder.glob(pattern))
    return (folder / pattern).exists()


def require_dataset(root: Path, *, name: str, subdir: str, expected: list[str], layout: str, url: str) -> Path:
    """Check that a dataset is in place and return its folder, ``root / subdir``.

    Args:
        root (Path): the data root, usually from :func:`resolve_data_root`.
        name (str): the dataset's human name, e.g. ``"Free Spoken Digit Dataset"``.
        subdir (str): its folder under the root, e.g. ``"fsdd"``.
        expected (list[str]): files, folders or glob patterns (relative to ``subdir``) that must exist,
            e.g. ``["recordings/*.wav"]``.
        layout (str): a human description of the layout, shown when the data is missing.
        url (str): the official download address.

    Raises:
        DatasetNotFoundError: when ``root / subdir`` lacks any of ``expected``.
    """
    folder = Path(root) / subdir
    missing = [pattern for pattern in expected if not _present(folder, pattern)]
    if not missing:
        return folder
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    what = "the folder does not exist" if not folder.is_dir() else f"missing {shown}"
    message = (
        f"{name} not found.\n"
        f"  searched: {folder} ({what})\n"
        f"  expected layout under {folder}:\n    {layout}\n"
        f"  download: {url}\n"
        f"  then point attnlab at the folder that contains '{subdir}/': pass --data-dir DIR or set "
        f"{DATA_ENV}=DIR (without either, attnlab looks in {DEFAULT_ROOT})."
    )
    raise DatasetNotFoundError(message, name=name, path=folder, missing=missing, url=url)


def cache_dir(*parts: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Return (and create) a folder for processed caches: ``$ATTNLAB_CACHE/<parts>``, by default
    ``~/.cache/attnlab/cache/<parts>``.

    The folder never lies inside the data root named by ``$ATTNLAB_DATA`` (nor inside ``data_dir``):
    if the default would, a folder under the system temp dir is used instead; if ``$ATTNLAB_CACHE``
    would, that is an error.

    Args:
        *parts (str): sub-folders, e.g. ``cache_dir("fsdd", "mfcc")``.
        data_dir (str | PathLike, optional): the ``--data-dir`` value, if any, so that it is kept
            read-only too. (default: ``None``)

    Raises:
        ValueError: when ``$ATTNLAB_CACHE`` lies inside a data root, or a part escapes the cache.
    """
    if any(Path(p).is_absolute() or ".." in Path(p).parts for p in parts):
        raise ValueError(f"cache_dir parts must be relative names, got {parts}")
    read_only = [Path(p).expanduser().resolve() for p in (os.environ.get(DATA_ENV), data_dir) if p]
    if os.environ.get(CACHE_ENV):
        candidates = [Path(os.environ[CACHE_ENV])]
    else:
        candidates = [DEFAULT_ROOT / "cache", Path(tempfile.gettempdir()) / "attnlab-cache"]
    for base in candidates:
        path = base.expanduser().absolute().joinpath(*parts)
        if not any(path.resolve().is_relative_to(root) for root in read_only):
            path.mkdir(parents=True, exist_ok=True)
            return path
    raise ValueError(
        f"the cache folder {candidates[0]} lies inside the read-only data root "
        f"({', '.join(map(str, read_only))}); set {CACHE_ENV} to a folder outside it"
    )


def file_stamp(path: str | os.PathLike, _folders: dict | None = None) -> str:
    """``"<resolved path>|<size>|<mtime_ns>"``: what a cache remembers of one input file.

    Content is not hashed (reading 3000 wavs to check a cache would cost what the cache saves); a file
    swapped under the same name changes its size or its modification time, and the same name in another
    folder (or reached through a linked folder) resolves to its own path. Size and time are the target's
    when ``path`` is a link.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
    """
    path = Path(path).expanduser()
    folders = {} if _folders is None else _folders  # resolving once per folder: 60k images share a few
    if path.parent not in folders:
        folders[path.parent] = path.parent.resolve()
    stat = os.stat(path)
    return f"{folders[path.parent] / path.name}|{stat.st_size}|{stat.st_mtime_ns}"


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, os.PathLike):
        return str(Path(value).expanduser().resolve())
    return repr(value)


def content_key(files: Iterable[str | os.PathLike], config: object = None) -> str:
    """A short digest of every input file (:func:`file_stamp`: resolved path, size, modification time)
    and of the config that shaped the processed form: the one cache key of attnlab's datasets.

    Args:
        files (iterable of paths): the input files, in a fixed order (the order is part of the key).
        config (object, optional): anything JSON can hold (dataclasses and paths are converted); e.g.
            ``{"version": 2, "n_mels": 40}``. Keys are sorted, so dict order does not matter. (default: ``None``)

    Returns:
        16 hex digits.
    """
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=_plain).encode())
    folders: dict = {}
    for path in files:
        digest.update(b"\n" + file_stamp(path, folders).encode())
    return digest.hexdigest()[:16]
