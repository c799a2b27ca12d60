"""Hello world, the FastAPI way (ASGI), reading secrets as Cosmian Enclave apps do."""

import json
import os
from pathlib import Path

from fastapi import FastAPI

app = FastAPI()


def _load(variable: str) -> dict:
    """The JSON object in the file named by ``variable``, or an empty one."""
    path = os.environ.get(variable)
    if not path:
        return {}
    return json.loads(Path(path).read_text())


@app.get("/")
async def hello() -> dict:
    return {"message": "Hello world"}


@app.get("/health")
async def health() -> dict:
    # Says which secrets arrived (their names), never their values.
    return {
        "status": "ok",
        "secrets": sorted(_load("SECRETS_PATH")),
        "sealed_secrets": sorted(_load("SEALED_SECRETS_PATH")),
    }
