"""Shared fixtures: test data paths and small generated datasets."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """Folder of reference vectors shipped with the tests."""
    return DATA
