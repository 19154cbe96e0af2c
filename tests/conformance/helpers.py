"""What the conformance tests need from the machine: node and the npm packages of
``tests/conformance/package.json`` (installed by the README's test command)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

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


async def run_node(node: str, script: str, *args: str) -> Any:
    """Run ``node <script> <args>`` in this folder, assert that it exited 0 (its stderr is the
    failure message) and return the JSON report it printed."""
    proc = await trio.run_process(
        [node, str(HERE / script), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=HERE,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)
