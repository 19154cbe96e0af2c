"""The package (and its CLI) must work without the test extra installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_cli_and_testing_import_without_pytest() -> None:
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"pytest", "_pytest", "hypothesis"}:
                    raise ImportError(f"{name} is a test dependency")
                return None

        sys.meta_path.insert(0, Block())
        import jambonz_trio, jambonz_trio.testing, jambonz_trio._cli, jambonz_trio.llm
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
