"""The ``confide`` command line.

Example::

    $ confide attest quote quote.bin --collateral collateral.json --at 1751623200 \\
        --accept-tcb ConfigurationAndSWHardeningNeeded
"""

# Each module registers its commands on the app.
from . import (  # noqa: F401
    _account,
    _attest,
    _crypto,
    _deploy,
    _fingerprint,
    _gramine,
    _keys,
    _log,
    _operator,
    _project,
    _proxy,
    _remote_test,
    _runtime,
    _sim,
    _td_runtime,
)
from ._app import app, main

__all__ = ["app", "main"]
