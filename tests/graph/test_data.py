"""graph/data.py: Planetoid raw files -> tensors (PyG's split, our restricted unpickler), the cache outside the
data folder keyed by content, clear errors."""

import os
import pickle
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from core.lab.datasets import DatasetNotFoundError, resolve_data_root
from graph.data import (PLANETOID_URL, UnsafePickleError, data_identity, load_planetoid, planetoid_raw_files,
                        read_raw_pickle, row_normalize)

SHARED_CORA = resolve_data_root() / "planetoid" / "Cora" / "raw"


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.mktemp("cache")  # beside, never inside, each test's data root
    monkeypatch.setenv("ATTNLAB_CACHE", str(folder))
    return folder


def test_cora_public_split_from_the_shared_raw_files(cache):
    root = resolve_data_root()  # CI: $ATTNLAB_DATA=../shared/data, which holds planetoid/Cora/raw
    data = load_planetoid("cora", root, download=False)
    assert (data.num_nodes, data.num_features, data.num_classes) == (2708, 1433, 7)
    assert data.edge_index.shape == (2, 10556)
    assert [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)] == [140, 500, 1000]
    assert not (data.train_mask & data.test_mask).any() and not (data.val_mask & data.test_mask).any()
    torch.testing.assert_close(data.x.sum(1), torch.ones(2708))  # row-normalised, no empty rows on Cora
    assert (data.edge_index[0] != data.edge_index[1]).all()
    assert torch.bincount(data.y[data.train_mask]).tolist() == [20] * 7
    # The processed form is cached outside the data root and read back identically.
    cached = list(cache.rglob("processed-*.pt"))
    assert len(cached) == 1 and not cached[0].resolve().is_relative_to(root.resolve())
    again = load_planetoid("Cora", root, download=False)
    torch.testing.assert_close(again.x, data.x)
    assert torch.equal(again.edge_index, data.edge_index)


def _write_fake_planetoid(folder, name, *, num_train=6, num_other=600, num_test=20, features=10, classes=3):
    """A tiny graph in the pickled raw layout, CiteSeer-style gaps in the test index included."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    n_all = num_other
    test_index = np.arange(n_all, n_all + num_test + 2)
    test_index = np.delete(test_index, [3, 11])  # two isolated ids, as CiteSeer has
    def feats(n):
        return sp.csr_matrix((rng.random((n, features)) < 0.3).astype(np.float32))
    def onehot(n):
        return np.eye(classes)[rng.integers(0, classes, n)]
    graph = defaultdict(list)
    for i in range(n_all + num_test + 2):
        graph[i] = [int(j) for j in rng.integers(0, n_all + num_test + 2, 3)]
    items = {"x": feats(num_train), "tx": feats(num_test), "allx": feats(n_all), "y": onehot(num_train),
             "ty": onehot(num_test), "ally": onehot(n_all), "graph": graph}
    for key, value in items.items():
        with open(folder / f"ind.{name}.{key}", "wb") as f:
            pickle.dump(value, f)
    np.random.default_rng(1).shuffle(test_index)
    (folder / f"ind.{name}.test.index").write_text("\n".join(map(str, test_index)) + "\n")


def test_any_planetoid_name_whose_files_are_present_loads(tmp_path):
    _write_fake_planetoid(tmp_path / "data" / "planetoid" / "CiteSeer" / "raw", "citeseer")
    data = load_planetoid("citeseer", tmp_path / "data", download=False)
    assert data.name == "CiteSeer" and data.num_nodes == 622 and data.num_features == 10
    assert int(data.train_mask.sum()) == 6 and int(data.val_mask.sum()) == 500 and int(data.test_mask.sum()) == 20
    sums = data.x.sum(1)
    assert torch.allclose(sums[sums > 0], torch.ones(int((sums > 0).sum())))
    assert int(data.edge_index.max()) < data.num_nodes


def test_missing_raw_files_list_what_is_expected_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_planetoid("pubmed", tmp_path, download=False)
    message = str(info.value)
    for file in planetoid_raw_files("pubmed"):
        assert file in message
    assert PLANETOID_URL in message and "planetoid/PubMed/raw" in message


def test_one_missing_file_is_named(tmp_path):
    raw = tmp_path / "planetoid" / "CiteSeer" / "raw"
    _write_fake_planetoid(raw, "citeseer")
    (raw / "ind.citeseer.graph").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing ind\.citeseer\.graph"):
        load_planetoid("citeseer", tmp_path, download=False)


def test_unreadable_raw_files_are_a_clear_error(tmp_path):
    raw = tmp_path / "planetoid" / "Cora" / "raw"
    raw.mkdir(parents=True)
    for file in planetoid_raw_files("cora"):
        (raw / file).write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"ind\.cora\.x: not a readable Planetoid pickle"):
        load_planetoid("cora", tmp_path, download=False)


def test_unknown_name():
    with pytest.raises(ValueError, match="CiteSeer"):
        load_planetoid("reddit", download=False)


def test_row_normalize_keeps_empty_rows_zero():
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    assert row_normalize(x).tolist() == [[0.25, 0.75], [0.0, 0.0]]


def test_cora_equals_pyg_planetoid(tmp_path):
    """Our reader (own unpickler, own split assembly) gives PyG's Planetoid('Cora') exactly, up to the
    row normalisation we add."""
    from torch_geometric.datasets import Planetoid as PyGPlanetoid

    shutil.copytree(SHARED_CORA, tmp_path / "Cora" / "raw")  # PyG writes processed/ beside raw/
    theirs = PyGPlanetoid(str(tmp_path), "Cora")[0]
    ours = load_planetoid("cora", download=False, use_cache=False)
    assert torch.equal(ours.x, row_normalize(theirs.x))
    assert torch.equal(ours.y, theirs.y) and torch.equal(ours.edge_index, theirs.edge_index)
    for mask in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(ours, mask), getattr(theirs, mask)), mask


class _Payload:
    """Unpickling this creates the marker file: what a hostile `ind.cora.graph` could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    root = tmp_path / "data"
    raw = root / "planetoid" / "Cora" / "raw"
    shutil.copytree(SHARED_CORA, raw)
    marker = tmp_path / "payload-ran"
    (raw / "ind.cora.graph").write_bytes(pickle.dumps({0: [1], 1: [0], "hook": _Payload(marker)}, protocol=2))
    pickle.loads(pickle.dumps(_Payload(tmp_path / "plain-pickle-ran")))  # plain pickle would run it ...
    assert (tmp_path / "plain-pickle-ran").exists()
    with pytest.raises(UnsafePickleError, match=r"ind\.cora\.graph.*refusing to unpickle io\.open"):
        load_planetoid("cora", root, download=False)  # ... our reader refuses it
    assert not marker.exists()


@pytest.mark.parametrize("call", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen"])
def test_only_array_types_may_be_named(tmp_path, call):
    module, name = call.split(".")
    path = tmp_path / "ind.cora.x"
    # protocol 2: GLOBAL module.name, the string "true", a 1-tuple, REDUCE -> module.name("true")
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x04\x00\x00\x00true\x85R.")
    with pytest.raises(UnsafePickleError, match=call.replace(".", r"\.")):
        read_raw_pickle(path)


def test_the_shared_raw_files_hold_only_allowed_types():
    for file in planetoid_raw_files("cora"):
        if not file.endswith("test.index"):
            assert read_raw_pickle(SHARED_CORA / file) is not None


def _bump(path: Path, seconds: int = 10) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))


def test_a_file_replaced_under_the_same_name_is_read_again(tmp_path):
    raw = tmp_path / "planetoid" / "CiteSeer" / "raw"
    _write_fake_planetoid(raw, "citeseer")
    before = load_planetoid("citeseer", tmp_path, download=False)
    identity = data_identity("citeseer", tmp_path)
    # Relabel: the same file name, new content (a reader keyed by name or by size alone would miss it).
    ally = pickle.loads((raw / "ind.citeseer.ally").read_bytes())
    (raw / "ind.citeseer.ally").write_bytes(pickle.dumps(ally[:, ::-1].copy()))
    _bump(raw / "ind.citeseer.ally")
    after = load_planetoid("citeseer", tmp_path, download=False)
    assert data_identity("citeseer", tmp_path) != identity
    n = ally.shape[0]
    assert torch.equal(after.y[:n], 2 - before.y[:n])  # three classes, reversed
    assert torch.equal(after.x, before.x)


def test_identity_names_the_folder_and_every_file(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_fake_planetoid(a / "planetoid" / "CiteSeer" / "raw", "citeseer")
    shutil.copytree(a, b)
    assert data_identity("citeseer", a)["dataset"] == "CiteSeer"
    assert data_identity("citeseer", a) != data_identity("citeseer", b)  # another tree: not the same run
    assert data_identity("citeseer", a) == data_identity("CITESEER", a)
    (a / "planetoid" / "CiteSeer" / "raw" / "ind.citeseer.test.index").unlink()
    with pytest.raises(FileNotFoundError, match="ind.citeseer.test.index"):
        data_identity("citeseer", a)
