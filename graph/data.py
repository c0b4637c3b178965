"""The Planetoid citation graphs (Cora, CiteSeer, PubMed) with their public split.

Read from the raw `ind.<name>.*` files that `torch_geometric.datasets.Planetoid` downloads, in the same
layout: `<data>/planetoid/<Name>/raw/ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}` (pickled scipy
matrices and numpy arrays, so reading them needs scipy). When the files are absent they are downloaded
from the Planetoid repository, as PyG would; offline, the error lists the files expected and where they
come from. The processed tensors are cached outside the data folder (`core.lab.datasets.cache_dir`).

Features are row-normalised (each node's bag of words sums to 1), as the GCN and GAT papers do. The public
split (Yang et al., 2016) is 20 labelled nodes per class for training, 500 for validation, 1000 for test.

Legend: N nodes, E edges, D features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from core.lab.datasets import DatasetNotFoundError, cache_dir, require_dataset, resolve_data_root
from core.masks import check_edge_index
from core.sparse import quiet_csr_beta_warning

__all__ = ["PLANETOID_NAMES", "PLANETOID_URL", "Planetoid", "load_planetoid", "planetoid_raw_files",
           "row_normalize", "canonical_name", "DatasetNotFoundError"]

logger = logging.getLogger(__name__)

#: Canonical spelling (the folder name PyG uses) by lower-case name.
PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
#: Where PyG's `Planetoid` downloads the raw files from.
PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
# Bump when the processing changes, so stale caches are rebuilt.
CACHE_VERSION = 1


@dataclass
class Planetoid:
    """One Planetoid graph with its public split.

    Attributes:
        name (str): canonical name, e.g. `"Cora"`.
        x (Tensor): `(N, D)` float features, rows normalised to sum 1 (all-zero rows stay zero).
        edge_index (LongTensor): `(2, E)` both directions of every citation, no self-loops.
        y (LongTensor): `(N,)` class of each node.
        train_mask, val_mask, test_mask (BoolTensor): `(N,)` the public split.
    """

    name: str
    x: Tensor
    edge_index: Tensor
    y: Tensor
    train_mask: Tensor
    val_mask: Tensor
    test_mask: Tensor

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1

    def sparse_x(self) -> Tensor:
        """The features as a sparse CSR tensor `(N, D)` (bag-of-words: ~1% stored on Cora)."""
        with quiet_csr_beta_warning():
            return self.x.to_sparse_csr()

    def to(self, device: torch.device | str) -> Planetoid:
        return Planetoid(self.name, *(getattr(self, f).to(device) for f in
                                      ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask")))

    def __repr__(self) -> str:
        return (f"Planetoid({self.name}: N={self.num_nodes}, E={self.edge_index.shape[1]}, D={self.num_features}, "
                f"classes={self.num_classes}, split={int(self.train_mask.sum())}/{int(self.val_mask.sum())}/"
                f"{int(self.test_mask.sum())})")


def canonical_name(name: str) -> str:
    """`"cora"` -> `"Cora"`; raises for names that are not Planetoid graphs."""
    try:
        return PLANETOID_NAMES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown Planetoid dataset {name!r}; choose one of {sorted(PLANETOID_NAMES.values())}") from None


def planetoid_raw_files(name: str) -> list[str]:
    """The raw file names of one graph, e.g. `ind.cora.x`."""
    return [f"ind.{canonical_name(name).lower()}.{suffix}" for suffix in RAW_SUFFIXES]


def row_normalize(x: Tensor) -> Tensor:
    """Divide each row by its sum (rows summing to 0 stay 0), as the GCN/GAT preprocessing does."""
    total = x.sum(dim=1, keepdim=True)
    return x / torch.where(total == 0, torch.ones_like(total), total)


def _download(name: str, raw_dir: Path) -> None:
    """Fetch the raw files as `torch_geometric.datasets.Planetoid` does; failures are left to the
    caller's missing-files error."""
    from torch_geometric.data import download_url

    for file in planetoid_raw_files(name):
        if not (raw_dir / file).exists():
            download_url(f"{PLANETOID_URL}/{file}", str(raw_dir), log=True)


def _require_raw(name: str, root: Path) -> Path:
    canonical = canonical_name(name)
    files = planetoid_raw_files(name)
    folder = require_dataset(
        root, name=f"Planetoid {canonical}", subdir=f"planetoid/{canonical}/raw", expected=files,
        layout=f"{', '.join(files)} (pickled scipy/numpy files: the raw layout torch_geometric.datasets."
               f"Planetoid downloads)",
        url=f"{PLANETOID_URL}/ind.{canonical.lower()}.<x|tx|allx|y|ty|ally|graph|test.index>",
    )
    return folder


def _read_raw(name: str, raw_dir: Path) -> dict[str, Tensor]:
    from torch_geometric.io import read_planetoid_data

    try:
        data = read_planetoid_data(str(raw_dir), canonical_name(name).lower())
    except Exception as error:  # pickles from another layout or a truncated download
        raise ValueError(
            f"could not read the Planetoid files in {raw_dir} ({type(error).__name__}: {error}); expected "
            f"{', '.join(planetoid_raw_files(name))} as downloaded from {PLANETOID_URL}"
        ) from error
    N = data.num_nodes
    processed = {
        "x": row_normalize(data.x.float()),
        "edge_index": check_edge_index(data.edge_index, N).long(),
        "y": data.y.long(),
        "train_mask": data.train_mask,
        "val_mask": data.val_mask,
        "test_mask": data.test_mask,
    }
    if processed["x"].shape[0] != N or processed["y"].shape[0] != N:
        raise ValueError(f"Planetoid {name} in {raw_dir}: features, labels and graph disagree on the node count")
    return processed


def load_planetoid(
    name: str = "cora", data_dir: str | Path | None = None, *, download: bool = True, use_cache: bool = True
) -> Planetoid:
    """Load a Planetoid graph with the public split.

    Args:
        name (str): `"cora"`, `"citeseer"` or `"pubmed"` (any case). (default: "cora")
        data_dir (str | Path, optional): the data root (`core.lab.datasets.resolve_data_root`): the files are
            read from `<root>/planetoid/<Name>/raw/`. (default: `$ATTNLAB_DATA`, else ~/.cache/attnlab)
        download (bool, optional): fetch missing raw files from the Planetoid repository. (default: True)
        use_cache (bool, optional): read/write the processed tensors in `core.lab.datasets.cache_dir`.
            (default: True)

    Raises:
        core.lab.datasets.DatasetNotFoundError: the raw files are missing (and could not be downloaded); the
            message lists the files expected and the download address.
        ValueError: the files exist but cannot be read as Planetoid data.
    """
    canonical = canonical_name(name)
    root = resolve_data_root(data_dir)
    raw_dir = root / "planetoid" / canonical / "raw"
    if download and not all((raw_dir / f).exists() for f in planetoid_raw_files(name)):
        try:
            _download(name, raw_dir)
        except Exception as error:  # offline or read-only: the check below says what is missing
            logger.warning("could not download Planetoid %s: %s", canonical, error)
    raw_dir = _require_raw(name, root)

    # The cache is keyed by the raw files' sizes and times, so replaced files are re-read.
    stamp = [CACHE_VERSION] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(raw_dir.iterdir())
                               if f.name in planetoid_raw_files(name)]
    cache_file = cache_dir("planetoid", canonical, data_dir=data_dir) / "processed.pt" if use_cache else None
    tensors = None
    if cache_file is not None and cache_file.exists():
        try:
            cached = torch.load(cache_file, weights_only=True)
            if cached.get("stamp") == repr(stamp):
                tensors = cached["tensors"]
        except Exception as error:  # a corrupt cache is rebuilt, never trusted
            logger.warning("ignoring unreadable cache %s: %s", cache_file, error)
    if tensors is None:
        tensors = _read_raw(name, raw_dir)
        if cache_file is not None:
            from core.lab.harness import save_checkpoint

            save_checkpoint(cache_file, {"stamp": repr(stamp), "tensors": tensors})
    return Planetoid(canonical, **tensors)

