"""Every ```python block of README.md and docs/*.md is executed here, so the docs cannot rot.

Conventions for whoever writes a guide:

* The blocks of one file run **in order, cumulatively, in one namespace**: a block may use the
  names (imports, handlers, helpers) an earlier block of the *same* file defined. Every file
  starts from a fresh namespace; files never see each other's names.
* A block ends by doing something observable, normally ``trio.run(main)`` where ``main`` serves
  the app on ``port=0`` (or in memory), runs a call through the fake jambonz of
  :mod:`jambonz_trio.testing` and returns. Use ``assert`` to state what the reader should
  expect; a failing assert fails the test like any other exception.
* A block that defines pytest-style tests (``async def test_...``) has each of them run right
  after the block, in its own ``trio.run``, with these fixtures injected by parameter name:
  ``nursery`` (cancelled when the test returns), ``fake_jambonz`` (the plugin's factory,
  checked afterwards for ``jambonz:error`` replies exactly as the pytest plugin does) and
  ``autojump_clock`` (the test then runs on a ``MockClock`` that jumps when idle).
* A block that would never return (``trio.run(serve_jambonz, app)``) is preceded by the line
  ``<!-- doc: no-run -->``. It is compiled (so a syntax error still fails) but not executed.
  Keep these to the one line that truly serves forever: at most ``MAX_NO_RUN`` in all files.
* Only ```python fences are code that runs; ```py, ```python3 and ```pycon fences are refused,
  so that nothing is skipped silently. Other languages (sh, json, text) are not run.
* A block preceded by ``<!-- doc: needs-redis -->`` talks to the Redis at
  ``JAMBONZ_TRIO_TEST_REDIS`` (default 127.0.0.1:6379). Without a reachable Redis it and every
  later block of its file are skipped with a one-line reason (under ``CI=true`` the test fails
  instead, as the other Redis tests do); keep such blocks at the end of their file.
* Every block (with the tests it defines) must finish within ``BLOCK_TIMEOUT`` seconds.
* The library must log no ERROR while a block runs: a handler that raised inside the server
  (which the server contains, logs and answers with the fallback verbs) fails the block too.

Tracebacks point at the Markdown file and line of the failing statement, the exception carries
a note naming the block, and failed asserts show their values (pytest's assertion rewriting is
applied to the blocks).
"""

from __future__ import annotations

import ast
import inspect
import logging
import re
import signal
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from _pytest.assertion.rewrite import rewrite_asserts

from jambonz_trio.testing._plugin import FakeJambonzFactory

ROOT = Path(__file__).resolve().parent.parent
NO_RUN = "<!-- doc: no-run -->"
NEEDS_REDIS = "<!-- doc: needs-redis -->"
MAX_NO_RUN = 3
BLOCK_TIMEOUT = 60.0
#: The guides of issue 6 (docs/reliability.md has another owner; its blocks run all the same).
GUIDES = (
    "verbs.md",
    "replying.md",
    "commands.md",
    "reconnects.md",
    "conversation.md",
    "testing.md",
    "deploying.md",
    "security.md",
    "operations.md",
)
DOC_FIXTURES = frozenset({"nursery", "fake_jambonz", "autojump_clock"})

_FENCE = re.compile(r"^(?P<fence>`{3,})[ \t]*(?P<lang>[^\s`]*)")
_REFUSED_LANGS = frozenset({"py", "python3", "pycon", "Python"})


@attrs.frozen
class Block:
    """One fenced python block: where it is, its code, and whether it runs."""

    path: str
    line: int  # 1-based line of the block's first code line
    code: str
    run: bool
    redis: bool = False

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def extract_blocks(text: str, path: str) -> list[Block]:
    """The python blocks of a Markdown text, in order.

    Raises:
        ValueError: an unclosed fence, a refused fence language, or a no-run marker that does
            not precede a python block.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    previous = ""  # the last non-blank line before the current one
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        fence, lang = m.group("fence"), m.group("lang")
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{i + 1}: code fence never closed")
        if lang in _REFUSED_LANGS:
            raise ValueError(f"{path}:{i + 1}: write ```python (```{lang} blocks would not run)")
        no_run = previous == NO_RUN
        if lang == "python":
            code = "\n".join(lines[i + 1 : end]) + "\n"
            redis = previous == NEEDS_REDIS
            blocks.append(Block(path=path, line=i + 2, code=code, run=not no_run, redis=redis))
        elif no_run or previous == NEEDS_REDIS:
            raise ValueError(f"{path}:{i + 1}: {NO_RUN} must precede a ```python block")
        previous = ""
        i = end + 1
    return blocks


@contextmanager
def time_limit(seconds: float, where: str) -> Iterator[None]:
    """Fail (``TimeoutError``) if the body runs longer than ``seconds`` (main thread only)."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the block at {where} was still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _ErrorLog(logging.Handler):
    """Collects the ERROR records of the library's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def no_library_errors(where: str) -> Iterator[None]:
    """Fail if a ``jambonz_trio`` logger logs an ERROR in the body (e.g. a handler crashed)."""
    handler = _ErrorLog()
    logger = logging.getLogger("jambonz_trio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.records:
        first = handler.records[0]
        detail = f"{first.name}: {first.getMessage()}"
        if first.exc_info and first.exc_info[1] is not None:
            detail += f" ({type(first.exc_info[1]).__name__}: {first.exc_info[1]})"
        raise AssertionError(f"the library logged {len(handler.records)} error(s) during {where}: {detail}")


def run_doc_test(name: str, fn: Callable[..., Awaitable[None]]) -> None:
    """Run one ``async def test_...`` a block defined, with the doc fixtures it asks for."""
    params = inspect.signature(fn).parameters
    unknown = sorted(set(params) - DOC_FIXTURES)
    if unknown:
        raise TypeError(f"{name} asks for fixtures the doc harness does not provide: {unknown}")
    factory = FakeJambonzFactory()
    clock = trio.testing.MockClock(autojump_threshold=0) if "autojump_clock" in params else None

    async def main() -> None:
        try:
            async with trio.open_nursery() as nursery:
                available: dict[str, Any] = {
                    "nursery": nursery,
                    "fake_jambonz": factory,
                    "autojump_clock": clock,
                }
                await fn(**{p: available[p] for p in params})
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:  # report the test's own error, like pytest-trio
                raise group.exceptions[0] from None
            raise

    trio.run(main, clock=clock)
    problems = factory.problems()
    if problems:
        raise AssertionError("\n\n".join(problems))


def compile_block(block: Block) -> CodeType:
    """Compile a block with pytest's assertion rewriting (failed asserts show their values).

    The source is padded with blank lines so that tracebacks show the Markdown file's own
    line numbers.
    """
    source = "\n" * (block.line - 1) + block.code
    tree = ast.parse(source, block.path)
    rewrite_asserts(tree, source.encode(), block.path)
    return compile(tree, block.path, "exec")


def run_blocks(blocks: list[Block], *, timeout: float = BLOCK_TIMEOUT) -> int:
    """Run the blocks of one file cumulatively in a fresh namespace; return how many ran.

    An exception from a block (or from a test it defines) propagates, with a note naming it.
    """
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    ran = 0
    redis_checked = False
    for block in blocks:
        code = compile_block(block)
        if not block.run:
            continue
        if block.redis and not redis_checked:
            from tests.cluster.redis import shared_redis_url

            shared_redis_url()  # skips the rest of the file without Redis (fails under CI)
            redis_checked = True
        before = dict(namespace)
        try:
            with time_limit(timeout, block.where), no_library_errors(f"the block at {block.where}"):
                exec(code, namespace)
                for name, value in list(namespace.items()):
                    is_new = before.get(name) is not value
                    if is_new and name.startswith("test_") and inspect.iscoroutinefunction(value):
                        run_doc_test(name, value)
        except BaseException as exc:
            exc.add_note(f"in the python block at {block.where}")
            raise
        ran += 1
    return ran


def _blocks_of(path: Path) -> list[Block]:
    return extract_blocks(path.read_text(), _rel(path))


# -- the docs -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", doc_files(), ids=_rel)
def test_doc_blocks_run(path: Path) -> None:
    blocks = _blocks_of(path)
    ran = run_blocks(blocks)
    assert ran == sum(b.run for b in blocks)


def test_each_guide_exists_and_runs_code() -> None:
    for name in GUIDES:
        blocks = _blocks_of(ROOT / "docs" / name)
        assert any(b.run for b in blocks), f"docs/{name} has no executed python block"


def test_no_run_exceptions_stay_few() -> None:
    skipped = [b.where for path in doc_files() for b in _blocks_of(path) if not b.run]
    assert len(skipped) <= MAX_NO_RUN, f"too many {NO_RUN} blocks: {skipped}"
    for where in skipped:
        path, line = where.rsplit(":", 1)
        block = next(b for b in _blocks_of(ROOT / path) if b.line == int(line))
        assert len(block.code.strip().splitlines()) <= 3, f"{where}: keep a no-run block to its one line"


def test_readme_quick_start_is_short_and_runs_a_fake_call() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    code = [b for b in extract_blocks(section, "README.md") if b.run]
    assert code, "the quick start has no executed block"
    assert sum(len(b.code.splitlines()) for b in code) <= 40
    assert any("run_call" in b.code or "open_fake_call" in b.code for b in code)


# -- the harness itself ---------------------------------------------------------------------


def _md(*parts: str) -> str:
    return "\n".join(parts) + "\n"


def test_harness_runs_blocks_cumulatively_per_file() -> None:
    text = _md("# t", "```python", "x = 2", "```", "text", "```python", "assert x * 21 == 42", "```")
    assert run_blocks(extract_blocks(text, "a.md")) == 2
    with pytest.raises(NameError, match="'x'"):
        run_blocks(extract_blocks(_md("```python", "x", "```"), "b.md"))  # fresh namespace


def test_harness_fails_when_a_block_raises_and_names_the_block() -> None:
    text = _md("# t", "", "```python", "import trio", "trio.not_an_api()", "```")
    with pytest.raises(AttributeError) as info:
        run_blocks(extract_blocks(text, "docs/x.md"))
    assert "in the python block at docs/x.md:4" in (info.value.__notes__ or [])
    tb_lines = [(f.filename, f.lineno) for f in traceback.extract_tb(info.tb)]
    assert ("docs/x.md", 5) in tb_lines


def test_harness_fails_when_a_failing_assert_is_in_a_block() -> None:
    with pytest.raises(AssertionError):
        run_blocks(extract_blocks(_md("```python", "assert 1 + 1 == 3", "```"), "c.md"))


def test_harness_runs_tests_a_block_defines() -> None:
    ok = _md(
        "```python",
        "seen = []",
        "async def test_one(nursery, autojump_clock):",
        "    import trio",
        "    await trio.sleep(3600)  # instant on the autojump clock",
        "    seen.append(nursery)",
        "```",
        "```python",
        "assert len(seen) == 1",
        "```",
    )
    assert run_blocks(extract_blocks(ok, "d.md")) == 2
    failing = _md("```python", "async def test_bad():", "    raise KeyError('boom')", "```")
    with pytest.raises(KeyError, match="boom"):
        run_blocks(extract_blocks(failing, "e.md"))
    unknown = _md("```python", "async def test_fixture(tmp_path):", "    pass", "```")
    with pytest.raises(TypeError, match="tmp_path"):
        run_blocks(extract_blocks(unknown, "f.md"))


def test_harness_fails_when_a_handler_crashes_inside_the_server() -> None:
    text = _md(
        "```python",
        "import trio",
        "from jambonz_trio import serve_jambonz",
        "from jambonz_trio.testing import open_fake_call",
        "",
        "async def app(call):",
        "    raise RuntimeError('handler bug')",
        "",
        "async def main():",
        "    async with trio.open_nursery() as nursery:",
        "        server = await nursery.start(serve_jambonz, app)",
        "        async with open_fake_call(server.connect_memory) as fc:",
        "            await fc.start()  # answered with the fallback verbs: no error here",
        "            await fc.wait_idle(0.1)",
        "        nursery.cancel_scope.cancel()",
        "",
        "trio.run(main)",
        "```",
    )
    with pytest.raises(AssertionError, match=r"logged 1 error.*handler raised RuntimeError.*handler bug"):
        run_blocks(extract_blocks(text, "n.md"))


def test_harness_compiles_but_skips_no_run_blocks() -> None:
    text = _md(NO_RUN, "```python", "raise SystemExit('serves forever')", "```")
    blocks = extract_blocks(text, "g.md")
    assert [b.run for b in blocks] == [False]
    assert run_blocks(blocks) == 0
    broken = _md(NO_RUN, "```python", "def (:", "```")
    with pytest.raises(SyntaxError):
        run_blocks(extract_blocks(broken, "h.md"))


def test_harness_refuses_fences_that_would_be_skipped() -> None:
    with pytest.raises(ValueError, match="write ```python"):
        extract_blocks(_md("```py", "x = 1", "```"), "i.md")
    with pytest.raises(ValueError, match="never closed"):
        extract_blocks(_md("```python", "x = 1"), "j.md")
    with pytest.raises(ValueError, match="must precede"):
        extract_blocks(_md(NO_RUN, "```sh", "ls", "```"), "k.md")
    assert extract_blocks(_md("```sh", "ls", "```", "```json", "{}", "```"), "l.md") == []


def test_harness_times_out_a_block_that_never_returns() -> None:
    text = _md("```python", "import time", "time.sleep(5)", "```")
    with pytest.raises(TimeoutError, match=r"m\.md:2"):
        run_blocks(extract_blocks(text, "m.md"), timeout=0.2)
