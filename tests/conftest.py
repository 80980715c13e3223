"""Shared fixtures: the real checkpoint (downloaded once). The tiny random BERT is in tiny.py."""
import os
from pathlib import Path

import pytest

from tiny import REPO


@pytest.fixture(scope="session")
def checkpoint_dir() -> Path:
    """The real all-MiniLM-L6-v2 folder: weights/ (or $MINADAPT_WEIGHTS), fetched when missing."""
    from minadapt.io.hub import default_weights_dir, ensure_checkpoint

    weights = Path(os.environ.get("MINADAPT_WEIGHTS", REPO / "weights"))
    return ensure_checkpoint(weights_dir=weights if weights.is_absolute() else default_weights_dir())
