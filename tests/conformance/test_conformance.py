"""Conformance: what the verb models serialise passes the validator feature-server 0.9.8 runs.

The validator is @jambonz/verb-specifications 0.1.13, installed with
``npm install --prefix tests/conformance``. ``validate.js`` feeds every case through
``normalizeJambones`` then ``validateVerb``, exactly as the feature server does. All cases go
to node in one subprocess call. Without node or the package the tests skip, unless ``CI`` is
set, where they fail.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from jambonz_trio._protocol._verbs import ALL_VERB_CLASSES
from jambonz_trio._protocol._verbs_base import Verb, unstructure_verbs
from tests.strategies import full_instance, instances, minimal_instance

from .helpers import HERE, node_with

PER_VERB = 11  # Hypothesis examples per verb class: ~300 in all

#: Payloads the validator must refuse: they prove the harness can fail.
INVALID: dict[str, list[dict[str, Any]]] = {
    "unknown-property": [{"verb": "say", "text": "hi", "bogus": 1}],
    "verb-key-inside-gather-say": [{"verb": "gather", "say": {"verb": "say", "text": "hi"}}],
    "wrong-type": [{"verb": "pause", "length": "5"}],
    "missing-required": [{"verb": "dial"}],
    "bad-enum": [{"verb": "dial", "target": [{"type": "pstn"}]}],
    "unimplemented-verb-name": [{"verb": "no-such-verb"}],
}


def _generated_verbs() -> list[Verb]:
    """``PER_VERB`` random instances of every verb class, deterministically (fixed seed)."""
    out: list[Verb] = []

    def collect(verb: Verb) -> None:
        out.append(verb)

    for cls in ALL_VERB_CLASSES:
        run = settings(
            max_examples=PER_VERB,
            database=None,
            derandomize=True,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(given(instances(cls))(collect))
        run()
    return out


def _cases() -> dict[str, list[Any]]:
    cases: dict[str, list[Any]] = {}
    for cls in ALL_VERB_CLASSES:
        cases[f"minimal:{cls.VERB}"] = unstructure_verbs([minimal_instance(cls)])
        cases[f"full:{cls.VERB}"] = unstructure_verbs([full_instance(cls)])
    for i, verb in enumerate(_generated_verbs()):
        cases[f"generated:{i}"] = unstructure_verbs([verb])
    for label, payload in INVALID.items():
        cases[f"invalid:{label}"] = payload
    return cases


@pytest.fixture(scope="session")
def cases() -> dict[str, list[Any]]:
    return _cases()


@pytest.fixture(scope="session")
def results(cases: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """Every case's verdict from the real validator, in one node call."""
    node = node_with("@jambonz/verb-specifications")
    labels = list(cases)
    proc = subprocess.run(
        [node, str(HERE / "validate.js")],
        input=json.dumps([cases[label] for label in labels]),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=HERE,
    )
    verdicts: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(verdicts) == len(labels)
    return dict(zip(labels, verdicts, strict=True))


def _check(label: str, cases: dict[str, list[Any]], results: dict[str, dict[str, Any]]) -> None:
    verdict = results[label]
    assert verdict["ok"], f"{label}: {verdict.get('error')}\n{json.dumps(cases[label])}"


@pytest.mark.parametrize("cls", ALL_VERB_CLASSES, ids=lambda cls: cls.VERB)
def test_minimal_instance_validates(
    cls: type[Verb], cases: dict[str, list[Any]], results: dict[str, dict[str, Any]]
) -> None:
    _check(f"minimal:{cls.VERB}", cases, results)


@pytest.mark.parametrize("cls", ALL_VERB_CLASSES, ids=lambda cls: cls.VERB)
def test_full_instance_validates(
    cls: type[Verb], cases: dict[str, list[Any]], results: dict[str, dict[str, Any]]
) -> None:
    _check(f"full:{cls.VERB}", cases, results)


def test_generated_verbs_validate(cases: dict[str, list[Any]], results: dict[str, dict[str, Any]]) -> None:
    labels = [label for label in cases if label.startswith("generated:")]
    assert len(labels) == PER_VERB * len(ALL_VERB_CLASSES)
    failures = [
        f"{results[label].get('error')}: {json.dumps(cases[label])}"
        for label in labels
        if not results[label]["ok"]
    ]
    assert not failures, "\n".join(failures[:10])


def test_generated_verbs_cover_every_verb(cases: dict[str, list[Any]]) -> None:
    seen = {cases[label][0]["verb"] for label in cases if label.startswith("generated:")}
    assert seen == {cls.VERB for cls in ALL_VERB_CLASSES}


@pytest.mark.parametrize("label", sorted(INVALID))
def test_validator_rejects_invalid(label: str, results: dict[str, dict[str, Any]]) -> None:
    verdict = results[f"invalid:{label}"]
    assert not verdict["ok"]
    assert verdict["error"]
