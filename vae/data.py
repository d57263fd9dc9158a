"""Datasets as tensors: checksum-verified files, automatic download, the authors' splits.

The data folder is a setting: the ``VAE_DATA_DIR`` environment variable (``DATA=`` for make,
``--data-dir`` on the command line), ``./data`` by default. MNIST lives in torchvision's raw layout,
``<data>/mnist/MNIST/raw/*.gz``, and is read straight from the gzip files, so a read-only folder works;
Frey Face is ``<data>/frey/frey_rawface.mat``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from vae.config import Config
from vae.names import DATA_ENV


class DataError(RuntimeError):
    """Data that is missing, corrupt or unreadable; the message says which files and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str


@dataclass(frozen=True)
class DatasetFiles:
    folder: str  # relative to the data folder
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]


MNIST = DatasetFiles(
    folder="mnist/MNIST/raw",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
)


FREY = DatasetFiles(
    folder="frey",
    mirrors=("https://cs.nyu.edu/~roweis/data/",),
    files=(RemoteFile("frey_rawface.mat", "5aeb024d42b8a6091f30e5eb18c8a48d"),),
)


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: the explicit argument, else $VAE_DATA_DIR, else ./data."""
    return Path(explicit or os.environ.get(DATA_ENV) or "data")


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch url to dest through a temporary file; dest appears only if the checksum matches."""
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=dest.name, suffix=".part", delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                shutil.copyfileobj(response, tmp)
            tmp.close()
            if md5sum(Path(tmp.name)) != md5:
                raise DataError(f"{url} has the wrong checksum")
            os.replace(tmp.name, dest)
        finally:
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)


def first_missing(folder: Path) -> Path | None:
    """The outermost folder on the way to ``folder`` that does not exist yet (None if it exists)."""
    missing = None
    for path in (folder, *folder.parents):
        if os.path.lexists(path):
            break
        missing = path
    return missing


def ensure_files(spec: DatasetFiles, root: Path, mirrors: tuple[str, ...] | None = None) -> Path:
    """Verify every file of ``spec`` under ``root``, downloading missing ones; return the folder.

    A present file with a wrong checksum is never overwritten: the error says to delete or replace it.
    """
    folder = root / spec.folder
    for f in spec.files:
        if (folder / f.name).is_dir():
            raise DataError(
                f"{folder / f.name} is a folder, not the data file; remove it, then put the file there "
                "or let it be downloaded"
            )
    missing = [f for f in spec.files if not (folder / f.name).is_file()]
    if missing:
        errors: dict[str, str] = {}
        created = first_missing(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            errors["folder"] = f"cannot create {folder}: {e.strerror}"
            created = None
        else:
            for f in missing:
                for mirror in mirrors or spec.mirrors:
                    try:
                        _download(mirror + f.name, folder / f.name, f.md5)
                        break
                    except (OSError, DataError) as e:
                        errors[f.name] = f"{mirror}{f.name}: {e}"
        still = [f.name for f in spec.files if not (folder / f.name).is_file()]
        if still:
            if created is not None:  # a mistyped folder is not left behind
                shutil.rmtree(created, ignore_errors=True)
            raise DataError(
                f"data files missing in {os.path.abspath(folder)}: {still}, and download failed "
                f"({'; '.join(errors.values())}). Put the files there (checksums in vae/data.py), "
                f"or point the data folder elsewhere with {DATA_ENV}=..., make DATA=... or --data-dir."
            )
    for f in spec.files:
        actual = md5sum(folder / f.name)
        if actual != f.md5:
            raise DataError(
                f"{folder / f.name} has md5 {actual}, expected {f.md5}: the file is corrupt or not the "
                "original. Delete it to download it again, or replace it with the original file."
            )
    return folder


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}); delete it and download it again") from None
    header = np.frombuffer(raw, dtype=">i4", count=1 + dims)
    if header[0] != magic:
        raise DataError(f"{path}: IDX magic {header[0]}, expected {magic}")
    shape = tuple(int(n) for n in header[1:])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + dims)).reshape(shape)


@dataclass(frozen=True)
class Splits:
    """Flattened images as float tensors in [0, 1] (rows are datapoints) and their labels."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    valid_labels: torch.Tensor
    test_labels: torch.Tensor


def load_mnist(root: Path | None = None, pixel_scale: float = 255.0, n_train: int = 50000) -> Splits:
    """MNIST with the authors' split (their MNIST pickle): the first 50,000 training images for training, the last
    10,000 as validation, the 10,000 test images as test. Grey levels are ``byte / pixel_scale``.
    ``n_train`` keeps only the first n_train training images (Fig. 3, N_train = 1000).
    """
    folder = ensure_files(MNIST, data_dir(root))
    images = _read_idx(folder / "train-images-idx3-ubyte.gz", 2051, 3)
    labels = _read_idx(folder / "train-labels-idx1-ubyte.gz", 2049, 1)
    test_images = _read_idx(folder / "t10k-images-idx3-ubyte.gz", 2051, 3)
    test_labels = _read_idx(folder / "t10k-labels-idx1-ubyte.gz", 2049, 1)

    def grey(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / np.float32(pixel_scale))

    def lab(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Splits(
        train=grey(images[:n_train]),
        valid=grey(images[50000:]),
        test=grey(test_images),
        train_labels=lab(labels[:n_train]),
        valid_labels=lab(labels[50000:]),
        test_labels=lab(test_labels),
    )


def binarize_static(x: torch.Tensor, seed: int) -> torch.Tensor:
    """One fixed Bernoulli draw per pixel (static binarization), reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x, generator=g)


def load_frey(
    root: Path | None = None, pixel_scale: float = 256.0, n_train: int = 1600, split_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frey Face: 1965 images of 28x20 (rows of 560 pixels), ``byte / pixel_scale`` (the authors divide by
    256). The paper states no split; the images are shuffled with ``split_seed`` and the first ``n_train``
    train, the rest test (1600 / 365 by default, as in the authors' later code)."""
    from scipy.io import loadmat

    folder = ensure_files(FREY, data_dir(root))
    try:
        faces = loadmat(folder / "frey_rawface.mat")["ff"].T
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{folder / 'frey_rawface.mat'} is not the Frey Face MAT file ({e})") from None
    x = torch.from_numpy(faces.astype(np.float32) / np.float32(pixel_scale))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    return x[order[:n_train]], x[order[n_train:]]


X_DIM = {"mnist": 784, "frey": 560}


def load_dataset(cfg: Config, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and test tensors a run uses, after scaling and static binarization if configured."""
    assert cfg.pixel_scale is not None and cfg.n_train is not None  # the dataset's defaults in place of null
    if cfg.dataset == "frey":
        train, test = load_frey(root, cfg.pixel_scale, cfg.n_train, cfg.split_seed)
    else:
        splits = load_mnist(root, cfg.pixel_scale, cfg.n_train)
        train, test = splits.train, splits.test
    if cfg.binarize == "static":
        train, test = binarize_static(train, cfg.binarize_seed), binarize_static(test, cfg.binarize_seed + 1)
    return train, test


class Ticks(IterableDataset[int]):
    """An endless stream of placeholders: the real minibatches are drawn on the device."""

    def __iter__(self) -> Iterator[int]:
        while True:
            yield 0


class RunData(L.LightningDataModule):
    """A config's training and test sets as two tensors (``train_x``, ``test_x``), which the training module
    keeps on its device and draws minibatches from; its dataloader only paces Lightning's loop. ``dtype``
    converts them (float64 for the tests that compare two paths exactly)."""

    def __init__(self, cfg: Config, root: Path | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.cfg, self.root, self.dtype = cfg, root, dtype
        self.train_x = self.test_x = torch.empty(0)
        self._loaded = False

    @property
    def folder(self) -> Path:
        """The data folder read, absolute (a run records it in its status.json)."""
        return data_dir(self.root).resolve()

    def setup(self, stage: str) -> None:
        if not self._loaded:
            train_x, test_x = load_dataset(self.cfg, self.root)
            self.train_x, self.test_x = (t if self.dtype is None else t.to(self.dtype) for t in (train_x, test_x))
            self._loaded = True

    def train_dataloader(self) -> DataLoader[int]:
        return DataLoader(Ticks(), batch_size=None)
