"""The Planetoid citation graphs (Cora, CiteSeer, PubMed) with their public split.

Read from the raw `ind.<name>.*` files that `torch_geometric.datasets.Planetoid` downloads, in the same
layout: `<data>/planetoid/<Name>/raw/ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}` (pickled scipy
matrices and numpy arrays, so reading them needs scipy). The pickles are read by our own restricted
unpickler, which builds only those types: a file carrying any other callable is refused, never run. When
the files are absent they are downloaded
from the Planetoid repository, as PyG would; offline, the error lists the files expected and where they
come from. The processed tensors are cached outside the data folder (`core.lab.datasets.cache_dir`).

Features are row-normalised (each node's bag of words sums to 1), as the GCN and GAT papers do. The public
split (Yang et al., 2016) is 20 labelled nodes per class for training, 500 for validation, 1000 for test.

Legend: N nodes, E edges, D features.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from core.lab.datasets import DatasetNotFoundError, cache_dir, content_key, require_dataset, resolve_data_root
from core.masks import check_edge_index
from core.sparse import quiet_csr_beta_warning

__all__ = ["PLANETOID_NAMES", "PLANETOID_URL", "Planetoid", "load_planetoid", "planetoid_raw_files", "raw_paths",
           "data_identity", "read_raw_pickle", "row_normalize", "canonical_name", "DatasetNotFoundError",
           "UnsafePickleError"]

logger = logging.getLogger(__name__)

#: Canonical spelling (the folder name PyG uses) by lower-case name.
PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
#: Where PyG's `Planetoid` downloads the raw files from.
PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
# Bump when the processing changes, so stale caches are rebuilt.
CACHE_VERSION = 2


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


class UnsafePickleError(ValueError):
    """A raw Planetoid file asks to build an object outside the few numpy/scipy types the files hold."""


def _allowed_globals() -> dict[tuple[str, str], object]:
    """What the raw files may construct, under the module names python 2 pickled them with and the
    names python 3 / numpy 2 / scipy >= 1.8 write (our own tests write such files)."""
    import collections

    import numpy as np
    import scipy.sparse as sp

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed = {("collections", "defaultdict"): collections.defaultdict, ("numpy", "dtype"): np.dtype,
               ("numpy", "ndarray"): np.ndarray}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct  # ndarray's own pickle format
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("scipy.sparse.csr", "scipy.sparse._csr"):
        allowed[(module, "csr_matrix")] = sp.csr_matrix
    for module in ("__builtin__", "builtins"):
        for container in (list, dict, tuple, set, int, float):
            allowed[(module, container.__name__)] = container
    return allowed


class _PlanetoidUnpickler(pickle.Unpickler):
    """Builds only plain containers, numpy arrays and scipy CSR matrices: a `__reduce__` naming any other
    callable (`os.system`, `builtins.exec`, ...) is refused before it can be called."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # python 2 pickles: numpy's byte buffers come as str
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.path}: refusing to unpickle {module}.{name}; a Planetoid raw file holds only numpy "
                f"arrays, scipy CSR matrices and plain containers (is this file from {PLANETOID_URL}?)"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickleError(f"{self.path}: refusing a persistent id in a Planetoid raw file")


def read_raw_pickle(path: str | Path) -> object:
    """Unpickle one `ind.<name>.<x|tx|allx|y|ty|ally|graph>` file without running code from it.

    Raises:
        UnsafePickleError: the file names a type other than the numpy/scipy ones the raw files hold.
        ValueError: the file is not a readable pickle.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _PlanetoidUnpickler(f, path).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # truncated download, another format
        raise ValueError(f"{path}: not a readable Planetoid pickle ({type(error).__name__}: {error}); the raw "
                         f"files come from {PLANETOID_URL}") from error


def _as_tensor(value: object, path: Path) -> Tensor:
    import numpy as np
    import scipy.sparse as sp

    if sp.issparse(value):
        value = value.toarray()
    if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype == object:
        raise ValueError(f"{path}: expected a 2-d numeric array or CSR matrix, got {type(value).__name__}")
    return torch.from_numpy(np.asarray(value, dtype=np.float32))


def _read_raw(name: str, raw_dir: Path) -> dict[str, Tensor]:
    """The public split as `torch_geometric.io.read_planetoid_data` builds it, from our own unpickler.

    Nodes `0 .. len(y)-1` train, the next 500 validate, the ids in `test.index` test; test rows arrive in
    sorted order and are put back at their ids; CiteSeer's isolated test ids get zero rows.
    """
    from torch_geometric.io import read_txt_array
    from torch_geometric.io.planetoid import edge_index_from_dict
    from torch_geometric.utils import index_to_mask

    prefix = canonical_name(name).lower()
    files = {suffix: raw_dir / f"ind.{prefix}.{suffix}" for suffix in RAW_SUFFIXES}
    arrays = {key: _as_tensor(read_raw_pickle(files[key]), files[key]) for key in ("x", "tx", "allx", "y", "ty", "ally")}
    graph = read_raw_pickle(files["graph"])
    if not isinstance(graph, dict) or not all(isinstance(v, list) for v in graph.values()):
        raise ValueError(f"{files['graph']}: expected a dict of adjacency lists, got {type(graph).__name__}")
    try:
        test_index = read_txt_array(str(files["test.index"]), dtype=torch.long)  # (num_test,)
    except Exception as error:
        raise ValueError(f"{files['test.index']}: expected one node id per line ({error})") from error
    tx, ty, allx, ally = arrays["tx"], arrays["ty"], arrays["allx"], arrays["ally"]
    sorted_test = test_index.sort().values
    if prefix == "citeseer":  # isolated test nodes have ids but no rows: zero rows fill the gaps
        span = int(test_index.max() - test_index.min()) + 1
        tx_ext, ty_ext = tx.new_zeros(span, tx.shape[1]), ty.new_zeros(span, ty.shape[1])
        tx_ext[sorted_test - test_index.min()] = tx
        ty_ext[sorted_test - test_index.min()] = ty
        tx, ty = tx_ext, ty_ext
    x = torch.cat([allx, tx])  # (N, D)
    x[test_index] = x[sorted_test]
    y = torch.cat([ally, ty]).max(dim=1).indices  # one-hot rows -> class ids, (N,)
    y[test_index] = y[sorted_test]
    N = y.shape[0]
    num_train = arrays["y"].shape[0]
    if x.shape[0] != N:
        raise ValueError(f"Planetoid {name} in {raw_dir}: features, labels and graph disagree on the node count")
    return {
        "x": row_normalize(x),
        "edge_index": check_edge_index(edge_index_from_dict(graph, num_nodes=N), N).long(),
        "y": y.long(),
        "train_mask": index_to_mask(torch.arange(num_train), size=N),
        "val_mask": index_to_mask(torch.arange(num_train, num_train + 500), size=N),
        "test_mask": index_to_mask(test_index, size=N),
    }


def raw_paths(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The raw files of one graph under the data root, in a fixed order."""
    canonical = canonical_name(name)
    raw_dir = resolve_data_root(data_dir) / "planetoid" / canonical / "raw"
    return [raw_dir / file for file in planetoid_raw_files(name)]


def data_identity(name: str, data_dir: str | Path | None = None) -> dict[str, str]:
    """What a run on this graph was trained on, for resume checks and run configs.

    `{"dataset": "Cora", "files": <content_key of the raw files>}`: the key changes when any raw file is
    replaced, relabelled or read from another folder, so a stored result is reused only for the same data.

    Raises:
        FileNotFoundError: a raw file is missing.
    """
    return {"dataset": canonical_name(name), "files": content_key(raw_paths(name, data_dir), {"version": CACHE_VERSION})}


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
        UnsafePickleError: a raw file asks to build anything but numpy arrays, scipy CSR matrices and plain
            containers (nothing from it is run); a `ValueError`.
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

    # Keyed by each raw file's resolved path, size and time: replaced files or another folder are re-read.
    key = data_identity(name, root)["files"]
    cache_file = cache_dir("planetoid", canonical, data_dir=data_dir) / f"processed-{key}.pt" if use_cache else None
    tensors = None
    if cache_file is not None and cache_file.exists():
        try:
            cached = torch.load(cache_file, weights_only=True)
            if cached.get("key") == key:
                tensors = cached["tensors"]
        except Exception as error:  # a corrupt cache is rebuilt, never trusted
            logger.warning("ignoring unreadable cache %s: %s", cache_file, error)
    if tensors is None:
        tensors = _read_raw(name, raw_dir)
        if cache_file is not None:
            from core.lab.harness import save_checkpoint

            save_checkpoint(cache_file, {"key": key, "tensors": tensors})
    return Planetoid(canonical, **tensors)

