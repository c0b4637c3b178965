"""Image datasets as uint8 tensors, decoded once and cached, with batched augmentation on tensors.

An image here is what the models treat it as: a (C, H, W) grid of pixel vectors. A dataset is held as one
uint8 tensor of shape (N, C, H, W) plus int64 labels, so an epoch is tensor indexing and a few batched ops
rather than 50 000 JPEG decodes.

Sources:
    * ``cifar10``: the offline ImageFolder copy ``<data root>/cifar10-jpg`` when present, otherwise
      torchvision's ``CIFAR10`` (which downloads when online).
    * ``imagefolder``: any tree ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` (and ``ROOT/val/<class>/*``
      when present: the validation split); grayscale sets give C = 1, and the image size is the dataset's
      own (or ``image_size`` when given).

Validation: a tree's own ``val/`` when it has one, otherwise ``holdout`` carves a seeded, stratified share
out of the training images; the test images never choose anything.

Symbol legend: N images, B batch, C channels, H height, W width.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from core.lab import datasets as core_datasets
from core.lab.harness import atomic_open

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")
CIFAR10_FOLDER = "cifar10-jpg"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: Training augmentations ``ImageBatches`` knows. CIFAR-10 trains with crop and flip; an ImageFolder with ``crop``
#: only unless asked (a mirrored digit or letter is another symbol, or none). ``cutout`` is asked for by name.
AUGMENTATIONS = ("crop", "flip", "cutout")
DEFAULT_AUGMENT = {"cifar10": ("crop", "flip"), "imagefolder": ("crop",)}
# Bump when the cached tensor format changes, so stale caches are rebuilt rather than misread.
CACHE_VERSION = 1


class ImageDataError(ValueError):
    """A dataset on disk breaks a rule the loader relies on; the message names the file or folder."""


@dataclass
class ImageSplit:
    """One split held in memory.

    Attributes:
        images (torch.Tensor): uint8, (N, C, H, W).
        labels (torch.Tensor): int64, (N,).
        classes (list[str]): class names; ``labels`` index into it.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape[1:])

    def first_per_class(self, limit: int | None) -> "ImageSplit":
        """The first ``limit`` images of every class, in stored order (all when ``limit`` is None)."""
        if limit is None:
            return self
        keep = torch.cat([torch.nonzero(self.labels == c).flatten()[:limit] for c in range(len(self.classes))])
        keep = keep.sort().values
        return ImageSplit(self.images[keep], self.labels[keep], self.classes)

    def subset(self, fraction: float, seed: int = 0) -> "ImageSplit":
        """The same ``fraction`` of every class (at least one image each), chosen reproducibly by ``seed``."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if fraction == 1.0:
            return self
        generator = torch.Generator().manual_seed(seed)
        keep = []
        for c in range(len(self.classes)):
            members = torch.nonzero(self.labels == c).flatten()
            count = max(1, round(fraction * len(members)))
            keep.append(members[torch.randperm(len(members), generator=generator)[:count]])
        keep = torch.cat(keep).sort().values
        return ImageSplit(self.images[keep], self.labels[keep], self.classes)


@dataclass
class ImageDataset:
    """Train and test splits (and the tree's own validation split, when it has one) that share classes,
    channels and image size."""

    name: str
    train: ImageSplit
    test: ImageSplit
    val: ImageSplit | None = None

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape


# --------------------------------------------------------------------------- reading ImageFolder trees


def list_image_folder(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted sub-folder names) and (file, label) pairs of one ImageFolder split.

    Raises:
        ImageDataError: the folder is missing, has no class folders, or a class folder has no images.
    """
    if not split_dir.is_dir():
        raise ImageDataError(f"{split_dir}: missing; an ImageFolder split needs one sub-folder per class")
    classes = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())
    if not classes:
        raise ImageDataError(f"{split_dir}: no class folders; expected {split_dir}/<class>/<image>")
    samples = []
    for label, name in enumerate(classes):
        files = sorted(
            path for path in (split_dir / name).iterdir()
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise ImageDataError(f"{split_dir / name}: empty class folder (no {', '.join(IMAGE_EXTENSIONS)} files)")
        samples.extend((path, label) for path in files)
    return classes, samples


def check_same_classes(train_classes: list[str], test_classes: list[str], root: Path) -> None:
    """Train and test must name the same classes, or labels would mean different things in each."""
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise ImageDataError(
            f"{root}: class folders differ between train/ and test/: "
            f"only in {root / 'train'}: {only_train or '-'}; only in {root / 'test'}: {only_test or '-'}"
        )


def decode_images(
    samples: list[tuple[Path, int]], image_size: int | None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode files into one uint8 (N, C, H, W) tensor, C = 1 when every image is grayscale, else 3.

    A colour set with a few gray images stays colour (they are repeated over RGB).

    Args:
        samples (list[tuple[Path, int]]): files and labels.
        image_size (int, optional): resize every image to this square size; when None all images must
            share the size of the first one.
        progress (bool): show a progress bar.

    Raises:
        ImageDataError: a file cannot be decoded, or sizes differ and ``image_size`` is None.
    """
    from tqdm import tqdm

    images = None
    expected = None
    all_gray = True
    for i, (path, _) in enumerate(tqdm(samples, desc="decoding images", disable=not progress, leave=False)):
        image = open_image(path)
        all_gray = all_gray and image.mode in GRAYSCALE_MODES
        image = image.convert("RGB")
        if image_size is not None:
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.BILINEAR)
        elif expected is None:
            expected = (image.size, path)
        elif image.size != expected[0]:
            raise ImageDataError(
                f"{path}: size {image.size[0]}x{image.size[1]} differs from {expected[0][0]}x{expected[0][1]} "
                f"of {expected[1]}; pass --image-size to resize every image to one size"
            )
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(image.size[1], image.size[0], 3).permute(2, 0, 1)  # (C, H, W)
        if images is None:
            images = torch.empty((len(samples), *pixels.shape), dtype=torch.uint8)
        images[i] = pixels
    if all_gray:
        images = images[:, :1].contiguous()  # gray converted to RGB repeats one value over the channels
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return images, labels


def open_image(path: Path) -> Image.Image:
    """Open and fully decode one file, naming it when it is not a readable image."""
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageDataError(f"{path}: not a readable image ({error})") from error
    return image


def read_image(path: str | os.PathLike, channels: int, height: int, width: int) -> torch.Tensor:
    """One image file as uint8 ``(C, H, W)``, converted to ``channels`` (1: gray, 3: RGB) and resized to
    ``height`` x ``width`` when it differs (a model's input for ``attention-map``)."""
    image = open_image(Path(path)).convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(height, width, channels).permute(2, 0, 1)  # (H, W, C) -> (C, H, W)


def cache_key(root: Path, samples: list[tuple[Path, int]], image_size: int | None) -> str:
    """``core.lab.datasets.content_key`` of every image (resolved path, size, time), its label and the resize."""
    config = {"version": CACHE_VERSION, "root": root, "image_size": image_size, "labels": [label for _, label in samples]}
    return core_datasets.content_key([path for path, _ in samples], config)


def load_image_folder(
    root: str | os.PathLike, image_size: int | None = None, name: str = "imagefolder",
    cache: bool = True, progress: bool = False, per_class: dict[str, int] | None = None,
) -> ImageDataset:
    """Read ``root/train``, ``root/test`` and, when present, ``root/val`` (torchvision ``ImageFolder``
    layout) into memory.

    The decoded tensors are cached under ``core.lab.datasets.cache_dir("vision")`` (never inside ``root``),
    keyed by the file list, sizes and modification times, so a changed tree is decoded again.

    Args:
        root (path): folder holding ``train/`` and ``test/``.
        image_size (int, optional): resize to ``image_size`` x ``image_size``; default: keep the
            dataset's own size, which must then be the same for every image.
        name (str): dataset name used in the cache file name and in reports.
        cache (bool): read and write the decoded-tensor cache.
        progress (bool): show a progress bar while decoding.
        per_class (dict[str, int], optional): read only the first this many files (in name order) of each
            class of a split, e.g. ``{"train": 1000, "test": 200}`` (a quick profile's subset). (default: all)

    Raises:
        ImageDataError: see ``list_image_folder``, ``check_same_classes`` and ``decode_images``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageDataError(f"{root}: not a folder; expected {root}/train/<class>/* and {root}/test/<class>/*")
    train_classes, train_samples = list_image_folder(root / "train")
    test_classes, test_samples = list_image_folder(root / "test")
    check_same_classes(train_classes, test_classes, root)
    val_samples: list[tuple[Path, int]] = []
    if (root / "val").is_dir():
        val_classes, val_samples = list_image_folder(root / "val")
        check_same_classes(train_classes, val_classes, root)
    if per_class:
        def first(samples: list, limit: int | None) -> list:
            counts: dict[int, int] = {}
            kept = []
            for path, label in samples:
                counts[label] = counts.get(label, 0) + 1
                if limit is None or counts[label] <= limit:
                    kept.append((path, label))
            return kept
        train_samples, test_samples, val_samples = (first(samples, per_class.get(split)) for split, samples in
                                                    (("train", train_samples), ("test", test_samples),
                                                     ("val", val_samples)))

    cache_file = None
    if cache:
        key = cache_key(root, train_samples + test_samples + val_samples, image_size)
        cache_file = core_datasets.cache_dir("vision", data_dir=root) / f"{name}-{key}.pt"
        if cache_file.exists():
            stored = torch.load(cache_file, weights_only=True)
            return ImageDataset(
                name,
                ImageSplit(stored["train_images"], stored["train_labels"], train_classes),
                ImageSplit(stored["test_images"], stored["test_labels"], test_classes),
                ImageSplit(stored["val_images"], stored["val_labels"], train_classes) if "val_images" in stored
                else None,
            )

    images, labels = decode_images(train_samples + test_samples + val_samples, image_size, progress)
    num_train, num_test = len(train_samples), len(test_samples)
    parts = {"train": slice(0, num_train), "test": slice(num_train, num_train + num_test)}
    if val_samples:
        parts["val"] = slice(num_train + num_test, None)
    if cache_file is not None:
        # Atomic, with a temp name of its own: a killed run never leaves half a cache behind, and two
        # runs decoding the same dataset at once do not trip over each other's temp file.
        with atomic_open(cache_file) as f:
            torch.save({f"{split}_{kind}": tensor[part] for split, part in parts.items()
                        for kind, tensor in (("images", images), ("labels", labels))}, f)
    splits = {split: ImageSplit(images[part], labels[part], train_classes) for split, part in parts.items()}
    return ImageDataset(name, splits["train"], splits["test"], splits.get("val"))


def load_torchvision_cifar10(root: Path) -> ImageDataset:
    """torchvision's ``CIFAR10`` (downloads into ``root`` when online) as uint8 tensors."""
    from torchvision.datasets import CIFAR10

    splits = []
    for train in (True, False):
        data = CIFAR10(str(root), train=train, download=True)
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
        splits.append(ImageSplit(images, torch.tensor(data.targets, dtype=torch.int64), list(data.classes)))
    return ImageDataset("cifar10", *splits)


def load_dataset(
    dataset: str, data_dir: str | None = None, image_size: int | None = None, progress: bool = False,
    per_class: dict[str, int] | None = None,
) -> ImageDataset:
    """The dataset a command line names.

    Args:
        dataset (str): ``"cifar10"`` or ``"imagefolder"``.
        data_dir (str, optional): for ``imagefolder`` the tree holding ``train/`` and ``test/``; for
            ``cifar10`` the data root (default ``core.lab.datasets.resolve_data_root()``).
        image_size (int, optional): resize to this square size.
        progress (bool): progress bar while decoding.
        per_class (dict[str, int], optional): the first this many images per class of each split (see
            ``load_image_folder``); torchvision's copy keeps the first ones in its own order. (default: all)
    """
    if dataset == "imagefolder":
        if data_dir is None:
            raise ImageDataError("--dataset imagefolder needs --data-dir ROOT with ROOT/train and ROOT/test")
        return load_image_folder(data_dir, image_size=image_size, name="imagefolder", progress=progress,
                                 per_class=per_class)
    if dataset != "cifar10":
        raise ValueError(f"unknown dataset {dataset!r}; choose cifar10 or imagefolder")
    root = Path(core_datasets.resolve_data_root(data_dir))
    if (root / CIFAR10_FOLDER).is_dir():
        return load_image_folder(root / CIFAR10_FOLDER, image_size=image_size, name="cifar10", progress=progress,
                                 per_class=per_class)
    try:
        data = load_torchvision_cifar10(root / "cifar10")
    except (RuntimeError, OSError) as error:
        raise core_datasets.DatasetNotFoundError(
            f"CIFAR-10 not found.\n"
            f"  searched: {root / CIFAR10_FOLDER} (ImageFolder copy) and {root / 'cifar10'} (torchvision's files)\n"
            f"  expected layout under {root / CIFAR10_FOLDER}:\n    train/<class>/*.jpg and test/<class>/*.jpg\n"
            f"  download: {CIFAR10_URL} (torchvision's download failed: {error})\n"
            f"  then point attnlab at the folder that contains '{CIFAR10_FOLDER}/' or 'cifar10/': pass "
            f"--data-dir DIR or set {core_datasets.DATA_ENV}=DIR",
            name="CIFAR-10", path=root / CIFAR10_FOLDER, missing=["train/<class>/*.jpg", "test/<class>/*.jpg"],
            url=CIFAR10_URL,
        ) from error
    if image_size is not None and image_size != data.shape[-1]:
        raise ImageDataError("--image-size is only applied to ImageFolder trees; CIFAR-10 is 32x32")
    if per_class:
        data.train, data.test = (split.first_per_class(per_class.get(name)) for name, split in
                                 (("train", data.train), ("test", data.test)))
    return data


def holdout(train: ImageSplit, fraction: float, seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
    """Split ``train`` into (train, validation): the same ``fraction`` of every class (at least one image)
    goes to validation, chosen reproducibly by ``seed``; the two never share an image.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or a class too small to give an image to both.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    val = []
    for c in range(len(train.classes)):
        members = torch.nonzero(train.labels == c).flatten()
        if len(members) < 2:
            raise ValueError(f"class {train.classes[c]!r} has {len(members)} training image(s); a validation "
                             "split needs at least 2 per class (or give the tree a val/ folder)")
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        val.append(members[torch.randperm(len(members), generator=generator)[:count]])
    in_val = torch.zeros(len(train), dtype=torch.bool)
    in_val[torch.cat(val)] = True
    return (ImageSplit(train.images[~in_val], train.labels[~in_val], train.classes),
            ImageSplit(train.images[in_val], train.labels[in_val], train.classes))


# --------------------------------------------------------------------------- batches and augmentation


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 (N, C, H, W) images, in [0, 1] units, each (C,)."""
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0  # (C, N*H*W)
    return pixels.mean(dim=1).float(), pixels.std(dim=1).clamp_min(1e-3).float()


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Random ``padding``-pixel-shift crop (zero padding) and horizontal flip of a whole batch at once.

    Args:
        images (torch.Tensor): (B, C, H, W), any dtype.
        padding (int): the largest shift in each direction.
        generator (torch.Generator): source of the random offsets and flips.
        flip (bool): also mirror half of the images (default: ``True``); ``False`` for data whose mirror
            image is another thing (digits, letters).

    Returns:
        torch.Tensor: (B, C, H, W), each image shifted and possibly mirrored independently.
    """
    B, C, H, W = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * padding + 1, (B, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (B, 1), generator=generator)
    rows = dy + torch.arange(H)  # (B, H)
    cols = dx + torch.arange(W)  # (B, W)
    if flip:
        mirrored = torch.rand(B, 1, generator=generator) < 0.5
        cols = torch.where(mirrored, cols.flip(-1), cols)  # mirroring is reading the columns backwards
    batch = torch.arange(B).view(B, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(B, H, 1), cols.view(B, 1, W)]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)  # (B, C, H, W)


def cutout_side(width: int) -> int:
    """Side of the cutout square for images ``width`` pixels wide: a quarter (8 of 32, Page's ResNet-9 recipe)."""
    return max(1, width // 4)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): a ``size`` x ``size`` square of every image set to zero, in place.

    The square's centre is drawn uniformly over the whole image, so near an edge only part of it falls inside (as in
    the paper). Applied after normalisation, zero is the training set's mean colour.

    Args:
        images (torch.Tensor): (B, C, H, W) float, normalised.
        size (int): side of the square in pixels.
        generator (torch.Generator): source of the centres.

    Returns:
        torch.Tensor: ``images``, each with its own square zeroed.
    """
    B, _, H, W = images.shape
    cy = torch.randint(0, H, (B, 1), generator=generator)
    cx = torch.randint(0, W, (B, 1), generator=generator)
    top, left = cy - size // 2, cx - size // 2
    rows = (torch.arange(H) >= top) & (torch.arange(H) < top + size)  # (B, H)
    cols = (torch.arange(W) >= left) & (torch.arange(W) < left + size)  # (B, W)
    square = rows.view(B, 1, H, 1) & cols.view(B, 1, 1, W)
    return images.masked_fill_(square, 0.0)


class ImageBatches:
    """Iterable over (images float (B, C, H, W), labels (B,)) batches of an ``ImageSplit``.

    Args:
        split (ImageSplit): the images.
        batch_size (int): images per batch.
        mean, std (torch.Tensor): (C,) normalisation in [0, 1] units.
        train (bool): shuffle and augment as ``augment`` says; otherwise the images in order, unchanged.
        augment (sequence of str): with ``train``, any of ``"crop"`` (a random shift of up to ``padding`` pixels,
            zero-filled), ``"flip"`` (half the images mirrored left-right) and ``"cutout"`` (a square a quarter of
            the image's side, set to the mean colour, in every image). (default: crop and flip, CIFAR's)
        padding (int): crop shift for augmentation; 0 turns cropping off. Default 4 (of 32 pixels),
            scaled with the image size.
        seed (int): seed of the shuffling and augmentation stream.
        channels_last (bool): return channels-last memory layout (faster convolutions on CPU).
    """

    def __init__(
        self, split: ImageSplit, batch_size: int, mean: torch.Tensor, std: torch.Tensor, *,
        train: bool = False, augment: Sequence[str] = ("crop", "flip"), padding: int | None = None, seed: int = 0,
        channels_last: bool = False,
    ):
        unknown = set(augment) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"augmentations are {', '.join(AUGMENTATIONS)}; got {sorted(unknown)}")
        self.crop, self.flip, self.cutout = "crop" in augment, "flip" in augment, "cutout" in augment
        self.cutout_size = cutout_side(split.shape[-1])
        self.split = split
        self.batch_size = batch_size
        self.mean = mean.view(1, -1, 1, 1) * 255.0
        self.std = std.view(1, -1, 1, 1) * 255.0
        self.train = train
        self.padding = max(1, round(split.shape[-1] / 8)) if padding is None else padding
        self.generator = torch.Generator().manual_seed(seed)
        self.channels_last = channels_last

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.split)
        order = torch.randperm(count, generator=self.generator) if self.train else torch.arange(count)
        for start in range(0, count, self.batch_size):
            index = order[start:start + self.batch_size]
            images = self.split.images[index]
            if self.train and self.crop and self.padding > 0:
                images = random_crop_flip(images, self.padding, self.generator, flip=self.flip)
            elif self.train and self.flip:
                flip = torch.rand(len(index), generator=self.generator) < 0.5
                images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
            images = (images.float() - self.mean) / self.std
            if self.train and self.cutout:
                images = cutout(images, self.cutout_size, self.generator)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.split.labels[index]
