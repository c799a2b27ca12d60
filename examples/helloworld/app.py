"""Hello world, the Flask way, written as for Cosmian Enclave: secrets come from SECRETS_PATH.

Run it in the simulated enclave (see the README)::

    confide runtime --app-id $(python -c 'import uuid; print(uuid.uuid4())') \
        --application app:app --app-dir examples/helloworld --plaincode \
        --host 127.0.0.1 --port 8443 --no-ssl --san localhost \
        --state-dir /tmp/hello-state --tee simulation --simulation-state /tmp/sim
"""

import json
import os
from pathlib import Path

from flask import Flask

app = Flask(__name__)


def _load(variable: str) -> dict:
    """The JSON object in the file named by ``variable``, or an empty one."""
    path = os.environ.get(variable)
    if not path:
        return {}
    return json.loads(Path(path).read_text())


@app.get("/")
def hello() -> str:
    return "Hello world"


@app.get("/health")
def health() -> dict:
    # Says whether the secrets arrived, never what they are.
    return {
        "status": "ok",
        "secrets": sorted(_load("SECRETS_PATH")),
        "sealed_secrets": sorted(_load("SEALED_SECRETS_PATH")),
    }
