"""What the conformance tests need from the machine: node and the npm packages of
``tests/conformance/package.json`` (installed by the README's test command)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def node_with(package: str) -> str:
    """The path of ``node``, if it and ``node_modules/<package>`` are installed. Otherwise the
    test skips - or fails when ``CI`` is set, where a missing tool is an error."""
    node = shutil.which("node")
    if node is None:
        reason = "node is not installed"
    elif not (HERE / "node_modules" / package / "package.json").exists():
        reason = f"{package} missing: run npm install --prefix tests/conformance"
    else:
        return node
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error)")
    pytest.skip(reason)
