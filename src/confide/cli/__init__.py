"""The ``confide`` command line.

Example::

    $ confide attest quote quote.bin --collateral collateral.json --at 1751623200 \\
        --accept-tcb ConfigurationAndSWHardeningNeeded
"""

from . import _attest, _crypto, _sim  # noqa: F401  (each registers its command group on the app)
from ._app import app, main

__all__ = ["app", "main"]
