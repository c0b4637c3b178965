import tempfile

import pytest

from core.lab.datasets import DatasetNotFoundError, cache_dir, require_dataset, resolve_data_root


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fake home, no data or cache variables, and a private temp dir."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ATTNLAB_DATA", raising=False)
    monkeypatch.delenv("ATTNLAB_CACHE", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path / "home"


def test_data_root_order(home, tmp_path, monkeypatch):
    assert resolve_data_root() == home / ".cache" / "attnlab"
    monkeypatch.setenv("ATTNLAB_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_root(str(tmp_path / "flag")) == tmp_path / "flag"


def test_require_dataset_finds_files_and_globs(tmp_path):
    (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    (tmp_path / "fsdd" / "recordings" / "0_jackson_0.wav").write_bytes(b"")
    (tmp_path / "fsdd" / "README.md").write_text("")
    found = require_dataset(tmp_path, name="FSDD", subdir="fsdd", expected=["README.md", "recordings/*.wav"],
                            layout="recordings/{digit}_{speaker}_{index}.wav", url="https://example.org/fsdd")
    assert found == tmp_path / "fsdd"


def test_missing_dataset_message(tmp_path):
    (tmp_path / "conll2000").mkdir()
    (tmp_path / "conll2000" / "train.txt").write_text("")
    with pytest.raises(DatasetNotFoundError) as info:
        require_dataset(tmp_path, name="CoNLL-2000 chunking", subdir="conll2000",
                        expected=["train.txt", "test.txt", "extra/*.gz"],
                        layout="train.txt and test.txt: one 'word POS chunk' token per line",
                        url="https://www.clips.uantwerpen.be/conll2000/chunking/")
    error = info.value
    message = str(error)
    assert isinstance(error, FileNotFoundError)
    assert error.missing == ["test.txt", "extra/*.gz"]
    for part in ("CoNLL-2000 chunking", str(tmp_path / "conll2000"), "test.txt", "extra/*.gz",
                 "one 'word POS chunk' token per line", "https://www.clips.uantwerpen.be/conll2000/chunking/",
                 "--data-dir", "ATTNLAB_DATA"):
        assert part in message, part
    assert "train.txt," not in message  # only what is missing is listed


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="folder does not exist"):
        require_dataset(tmp_path, name="Cora", subdir="planetoid/Cora/raw", expected=["ind.cora.x"],
                        layout="ind.cora.*", url="https://github.com/kimiyoung/planetoid")


def test_cache_dir_locations(home, tmp_path, monkeypatch):
    default = cache_dir("fsdd", "mfcc")
    assert default == home / ".cache" / "attnlab" / "cache" / "fsdd" / "mfcc" and default.is_dir()

    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "mycache"))
    assert cache_dir("text") == tmp_path / "mycache" / "text"

    with pytest.raises(ValueError):
        cache_dir("..", "escape")


def test_cache_dir_never_inside_data_root(home, tmp_path, monkeypatch):
    data = home / ".cache" / "attnlab"  # the data root holds the default cache folder
    monkeypatch.setenv("ATTNLAB_DATA", str(data))
    path = cache_dir("fsdd")
    assert not path.is_relative_to(data) and path.is_dir()

    monkeypatch.delenv("ATTNLAB_DATA")
    assert not cache_dir("fsdd", data_dir=home).is_relative_to(home)

    monkeypatch.setenv("ATTNLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "data" / "cache"))
    with pytest.raises(ValueError, match="read-only"):
        cache_dir("fsdd")
    assert not (tmp_path / "data").exists()


def test_content_key_follows_path_size_time_and_config(tmp_path):
    import os

    from core.lab.datasets import content_key

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"12345")
    b.write_bytes(b"12345")
    key = content_key([a], {"n": 1})
    assert key == content_key([tmp_path / "." / "a.bin"], {"n": 1})  # the resolved path counts
    assert key != content_key([b], {"n": 1})  # same name elsewhere or same bytes: another file
    assert key != content_key([a], {"n": 2}) and key != content_key([a, b], {"n": 1})
    stat = a.stat()
    a.write_bytes(b"54321")  # same size ...
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert content_key([a], {"n": 1}) == key  # ... same time: content is not hashed, by design
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert content_key([a], {"n": 1}) != key
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        content_key([tmp_path / "missing.bin"])
