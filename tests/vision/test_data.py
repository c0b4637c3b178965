import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.lab.datasets import DatasetNotFoundError, resolve_data_root
from vision import data as vision_data
from vision.data import (
    ImageBatches, ImageDataError, ImageSplit, channel_stats, cutout, decode_images, list_image_folder,
    load_image_folder, random_crop_flip,
)


def test_image_folder_becomes_uint8_tensors(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "data", classes=("b", "a"), per_class=3, size=(8, 6))
    data = load_image_folder(root)
    assert data.train.classes == ["a", "b"]  # sorted, as torchvision's ImageFolder
    assert data.train.images.shape == (6, 3, 6, 8)  # (N, C, H, W); PIL sizes are (W, H)
    assert data.train.images.dtype == torch.uint8
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    pixel = Image.open(root / "train" / "a" / "0001.png").getpixel((0, 0))
    assert data.train.images[1, :, 0, 0].tolist() == list(pixel)


def test_decoded_images_are_cached_outside_the_data_folder(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "data")
    first = load_image_folder(root)
    cached = list((tmp_path / "cache").rglob("*.pt"))
    assert len(cached) == 1
    assert not list(root.rglob("*.pt"))
    # A changed file must not be served from the stale cache.
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "train" / "cat" / "0000.png")
    second = load_image_folder(root)
    assert second.train.images[0, :, 0, 0].tolist() == [1, 2, 3]
    assert not torch.equal(first.train.images, second.train.images)


def _keep_stat(path, like):
    """Give ``path`` the modification time of ``like`` (as a copy that kept its timestamps would have)."""
    stat = Path(like).stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_an_image_replaced_under_the_same_name_is_decoded_again(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "data", size=(8, 8))
    path = root / "train" / "cat" / "0000.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    first = load_image_folder(root)
    before = path.stat()
    Image.new("RGB", (8, 8), (30, 20, 10)).save(path)  # same name, same size on disk: a solid colour either way
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**10))
    second = load_image_folder(root)
    assert first.train.images[0, :, 0, 0].tolist() == [10, 20, 30]
    assert second.train.images[0, :, 0, 0].tolist() == [30, 20, 10]


def test_another_tree_with_the_same_names_sizes_and_times_is_decoded_again(tmp_path, make_image_folder):
    a = make_image_folder(tmp_path / "a", size=(8, 8))
    Image.new("RGB", (8, 8), (10, 20, 30)).save(a / "train" / "cat" / "0000.png")
    b = Path(shutil.copytree(a, tmp_path / "b"))  # copy2: the copy keeps sizes and modification times
    Image.new("RGB", (8, 8), (30, 20, 10)).save(b / "train" / "cat" / "0000.png")
    _keep_stat(b / "train" / "cat" / "0000.png", a / "train" / "cat" / "0000.png")
    assert load_image_folder(a, name="same").train.images[0, :, 0, 0].tolist() == [10, 20, 30]
    assert load_image_folder(b, name="same").train.images[0, :, 0, 0].tolist() == [30, 20, 10]


def test_grayscale_set_has_one_channel(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "gray", size=(28, 28), mode="L")
    data = load_image_folder(root)
    assert data.shape == (1, 28, 28)


def test_colour_set_with_some_gray_images_stays_colour(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "data")
    Image.new("L", (8, 8), 77).save(root / "test" / "dog" / "0009.png")
    data = load_image_folder(root)
    assert data.shape == (3, 8, 8)
    assert data.test.images[-1, :, 0, 0].tolist() == [77, 77, 77]


def test_corrupt_image_is_named(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "data")
    bad = root / "train" / "dog" / "0002.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ImageDataError, match=str(bad)):
        load_image_folder(root)


def test_truncated_image_is_named(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "data", size=(32, 32))
    good = root / "test" / "cat" / "0001.png"
    Image.effect_noise((32, 32), 50).convert("RGB").save(root / "test" / "cat" / "0005.jpg", quality=90)
    truncated = root / "test" / "cat" / "0005.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    assert good.exists()
    with pytest.raises(ImageDataError, match=str(truncated)):
        load_image_folder(root)


def test_empty_class_folder_is_named(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "data")
    (root / "test" / "emu").mkdir()
    (root / "train" / "emu").mkdir()
    (root / "train" / "emu" / "notes.txt").write_text("not an image")
    with pytest.raises(ImageDataError, match=r"train/emu: empty class folder"):
        load_image_folder(root)


def test_mismatched_class_folders_are_named(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "data")
    make_image_folder(root, classes=("emu",), splits=("train",))
    with pytest.raises(ImageDataError, match=r"only in .*train: \['emu'\]; only in .*test: -"):
        load_image_folder(root)


def test_mixed_sizes_need_image_size(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "data")
    odd = root / "test" / "dog" / "0003.png"
    Image.new("RGB", (10, 7), (5, 5, 5)).save(odd)
    with pytest.raises(ImageDataError, match=rf"{odd}: size 10x7 differs from 8x8 .*--image-size"):
        load_image_folder(root)
    data = load_image_folder(root, image_size=12)
    assert data.shape == (3, 12, 12)
    assert data.test.images.shape == (8, 3, 12, 12)


def test_missing_split_folder_is_named(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "data", splits=("train",))
    with pytest.raises(ImageDataError, match=r"test: missing"):
        load_image_folder(root)


def test_reads_a_few_real_cifar_files():
    folder = resolve_data_root() / "cifar10-jpg" / "test"
    classes, samples = list_image_folder(folder)
    assert len(classes) == 10 and "airplane" in classes
    images, labels = decode_images(samples[::2500], image_size=None)
    assert images.shape == (4, 3, 32, 32)
    assert labels.tolist() == [0, 2, 5, 7]
    assert images.float().std() > 10  # real photographs, not blank


def test_random_crop_flip_shifts_and_mirrors_each_image():
    generator = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    flipped_only = random_crop_flip(images, padding=0, generator=generator)
    for original, out in zip(images, flipped_only):
        assert torch.equal(out, original) or torch.equal(out, original.flip(-1))
    shifted = random_crop_flip(images.repeat(50, 1, 1, 1), padding=2, generator=generator)
    assert shifted.shape == (100, 1, 6, 6)
    # Every output is a window of the zero-padded (and possibly mirrored) input.
    for i, out in enumerate(shifted[:20]):
        source = torch.nn.functional.pad(images[i % 2], (2, 2, 2, 2))
        windows = [v[:, dy:dy + 6, dx:dx + 6] for v in (source, source.flip(-1)) for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out, w) for w in windows)
    assert len({tuple(out.flatten().tolist()) for out in shifted[::2]}) > 5  # not one fixed shift


def test_crop_without_flip_never_mirrors_and_flip_alone_never_shifts():
    images = (torch.arange(5 * 7, dtype=torch.uint8).view(1, 1, 5, 7) + 1).repeat(64, 1, 1, 1)
    split = ImageSplit(images, torch.zeros(64, dtype=torch.long), ["x"])
    mean, std = torch.zeros(1), torch.full((1,), 1 / 255)  # normalising becomes the identity
    source = torch.nn.functional.pad(images[0].float(), (1, 1, 1, 1))
    plain = [source[:, dy:dy + 5, dx:dx + 7] for dy in range(3) for dx in range(3)]
    crop = torch.cat([x for x, _ in ImageBatches(split, 16, mean, std, train=True, augment=("crop",), padding=1)])
    assert all(any(torch.equal(out, w) for w in plain) for out in crop)
    assert len({tuple(out.flatten().tolist()) for out in crop}) > 3
    both = torch.cat([x for x, _ in ImageBatches(split, 16, mean, std, train=True, padding=1)])
    assert any(not any(torch.equal(out, w) for w in plain) for out in both)  # some are mirrored
    flip = torch.cat([x for x, _ in ImageBatches(split, 16, mean, std, train=True, augment=("flip",), padding=1)])
    assert all(torch.equal(out, images[0].float()) or torch.equal(out, images[0].float().flip(-1)) for out in flip)
    with pytest.raises(ValueError, match="augmentations are crop, flip, cutout"):
        ImageBatches(split, 16, mean, std, augment=("rotate",))


def test_cutout_blanks_one_square_per_image_and_only_when_asked():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(200, 3, 12, 12) + 1  # never zero before cutout
    out = cutout(images.clone(), 4, generator)
    zeroed = out == 0
    assert torch.equal(zeroed[:, :1].expand_as(zeroed), zeroed)  # the same pixels in every channel
    areas = zeroed[:, 0].sum(dim=(1, 2))
    assert areas.max() == 16 and areas.min() >= 4  # a whole 4x4 square, or a corner of one at the edge
    assert (areas == 16).float().mean() > 0.3 and (areas < 16).any()
    for square in zeroed[:50, 0]:  # a rectangle: its rows and columns are contiguous runs
        rows, cols = square.any(dim=1).nonzero().flatten(), square.any(dim=0).nonzero().flatten()
        assert square.sum() == len(rows) * len(cols)
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
    assert torch.equal(out[~zeroed], images[~zeroed])  # the rest untouched
    centres = {tuple(sq.nonzero().float().mean(dim=0).round().tolist()) for sq in zeroed[:, 0]}
    assert len(centres) > 30  # drawn per image, not one fixed square

    split = ImageSplit(torch.full((32, 1, 32, 32), 200, dtype=torch.uint8), torch.zeros(32, dtype=torch.long), ["x"])
    mean, std = torch.zeros(1), torch.full((1,), 1 / 255)  # normalising becomes the identity
    with_cutout = torch.cat([x for x, _ in ImageBatches(split, 8, mean, std, train=True, augment=("cutout",))])
    assert ((with_cutout == 0).sum(dim=(1, 2, 3)) > 0).all()  # every training image loses a square
    assert (with_cutout == 0).sum(dim=(1, 2, 3)).max() == 64  # 8x8 at 32 pixels
    default = torch.cat([x for x, _ in ImageBatches(split, 8, mean, std, train=True, padding=0)])  # no zero border
    evaluation = torch.cat([x for x, _ in ImageBatches(split, 8, mean, std, augment=("cutout",))])
    assert (default != 0).all() and (evaluation != 0).all()  # not by default, never outside training


def test_batches_normalise_and_cover_the_split():
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    split = ImageSplit(images, torch.arange(10), [str(i) for i in range(10)])
    mean, std = channel_stats(images)
    batches = list(ImageBatches(split, 4, mean, std))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    stacked = torch.cat([x for x, _ in batches])
    assert torch.allclose(stacked.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    train = list(ImageBatches(split, 4, mean, std, train=True, seed=1))
    assert sorted(torch.cat([y for _, y in train]).tolist()) == list(range(10))


def test_subset_keeps_every_class_in_proportion():
    labels = torch.arange(100) % 4
    split = ImageSplit(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), labels, ["a", "b", "c", "d"])
    small = split.subset(0.2, seed=3)
    assert torch.bincount(small.labels).tolist() == [5, 5, 5, 5]
    assert sorted(split.subset(0.01).labels.tolist()) == [0, 1, 2, 3]  # at least one image per class
    assert torch.equal(split.subset(0.2, seed=3).labels, small.labels)


def test_missing_cifar10_names_the_layout_and_download(tmp_path, monkeypatch):
    def offline(root):
        raise OSError("no network")

    monkeypatch.setattr(vision_data, "load_torchvision_cifar10", offline)
    with pytest.raises(DatasetNotFoundError, match=r"(?s)CIFAR-10 not found.*cifar10-jpg.*cifar-10-python\.tar\.gz"):
        vision_data.load_dataset("cifar10", data_dir=str(tmp_path))


def test_imagefolder_needs_a_data_dir():
    with pytest.raises(ImageDataError, match="--data-dir"):
        vision_data.load_dataset("imagefolder")


def test_holdout_is_stratified_seeded_and_disjoint():
    from vision.data import holdout

    labels = torch.arange(3).repeat_interleave(10)  # 10 images of each of 3 classes
    images = torch.arange(30, dtype=torch.uint8).view(30, 1, 1, 1)  # image i holds the value i
    split = ImageSplit(images, labels, ["a", "b", "c"])
    train, val = holdout(split, 0.2, seed=3)
    assert len(train) == 24 and len(val) == 6
    assert torch.bincount(val.labels).tolist() == [2, 2, 2]
    assert not set(train.images.flatten().tolist()) & set(val.images.flatten().tolist())
    assert torch.equal(holdout(split, 0.2, seed=3)[1].images, val.images)
    assert not torch.equal(holdout(split, 0.2, seed=4)[1].images, val.images)
    with pytest.raises(ValueError, match="at least 2"):
        holdout(ImageSplit(images[:1], labels[:1], ["a"]), 0.5)


def test_a_val_folder_is_read_and_cached_as_its_own_split(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "tree", classes=("a", "b"), per_class=3, size=(8, 8),
                             splits=("train", "val", "test"))
    data = load_image_folder(root)
    assert len(data.val) == 6 and data.val.classes == ["a", "b"]
    again = load_image_folder(root)  # from the cache
    assert torch.equal(again.val.images, data.val.images) and torch.equal(again.val.labels, data.val.labels)
    assert load_image_folder(make_image_folder(tmp_path / "plain", size=(8, 8))).val is None


def test_per_class_reads_the_first_files_of_every_class(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "tree", classes=("a", "b"), per_class=5, size=(8, 8))
    data = load_image_folder(root, per_class={"train": 2, "test": 3})
    assert torch.bincount(data.train.labels).tolist() == [2, 2]
    assert torch.bincount(data.test.labels).tolist() == [3, 3]
    full = load_image_folder(root)
    assert torch.equal(data.train.images[:2], full.train.images[:2])  # the first files, in name order
