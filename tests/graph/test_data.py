"""graph/data.py: Planetoid raw files -> tensors, the cache outside the data folder, clear errors."""

import pickle
from collections import defaultdict

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from core.lab.datasets import DatasetNotFoundError, resolve_data_root
from graph.data import PLANETOID_URL, load_planetoid, planetoid_raw_files, row_normalize


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
    cached = list(cache.rglob("processed.pt"))
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
    with pytest.raises(ValueError, match="could not read the Planetoid files"):
        load_planetoid("cora", tmp_path, download=False)


def test_unknown_name():
    with pytest.raises(ValueError, match="CiteSeer"):
        load_planetoid("reddit", download=False)


def test_row_normalize_keeps_empty_rows_zero():
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    assert row_normalize(x).tolist() == [[0.25, 0.75], [0.0, 0.0]]
