"""Shared test settings: where the real test data lives (../shared/data beside the clone), and a
fixed random seed per test so that a result never depends on the order or luck of a run."""

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

# CI clones the repository with shared/ beside it; FSM_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("FSM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed_everything():
    # FSM_TEST_SEED lets one sweep seeds to find tests that only pass by luck
    seed = int(os.environ.get("FSM_TEST_SEED", "0"))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
