"""A Flask app as written for Cosmian Enclave: its secrets are the JSON file at SECRETS_PATH."""

import json
import os
from pathlib import Path

from flask import Flask

app = Flask(__name__)


def _secrets() -> dict:
    """The app secrets the owner sent to the enclave (empty if none)."""
    path = os.getenv("SECRETS_PATH")
    if not path:
        return {}
    return json.loads(Path(path).read_text(encoding="utf-8"))


@app.get("/health")
def health() -> tuple[str, int]:
    return "", 200


@app.get("/")
def hello() -> str:
    return "Hello world"


@app.get("/greeting")
def greeting() -> dict:
    # A value derived from a secret; the secret itself (api_key) is never returned.
    return {"greeting": _secrets().get("greeting", "no secrets")}


@app.get("/secrets")
def secret_names() -> dict:
    return {"names": sorted(_secrets())}
