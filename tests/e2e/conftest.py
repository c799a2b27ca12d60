"""Fixtures of the end-to-end tests (the helpers behind them are in ``tests/support``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.operators import (
    configure_when_ready,
    create_token,
    deploy,
    operator_running,
    package,
    wait_status,
)
from support.proxy import ZeroTrustApp


@pytest.fixture(scope="module")
def zero_trust(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZeroTrustApp]:
    tmp = tmp_path_factory.mktemp("proxy")
    data = tmp / "data"
    with operator_running(data) as operator:
        with operator.client(create_token(data, "alice")) as api:
            app = deploy(api, package(tmp), name="zero-trust")
            wait_status(api, app.id, "initializing")
            configure_when_ready(operator.router_port, app, data)
            wait_status(api, app.id, "running")
            yield ZeroTrustApp(operator, api, data, app.name, str(app.id), app.body["fingerprint"])
