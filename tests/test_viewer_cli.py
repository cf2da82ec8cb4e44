"""The command line without the GUI: fsm-render never imports viser or the viewer app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imported_after(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_fsm_render_does_not_import_the_gui():
    modules = imported_after("import fsm_viewer.render")
    assert "fsm_viewer.render" in modules and "fsm_viewer.cli" in modules  # the check itself works
    assert "viser" not in modules and "fsm_viewer.app" not in modules and "fsm_viewer.panels" not in modules
