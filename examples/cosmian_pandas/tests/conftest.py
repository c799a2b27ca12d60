"""The app under test is at $TEST_REMOTE_URL (set by 'confide test' and 'confide localtest')."""

import os

import pytest


@pytest.fixture(scope="session")
def url() -> str:
    value = os.getenv("TEST_REMOTE_URL", "")
    if not value:
        pytest.fail("set TEST_REMOTE_URL to the app's URL, or run 'confide test'")
    return value.rstrip("/")
