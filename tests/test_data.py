"""MNIST against known facts of the dataset, and every failure path of the data folder."""

import os
import shutil
from pathlib import Path

import pytest
import torch

from vae.config import make_config
from vae.data import MNIST, DataError, ensure_files, load_dataset, load_frey, load_mnist

TRAIN_COUNTS_60K = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_mnist(data_root)


def test_split_sizes_and_shapes(mnist):
    assert mnist.train.shape == (50000, 784) and mnist.valid.shape == (10000, 784)
    assert mnist.test.shape == (10000, 784)
    assert mnist.train.dtype == torch.float32


def test_label_histograms_and_first_labels(mnist):
    both = torch.cat([mnist.train_labels, mnist.valid_labels])
    assert torch.bincount(both, minlength=10).tolist() == TRAIN_COUNTS_60K
    assert torch.bincount(mnist.test_labels, minlength=10).tolist() == TEST_COUNTS
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test_labels[:3].tolist() == [7, 2, 1]


def test_grey_levels_and_known_pixels(mnist):
    assert float(mnist.train.min()) == 0.0 and float(mnist.train.max()) == 1.0
    full = torch.cat([mnist.train, mnist.valid])
    assert abs(float(full.mean(dtype=torch.float64)) - 0.13066) < 1e-4
    assert abs(float(mnist.test.mean(dtype=torch.float64)) - 0.13251) < 1e-4
    row5 = (mnist.train[0].view(28, 28)[5] * 255).round().int().tolist()
    assert row5 == [0] * 12 + [3, 18, 18, 18, 126, 136, 175, 26, 166, 255, 247, 127, 0, 0, 0, 0]


def test_n_train_keeps_the_first_images(data_root, mnist):
    small = load_mnist(data_root, n_train=1000)
    assert torch.equal(small.train, mnist.train[:1000])


def test_static_binarization_is_fixed_and_binary(data_root):
    cfg = make_config({"binarize": "static", "n_train": 2000})
    a, _ = load_dataset(cfg, data_root)
    b, _ = load_dataset(cfg, data_root)
    assert torch.equal(a, b) and set(a.unique().tolist()) == {0.0, 1.0}


def test_reading_never_writes_to_the_data_folder(data_root):
    folder = data_root / MNIST.folder
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    load_mnist(data_root, n_train=10)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before


def copy_mnist(data_root: Path, dest: Path) -> Path:
    folder = dest / MNIST.folder
    shutil.copytree(data_root / MNIST.folder, folder)
    for p in folder.iterdir():
        os.chmod(p, 0o644)
    return folder


def test_wrong_checksum_is_refused_and_not_overwritten(data_root, tmp_path):
    folder = copy_mnist(data_root, tmp_path)
    victim = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz has md5 .* expected ec29112d"):
        load_mnist(tmp_path)
    assert victim.read_bytes() == bytes(data)


def test_truncated_file_is_refused(data_root, tmp_path):
    folder = copy_mnist(data_root, tmp_path)
    victim = folder / "train-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(DataError, match="corrupt"):
        load_mnist(tmp_path)


def test_missing_files_without_network_name_the_folder_files_and_setting(tmp_path):
    with pytest.raises(DataError) as err:
        ensure_files(MNIST, tmp_path, mirrors=(f"file://{tmp_path}/no-such-mirror/",))
    text = str(err.value)
    assert str((tmp_path / MNIST.folder).resolve()) in text
    assert all(f.name in text for f in MNIST.files) and "VAE_DATA_DIR" in text


def test_download_fetches_missing_files_and_verifies_them(data_root, tmp_path):
    mirror = (data_root / MNIST.folder).resolve().as_uri() + "/"
    folder = ensure_files(MNIST, tmp_path, mirrors=(mirror,))
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in MNIST.files)


def test_download_with_wrong_content_leaves_no_file(data_root, tmp_path):
    fake = tmp_path / "mirror"
    shutil.copytree(data_root / MNIST.folder, fake)
    (fake / "t10k-labels-idx1-ubyte.gz").chmod(0o644)
    (fake / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not mnist")
    with pytest.raises(DataError, match="wrong checksum"):
        ensure_files(MNIST, tmp_path / "data", mirrors=(fake.as_uri() + "/",))
    assert not (tmp_path / "data" / MNIST.folder / "t10k-labels-idx1-ubyte.gz").exists()


def test_frey_face_facts_split_and_determinism(data_root):
    train, test = load_frey(data_root)
    assert train.shape == (1600, 560) and test.shape == (365, 560)
    everything = torch.cat([train, test])
    assert float(everything.min()) == 8 / 256 and float(everything.max()) == 238 / 256
    assert abs(float(everything.mean(dtype=torch.float64)) * 256 / 255 - 0.6057) < 1e-4
    again, _ = load_frey(data_root)
    assert torch.equal(train, again)
    other, _ = load_frey(data_root, split_seed=1)
    assert not torch.equal(train, other)
    assert len({tuple(r.tolist()) for r in everything[:200]}) == 200  # no image duplicated by the split


def test_frey_images_are_upright_28_by_20(data_root):
    """Row-major 28x20 faces: neighbouring pixels in a row are far more alike than pixels 20 apart."""
    train, _ = load_frey(data_root)
    img = train.view(-1, 28, 20)
    along_row = (img[:, :, 1:] - img[:, :, :-1]).abs().mean()
    across_reshape = (train[:, 1:] - train[:, :-1]).abs().view(-1)[::20].mean()
    assert along_row < 0.1 and img.shape[1:] == (28, 20)
    assert across_reshape > along_row


def test_frey_wrong_checksum_is_refused(data_root, tmp_path):
    (tmp_path / "frey").mkdir()
    (tmp_path / "frey" / "frey_rawface.mat").write_bytes((data_root / "frey" / "frey_rawface.mat").read_bytes()[:-10])
    with pytest.raises(DataError, match=r"frey_rawface\.mat has md5"):
        load_frey(tmp_path)
