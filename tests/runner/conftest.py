"""Fixtures for the runner tests: a real SeaweedFS S3 server on loopback."""

from __future__ import annotations

import pytest

from seaweed import SeaweedServer


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One server for the session (tests use their own key prefixes)."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture
def own_seaweed(tmp_path):
    """A server of the test's own, for tests that pause or kill it."""
    server = SeaweedServer(tmp_path / "seaweed")
    yield server
    server.stop()


@pytest.fixture
def s3env(seaweed, monkeypatch):
    for key, value in seaweed.env().items():
        monkeypatch.setenv(key, value)
    return seaweed
