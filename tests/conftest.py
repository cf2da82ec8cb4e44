"""Shared test settings: where the real test data lives (../shared/data beside the clone)."""

import os
from pathlib import Path

# CI clones the repository with shared/ beside it; FSM_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("FSM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
