"""Fresh-eyes review: the command line as a new user types it."""

from __future__ import annotations

import pytest

from jambonz_trio._cli import main


@pytest.mark.parametrize("url", ["localhost:8080/ivr", "http://127.0.0.1:8080/ivr"])
def test_simulate_reports_a_url_without_ws_scheme_as_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``simulate localhost:8080/ivr`` (no ``ws://``) is the first thing a user may type: a
    one-line usage error, not an exception-group traceback."""
    try:
        code = main(["simulate", url])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    assert code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ws://" in err
