"""Fixtures of the cluster tests (see :mod:`tests.cluster.redis`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .redis import PrivateRedis, namespace, private_redis, shared_redis_url


@pytest.fixture
def redis_url() -> str:
    """The shared Redis (fails under CI, skips elsewhere, when unreachable)."""
    return shared_redis_url()


@pytest.fixture
def ns() -> str:
    """A namespace of the test's own."""
    return namespace()


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    """A private Redis the test may kill, restart or freeze."""
    yield from private_redis()


@pytest.fixture
def own_redis_with_password() -> Iterator[PrivateRedis]:
    """A private Redis that requires the password ``s3cr/et-pw``."""
    yield from private_redis(password="s3cr/et-pw")
