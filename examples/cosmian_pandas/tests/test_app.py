# ruff: noqa: S101  (pytest tests assert)
"""Tests of the app, run against $TEST_REMOTE_URL as Cosmian's examples do."""

import httpx


def test_health(url: str) -> None:
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def test_the_image_versions(url: str) -> None:
    response = httpx.get(f"{url}/versions", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"pandas": "1.5.3", "numpy": "1.24.2"}


def test_merge_join(url: str) -> None:
    body = {
        "left": [{"id": 1, "value": 10.0}, {"id": 2, "value": 20.0}, {"id": 2, "value": 40.0}],
        "right": [{"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
        "on": "id",
    }
    response = httpx.post(f"{url}/merge", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "rows": 2,
        "columns": ["id", "name", "value"],
        "mean_value": {"2": 30.0},
    }


def test_a_bad_table_is_a_400(url: str) -> None:
    response = httpx.post(f"{url}/merge", json={"left": []}, timeout=10)
    assert response.status_code == 400
