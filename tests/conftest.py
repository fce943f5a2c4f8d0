"""Shared pytest fixtures: repository paths and the read-only shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real data shared by every session and CI, beside the repository (never copied into it).
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(autouse=True)
def _limit_threads() -> None:
    """Keep tests light on the shared 2-core machine."""
    torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """Path of ../shared/data, skipping the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA
