"""The datasets gencond knows: torchvision's, ImageFolder roots, array files and the
bundled scikit-learn digits."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gencond.data.base import (
    DatasetInfo,
    DatasetSplits,
    LazyImageSet,
    TensorImageSet,
    UnreadableImage,
)
from gencond.data.registry import register_dataset, register_dataset_prefix
from gencond.errors import GencondError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _tensor_splits(info: DatasetInfo, train: tuple, test: tuple) -> DatasetSplits:
    """Splits from (pixels uint8 NCHW, labels) pairs."""
    return DatasetSplits(TensorImageSet(info, *train), TensorImageSet(info, *test))


def _as_nchw(pixels, layout: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(pixels), dtype=torch.uint8)
    if x.dim() == 3:
        return x.unsqueeze(1)
    return x.permute(0, 3, 1, 2).contiguous() if layout == "nhwc" else x


def _torchvision(name, cls, root: Path, download: bool, split_kwargs: tuple[dict, dict], layout: str, info_args: dict):
    """Load one torchvision dataset class, turning 'not found' into one clear line."""
    splits = []
    for kwargs in split_kwargs:
        try:
            ds = cls(str(root), download=download, **kwargs)
        except (RuntimeError, OSError, ValueError) as err:
            raise GencondError(
                f"{name}: no readable data under {root} ({err}); pass --download to fetch it, "
                "or point --data-root at a folder holding it in torchvision's layout"
            ) from None
        labels = getattr(ds, "targets", None)
        if labels is None:
            labels = ds.labels
        splits.append((_as_nchw(ds.data, layout), torch.as_tensor(np.asarray(labels), dtype=torch.long)))
    classes = getattr(ds, "classes", None) or [str(i) for i in range(int(splits[0][1].max()) + 1)]
    info = DatasetInfo(name=name, class_names=tuple(classes), **info_args)
    return _tensor_splits(info, splits[0], splits[1])


_TRAIN_TEST = ({"train": True}, {"train": False})


@register_dataset("mnist")
def mnist(root: Path, download: bool = False, image_size: int | None = None) -> DatasetSplits:
    from torchvision.datasets import MNIST

    info = dict(channels=1, image_size=28, mean=(0.1307,), std=(0.3081,))
    return _torchvision("mnist", MNIST, root, download, _TRAIN_TEST, "nchw", info)


@register_dataset("fashion_mnist")
def fashion_mnist(root: Path, download: bool = False, image_size: int | None = None) -> DatasetSplits:
    from torchvision.datasets import FashionMNIST

    info = dict(channels=1, image_size=28, mean=(0.2861,), std=(0.3530,))
    return _torchvision("fashion_mnist", FashionMNIST, root, download, _TRAIN_TEST, "nchw", info)


@register_dataset("svhn")
def svhn(root: Path, download: bool = False, image_size: int | None = None) -> DatasetSplits:
    from torchvision.datasets import SVHN

    info = dict(channels=3, image_size=32, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970))
    return _torchvision("svhn", SVHN, root, download, ({"split": "train"}, {"split": "test"}), "nchw", info)


@register_dataset("cifar10")
def cifar10(root: Path, download: bool = False, image_size: int | None = None) -> DatasetSplits:
    from torchvision.datasets import CIFAR10

    info = dict(channels=3, image_size=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))
    return _torchvision("cifar10", CIFAR10, root, download, _TRAIN_TEST, "nhwc", info)


@register_dataset("cifar100")
def cifar100(root: Path, download: bool = False, image_size: int | None = None) -> DatasetSplits:
    from torchvision.datasets import CIFAR100

    info = dict(channels=3, image_size=32, mean=(0.5071, 0.4866, 0.4409), std=(0.2673, 0.2564, 0.2762))
    return _torchvision("cifar100", CIFAR100, root, download, _TRAIN_TEST, "nhwc", info)


# --- scikit-learn's bundled digits: the embedded default ---

DIGITS_SIZE = 32
DIGITS_TEST_FRACTION = 0.25


@register_dataset("digits")
def digits(root: Path | None = None, download: bool = False, image_size: int | None = None) -> DatasetSplits:
    """The 1,797 8x8 handwritten digits shipped with scikit-learn, upsampled to 32x32
    (bilinear) so every 32x32 network applies unchanged. A quarter of each class is the
    test split, chosen by a fixed permutation (the same on every machine)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    large = F.interpolate(small, size=DIGITS_SIZE, mode="bilinear", align_corners=False)
    pixels = (large.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)

    order = torch.as_tensor(np.random.default_rng(0).permutation(len(labels)))
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        members = order[labels[order] == c]
        is_test[members[: round(len(members) * DIGITS_TEST_FRACTION)]] = True
    train_pixels = pixels[~is_test]
    mean = float(train_pixels.float().mean() / 255)
    std = float(train_pixels.float().std() / 255)
    info = DatasetInfo("digits", 1, DIGITS_SIZE, tuple(str(i) for i in range(10)), (mean,), (std,))
    return _tensor_splits(info, (train_pixels, labels[~is_test]), (pixels[is_test], labels[is_test]))


# --- array files of one's own ---


def _npz_pair(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path / "train.npz", path / "test.npz"
    if "train" not in path.name:
        raise GencondError(f"npz:{path}: name the training file (…train….npz) or a folder with train.npz and test.npz")
    return path, path.with_name(path.name.replace("train", "test"))


def _read_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    if not path.is_file():
        raise GencondError(f"npz: no file at {path} (expected arrays x: uint8 NHWC, y: int labels)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            x, y = arrays["x"], arrays["y"]
            classes = [str(c) for c in arrays["classes"]] if "classes" in arrays.files else None
    except KeyError as err:
        raise GencondError(f"npz: {path} lacks the array {err}; it needs x (uint8 NHWC) and y (labels)") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise GencondError(f"npz: cannot read {path}: {err}") from None
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise GencondError(f"npz: {path}: x must be uint8 of shape (N, H, W, C) with C 1 or 3, got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise GencondError(f"npz: {path}: y must hold one non-negative integer label per image")
    if x.shape[1] != x.shape[2]:
        raise GencondError(f"npz: {path}: images must be square, got {x.shape[1]}x{x.shape[2]}")
    return _as_nchw(x, "nhwc"), torch.as_tensor(y, dtype=torch.long), classes


@register_dataset_prefix("npz")
def load_npz(path: Path) -> DatasetSplits:
    """``npz:PATH``: a training array file and its test twin. Normalization statistics
    are the per-channel mean and std of the training images."""
    train_path, test_path = _npz_pair(path)
    train_x, train_y, classes = _read_npz(train_path)
    test_x, test_y, _ = _read_npz(test_path)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise GencondError(f"npz: train images {tuple(train_x.shape[1:])} and test images {tuple(test_x.shape[1:])} differ in shape")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    classes = classes or [str(i) for i in range(num_classes)]
    if len(classes) < num_classes:
        raise GencondError(f"npz: {train_path} names {len(classes)} classes but labels go up to {num_classes - 1}")
    scaled = train_x.float() / 255
    info = DatasetInfo(
        name=f"npz:{path}",
        channels=train_x.shape[1],
        image_size=train_x.shape[2],
        class_names=tuple(classes),
        mean=tuple(scaled.mean(dim=(0, 2, 3)).tolist()),
        std=tuple(scaled.std(dim=(0, 2, 3)).tolist()),
    )
    return _tensor_splits(info, (train_x, train_y), (test_x, test_y))


# --- ImageFolder roots: Tiny ImageNet and ImageNet-1K, read lazily ---


def _find_root(name: str, root: Path, subdirs: tuple[str, ...]) -> Path:
    candidates = [root / s for s in subdirs] + [root]
    for candidate in candidates:
        if (candidate / "train").is_dir():
            return candidate
    looked = ", ".join(str(c / "train") for c in candidates)
    raise GencondError(
        f"{name}: no ImageFolder training data found (looked in {looked}); place the data as "
        "ROOT/train/<class>/<image> and ROOT/val/<class>/<image> and pass --data-root ROOT"
    )


def fit_image(image, size: int) -> torch.Tensor:
    """A PIL image resized (shorter side, antialiased) and centre-cropped to size x size,
    as uint8 (C, H, W): what every ImageFolder reader gives."""
    from torchvision.transforms import functional as TF

    return TF.pil_to_tensor(TF.center_crop(TF.resize(image, size, antialias=True), size))


def decode_image(file, where: str, size: int, mode: str = "RGB", draft: bool = True) -> torch.Tensor:
    """An image file (a path or a binary file object) as uint8 (C, size, size) in ``mode``,
    resized (shorter side, antialiased) and centre-cropped, or :class:`UnreadableImage`
    naming it ``where``. With ``draft`` a JPEG is decoded at a reduced scale (Pillow's
    ``draft``: 1/2, 1/4 or 1/8, in the DCT domain) while both sides stay at least ``size``,
    before the same resize: several times less decoding for ImageNet's ~400x350 files read at
    64x64 (``experiments/data_pipeline/``)."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            if draft:
                img.draft(mode, (size, size))
            img = img.convert(mode)
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # the file system's error (missing file, lost mount), not the file's content
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnreadableImage(f"unreadable image {where}: {reason}") from None
    return fit_image(img, size)


def image_loader(size: int, draft: bool = True):
    """``load(path)``: :func:`decode_image` of an RGB image file."""
    return lambda path: decode_image(path, path, size, draft=draft)


def _tiny_val_annotations(val_dir: Path, class_to_idx: dict[str, int]) -> tuple[list[str], list[int]]:
    """Tiny ImageNet's own validation layout: val/images/* listed in val_annotations.txt."""
    paths, labels = [], []
    for line in (val_dir / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1] in class_to_idx:
            paths.append(str(val_dir / "images" / fields[0]))
            labels.append(class_to_idx[fields[1]])
    return paths, labels


def _image_folder(name: str, root: Path, subdirs: tuple[str, ...], image_size: int) -> DatasetSplits:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    base = _find_root(name, root, subdirs)
    try:
        classes, class_to_idx = find_classes(str(base / "train"))
        train = make_dataset(str(base / "train"), class_to_idx, IMG_EXTENSIONS)
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise GencondError(f"{name}: {base / 'train'} is not ROOT/train/<class>/<image>: {err}") from None
    val_dir = base / "val"
    if (val_dir / "val_annotations.txt").is_file():
        test_paths, test_labels = _tiny_val_annotations(val_dir, class_to_idx)
    elif val_dir.is_dir():
        test = make_dataset(str(val_dir), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
        test_paths, test_labels = [p for p, _ in test], [c for _, c in test]
        if not test_paths:
            raise GencondError(f"{name}: {val_dir} holds no images in folders named after the training classes "
                               "(ILSVRC2012's validation images come flat: sort them into val/<wnid>/ first)")
    else:
        raise GencondError(f"{name}: no validation folder at {val_dir}")
    info = DatasetInfo(name, 3, image_size, tuple(classes), IMAGENET_MEAN, IMAGENET_STD)
    load = image_loader(image_size)
    return DatasetSplits(
        LazyImageSet(info, [p for p, _ in train], torch.tensor([c for _, c in train]), load),
        LazyImageSet(info, test_paths, torch.tensor(test_labels, dtype=torch.long), load),
    )


@register_dataset("tinyimagenet")
def tinyimagenet(root: Path, download: bool = False, image_size: int | None = None) -> DatasetSplits:
    if download:
        raise GencondError("tinyimagenet cannot be downloaded by gencond; unpack tiny-imagenet-200 under --data-root")
    return _image_folder("tinyimagenet", root, ("tiny-imagenet-200", "tinyimagenet"), image_size or 64)


@register_dataset("imagenet")
def imagenet(root: Path, download: bool = False, image_size: int | None = None) -> DatasetSplits:
    """ImageNet-1K from an ImageFolder root, resized (shorter side) and centre-cropped to
    ``image_size`` (64 by default: the downsampled-ImageNet setting of the codebook paper)
    as images are read, so it is never held in memory."""
    if download:
        raise GencondError("imagenet cannot be downloaded by gencond; place ILSVRC2012 train/val folders under --data-root")
    return _image_folder("imagenet", root, ("imagenet", "ILSVRC2012"), image_size or 64)
