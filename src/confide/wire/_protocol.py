"""Fixed words of the HTTP protocols: the operator API's prefix, the runtime's status header."""

from __future__ import annotations

import enum
from typing import Final

#: Where the operator's REST API is mounted, under its base URL.
API_PREFIX: Final = "/api/v1"
#: The response header by which a runtime tells whether it still waits for its
#: configuration (any answer carrying it comes from the configuration endpoint, not the app).
STATUS_HEADER: Final = "confide-status"


#: Exit status of a runtime whose app cannot be loaded: a module it imports is missing, or
#: ``python_application`` names no module or attribute. No restart can fix it.
EXIT_APP_UNUSABLE: Final = 4
#: How such a runtime's last line of output starts; the rest names what is missing and the fix
#: (``error: app unusable: the app imports the module 'pandas', ...; add it to the
#: requirements``). The supervisor reads it in the runtime's exit reason.
APP_UNUSABLE_LINE: Final = "error: app unusable: "


def app_unusable(output: str) -> str | None:
    """What :data:`APP_UNUSABLE_LINE` says in ``output`` (a runtime's last line or exit reason:
    the missing name and the fix), or ``None`` when ``output`` does not hold it."""
    _, mark, rest = output.partition(APP_UNUSABLE_LINE)
    return (rest.strip() or None) if mark else None


class ConfigurationStatus(enum.StrEnum):
    """The values of :data:`STATUS_HEADER`."""

    WAITING = "waiting"
    CONFIGURED = "configured"
