"""Fixed words of the HTTP protocols: the operator API's prefix, the runtime's status header."""

from __future__ import annotations

import enum
from typing import Final

#: Where the operator's REST API is mounted, under its base URL.
API_PREFIX: Final = "/api/v1"
#: The response header by which a runtime tells whether it still waits for its
#: configuration (any answer carrying it comes from the configuration endpoint, not the app).
STATUS_HEADER: Final = "confide-status"


class ConfigurationStatus(enum.StrEnum):
    """The values of :data:`STATUS_HEADER`."""

    WAITING = "waiting"
    CONFIGURED = "configured"
