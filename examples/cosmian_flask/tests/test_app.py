# ruff: noqa: S101  (pytest tests assert)
"""Tests of the app, run against $TEST_REMOTE_URL as Cosmian's examples do."""

import json
import os
from pathlib import Path

import httpx


def test_hello(url: str) -> None:
    response = httpx.get(f"{url}/", timeout=10)
    assert response.status_code == 200
    assert response.text == "Hello world"


def test_health(url: str) -> None:
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def test_greeting_from_secrets(url: str) -> None:
    response = httpx.get(f"{url}/greeting", timeout=10)
    assert response.status_code == 200
    # TEST_SECRET_JSON is the secrets file the app was given (Cosmian's variable).
    secrets_path = os.getenv("TEST_SECRET_JSON")
    if secrets_path:
        expected = json.loads(Path(secrets_path).read_text(encoding="utf-8"))["greeting"]
        assert response.json() == {"greeting": expected}


def test_secret_names(url: str) -> None:
    response = httpx.get(f"{url}/secrets", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"names": ["api_key", "greeting"]}
