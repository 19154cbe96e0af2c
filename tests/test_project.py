"""Project hygiene: the README's commands are the ones CI runs; the public API is curated."""

from __future__ import annotations

import re
from pathlib import Path

import jambonz_trio

ROOT = Path(__file__).resolve().parent.parent


def _sh_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = _sh_blocks(readme)
    test_command = next(b for b in blocks if "pytest" in b)
    assert test_command in ci.splitlines()


def test_readme_has_a_one_line_demo_command() -> None:
    blocks = _sh_blocks((ROOT / "README.md").read_text())
    assert any(b.endswith("python -m jambonz_trio demo") and "\n" not in b for b in blocks)


def test_public_api_is_exported_and_documented() -> None:
    for name in jambonz_trio.__all__:
        obj = getattr(jambonz_trio, name)
        if name.startswith("__") or not (isinstance(obj, type) or hasattr(obj, "__code__")):
            continue  # type aliases (Handler, Event), the version string
        assert obj.__doc__, f"{name} has no docstring"


def test_changelog_has_an_unreleased_section() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text


def test_py_typed_is_shipped() -> None:
    assert (Path(jambonz_trio.__file__).parent / "py.typed").exists()


def test_every_library_logger_goes_through_the_safe_logging_module() -> None:
    """Peer-supplied values are escaped and capped by ``jambonz_trio._log`` (issue 19 item 3):
    a module that called ``logging.getLogger`` itself would bypass it."""
    package = ROOT / "jambonz_trio"
    offenders = [
        str(path.relative_to(ROOT))
        for path in package.rglob("*.py")
        if path.name != "_log.py" and "logging.getLogger(" in path.read_text()
    ]
    assert offenders == []


def test_readme_lists_every_example_with_one_line() -> None:
    """Issue 18 item 10: the README never linked ``examples/supervisor.py``."""
    readme = (ROOT / "README.md").read_text()
    for example in sorted((ROOT / "examples").glob("*.py")):
        if example.name == "__init__.py":
            continue
        rows = [line for line in readme.splitlines() if line.startswith(f"| [examples/{example.name}]")]
        assert len(rows) == 1, f"README: one table row for examples/{example.name}"
        assert len(rows[0].split(" | ")[-1].strip(" |")) > 20, f"describe examples/{example.name}"
