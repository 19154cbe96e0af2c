"""Fixtures of the cluster tests (see :mod:`tests.cluster.redis`)."""

from __future__ import annotations

import gc
import warnings
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


@pytest.fixture(autouse=True)
def _collect_coredis_leftovers() -> Iterator[None]:
    """coredis 6.9 leaves two anyio memory streams unclosed per failed connection attempt
    (Redis down, or refusing a password). They are garbage; collect them here, where their
    ``ResourceWarning`` is expected, instead of at a random later point of the session."""
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)
        gc.collect()


@pytest.fixture
def own_tls_redis() -> Iterator[PrivateRedis]:
    """A private Redis serving TLS only, with a certificate for ``localhost`` from its own CA."""
    yield from private_redis(tls=True)
