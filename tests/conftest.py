from pathlib import Path

import pytest

from vae.data import data_dir


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The configured data folder ($VAE_DATA_DIR, as `make test DATA=...` sets it)."""
    return data_dir()
