import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import STACK_BASE

from vae.config import make_config
from vae.data import data_dir, load_dataset


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With ``VAE_REPORT_AT_ONCE`` set (the GPU slot's test phase), a failure's report is printed as it happens,
    so a phase cut short by its time limit still shows why each finished test failed."""
    if report.failed and os.environ.get("VAE_REPORT_AT_ONCE"):
        print(f"\n{report.nodeid} ({report.when}) failed:\n{report.longreprtext}", flush=True)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The configured data folder ($VAE_DATA_DIR, as `make test DATA=...` sets it)."""
    return data_dir()


@pytest.fixture(scope="module")
def mnist(data_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """For the stack tests: the first 1000 training images and the first 2000 test images (three evaluation
    batches of 700)."""
    train_x, test_x = load_dataset(make_config(STACK_BASE), data_root)
    return train_x, test_x[:2000]


@pytest.fixture
def float64() -> Iterator[None]:
    """Float64 by default, so that rounding cannot hide a difference between two paths."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
