"""The repository stands on its own: its citations point at files that ship with it.

* No tracked file (outside ``.ci/``) cites a file of the reference desk's ``shared`` directory,
  which users do not have.
* Every ``protocol.md §N.M`` citation names a section of ``docs/protocol.md`` that exists (a
  heading ``N.`` / ``N.M``, or item ``M`` of section ``N``'s numbered list, such as §11.7), and
  ``§N.M step K`` names an existing step. A bare ``§N.M`` in a file that cites ``protocol.md``
  is read as a citation of it too, unless the line names an RFC or ``reliability.md``.
* Every failure-mode, security-check, finding and workaround id (``FM-14``, ``S-5``, ``F1``,
  ``W-13``) cited next to ``reliability.md``, and every ``FM-``/``S-`` id anywhere, is defined in
  ``docs/reliability.md``. ``docs/reliability.md`` has no numbered sections, so
  its section numbers cannot be cited.

This file spells the patterns it looks for indirectly, so that neither it nor the sweep
touches its own examples.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "protocol.md"
RELIABILITY = ROOT / "docs" / "reliability.md"

_SECTION_REF = re.compile(r"§\s*(\d+(?:\.\d+)*)(?:\s*[-\u2013]\s*§?\s*(\d+(?:\.\d+)*))?(?:\s+step\s+(\d+))?")
_DOC_MENTION = re.compile(r"protocol\.md|reliability\.md|\bRFC\b")
_DESK = "shared" + "/"  # the reference desk's directory
_SHARED = re.compile(r"(?<![\w./-])" + _DESK)
_RELIABILITY_SECTION = re.compile(r"reliability\.md`?\s*" + "\u00a7")
_HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ")
_LIST_ITEM = re.compile(r"^(\d+)\. ")
_RELIABILITY_ID = re.compile(r"\b(FM-\d{2}|S-\d{1,2}|F\d{1,2}|W-\d{1,2})\b")
_ANYWHERE_ID = re.compile(r"\b(FM-\d{2}|S-\d{1,2})\b")
_DEFINED_ID = re.compile(r"^\| (FM-\d{2}|S-\d{1,2}|F\d{1,2}|W-\d{1,2}) \|")


_NOT_SHIPPED = frozenset(
    {
        ".git",
        ".ci",
        ".venv",
        "node_modules",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".hypothesis",
    }
)


def _tracked_text_files() -> list[Path]:
    """The repository's text files: ``git ls-files``, or a walk when there is no git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True)
        names = [n for n in out.stdout.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if not _NOT_SHIPPED & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)
        ]
    files = []
    for name in names:
        path = ROOT / name
        if name.startswith(".ci/") or not path.is_file():
            continue
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        files.append(path)
    return files


FILES = _tracked_text_files()


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    yield from enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)


def _places(pattern: re.Pattern[str]) -> list[str]:
    """``path:line`` of every line of the repository's files that ``pattern`` matches."""
    return [
        f"{path.relative_to(ROOT)}:{lineno}"
        for path in FILES
        for lineno, line in _lines(path)
        if pattern.search(line)
    ]


def protocol_sections(text: str) -> dict[str, set[int]]:
    """Section numbers of ``docs/protocol.md`` -> the numbered list items (steps) inside it."""
    sections: dict[str, set[int]] = {}
    current: list[str] = []
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if fence:
            continue
        heading = _HEADING.match(line)
        if heading:
            number = heading.group(1)
            sections[number] = set()
            current = [number] if "." not in number else [number.split(".")[0], number]
            continue
        item = _LIST_ITEM.match(line)
        if item:
            for number in current:
                sections[number].add(int(item.group(1)))
    return sections


def protocol_citations(path: Path, text: str) -> Iterator[tuple[int, str, str | None]]:
    """``(line, section, step)`` for every ``docs/protocol.md`` section ``path`` cites."""
    cites_protocol = path == PROTOCOL or "protocol.md" in text
    for lineno, line in enumerate(text.splitlines(), start=1):
        # each § token belongs to the last document named before it on the line
        owner = "protocol.md" if cites_protocol else None
        mentions = list(_DOC_MENTION.finditer(line))
        for ref in _SECTION_REF.finditer(line):
            while mentions and mentions[0].start() < ref.start():
                owner = mentions.pop(0).group(0)
            if owner != "protocol.md":
                continue
            for number in filter(None, (ref.group(1), ref.group(2))):
                yield lineno, number, ref.group(3)


def test_protocol_sections_parse() -> None:
    """The section parser sees headings, subsections and numbered items, not code blocks."""
    text = "## 6. Reconnects\n\n### 6.2 How\n\n1. one\n2. two\n\n```\n## 9. no\n```\n## 11. S\n\n7. x\n"
    assert protocol_sections(text) == {"6": {1, 2}, "6.2": {1, 2}, "11": {7}}


def test_protocol_citation_parser() -> None:
    """Ranges, lists, steps, RFC and reliability.md sections are told apart."""
    text = (
        "see protocol.md §6.1-6.2 and §2-§7, §9.5; RFC 6455 §4.2.2\n"
        "(§6.2 step 6) but reliability.md" + " §5.4, protocol.md §11.7\n"
    )
    assert list(protocol_citations(Path("x.py"), text)) == [
        (1, "6.1", None),
        (1, "6.2", None),
        (1, "2", None),
        (1, "7", None),
        (1, "9.5", None),
        (2, "6.2", "6"),
        (2, "11.7", None),
    ]
    assert list(protocol_citations(Path("y.py"), "RFC 6455 §5.1, no protocol doc\n§4\n")) == []


def test_every_protocol_citation_names_an_existing_section() -> None:
    sections = protocol_sections(PROTOCOL.read_text(encoding="utf-8"))
    assert {"2.1", "3.3", "6.2", "12"} <= sections.keys()
    dangling = []
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        for lineno, number, step in protocol_citations(path, text):
            where = f"{path.relative_to(ROOT)}:{lineno}: §{number}"
            if number in sections:
                if step is not None and int(step) not in sections[number]:
                    dangling.append(f"{where} step {step}")
                continue
            major, _, minor = number.partition(".")
            if minor and major in sections and int(minor) in sections[major]:
                continue  # item M of section N's numbered list, e.g. §11.7
            dangling.append(where)
    assert dangling == [], "citations of sections docs/protocol.md does not have"


def test_no_tracked_file_cites_shared() -> None:
    assert _places(_SHARED) == [], "citations of the reference desk, which users do not have"


def test_shared_detector() -> None:
    assert _SHARED.search(f"see `{_DESK}protocol.md` §6.2")
    assert _SHARED.search(f"({_DESK}reliability.md W-1)")
    assert not _SHARED.search(f"docs/protocol.md, /usr/pre{_DESK}x, not-{_DESK}y")
    assert _RELIABILITY_SECTION.search("reliability.md" + " \u00a75.4")
    assert not _RELIABILITY_SECTION.search("reliability.md W-13")


def _defined_reliability_ids() -> set[str]:
    return {m.group(1) for _, line in _lines(RELIABILITY) if (m := _DEFINED_ID.match(line))}


def test_reliability_catalogue_is_complete() -> None:
    """docs/reliability.md describes every id of the catalogue."""
    expected = (
        {f"FM-{i:02}" for i in range(1, 39)}
        | {f"S-{i}" for i in range(1, 14)}
        | {f"F{i}" for i in range(1, 14)}
        | {f"W-{i}" for i in range(1, 14)}
    )
    assert _defined_reliability_ids() >= expected


def test_every_cited_reliability_id_is_defined() -> None:
    defined = _defined_reliability_ids()
    undefined = []
    for path in FILES:
        for lineno, line in _lines(path):
            ids = {m.group(1) for m in _ANYWHERE_ID.finditer(line)}
            if "reliability.md" in line:
                ids |= {m.group(1) for m in _RELIABILITY_ID.finditer(line)}
            undefined += [f"{path.relative_to(ROOT)}:{lineno}: {i}" for i in sorted(ids - defined)]
    assert undefined == []


def test_no_reliability_section_numbers_are_cited() -> None:
    assert _places(_RELIABILITY_SECTION) == []
