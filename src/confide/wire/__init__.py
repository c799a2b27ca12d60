"""The wire: every word the client, the operator and the runtime exchange, defined once.

The operator API's prefix and bodies, an app's status, desired state and TLS
mode, plans, ``host:port`` addresses, the name patterns, the launch manifest
and the configuration request. This package imports nothing of Confide's but
:mod:`confide.errors` and :mod:`confide.strictjson` (and pydantic, never the
operator's server), so the runtime measures it and every side reads the same
definitions.

The operator API's request and response bodies are pydantic models in the public
module :mod:`confide.wire.api`, apart: the runtime never speaks that API and does
not pay for building them when it starts (about 150 ms).

Example::

    >>> from confide.wire import HostPort, TlsMode
    >>> HostPort.parse("[::1]:8443").host, TlsMode.OWNER.launch
    ('::1', 'certificate')
"""

from ._address import HostPort
from ._configuration import (
    CONFIGURATION_FIELDS,
    MAX_CONFIGURATION_SIZE,
    SEALED_CODE_KEY,
    configuration_body,
)
from ._enums import AppStatus, DesiredState, TlsMode
from ._launch import LAUNCH_MANIFEST_OID, MANIFEST_VERSION, MAX_MANIFEST_SIZE, LaunchManifest
from ._lock import (
    BUILD,
    LOCK_FILE_NAME,
    MAX_ALLOWED_SDISTS,
    MAX_LOCK_SIZE,
    MAX_LOCKED,
    SDIST,
    WHEEL,
    LockedRequirement,
    RequirementsLock,
    compatible_platforms,
    normalize_name,
)
from ._names import (
    APPLICATION_LENGTH,
    APPLICATION_PATTERN,
    DNS_LABEL,
    DOMAIN_LENGTH,
    DOMAIN_PATTERN,
    HEALTHCHECK_LENGTH,
    HEALTHCHECK_PATTERN,
    MAX_CERTIFICATE_CHAIN,
    NAME_LENGTH,
    NAME_PATTERN,
    dns_name_matches,
    key_matches_certificate,
    uncovered_names,
)
from ._protocol import (
    API_PREFIX,
    APP_UNUSABLE_LINE,
    EXIT_APP_UNUSABLE,
    STATUS_HEADER,
    ConfigurationStatus,
    app_unusable,
)

__all__ = [
    "API_PREFIX",
    "APP_UNUSABLE_LINE",
    "APPLICATION_LENGTH",
    "APPLICATION_PATTERN",
    "CONFIGURATION_FIELDS",
    "DNS_LABEL",
    "DOMAIN_LENGTH",
    "DOMAIN_PATTERN",
    "EXIT_APP_UNUSABLE",
    "HEALTHCHECK_LENGTH",
    "HEALTHCHECK_PATTERN",
    "LAUNCH_MANIFEST_OID",
    "MAX_CERTIFICATE_CHAIN",
    "MANIFEST_VERSION",
    "MAX_CONFIGURATION_SIZE",
    "MAX_MANIFEST_SIZE",
    "BUILD",
    "LOCK_FILE_NAME",
    "MAX_ALLOWED_SDISTS",
    "MAX_LOCK_SIZE",
    "MAX_LOCKED",
    "NAME_LENGTH",
    "NAME_PATTERN",
    "SEALED_CODE_KEY",
    "STATUS_HEADER",
    "AppStatus",
    "ConfigurationStatus",
    "DesiredState",
    "HostPort",
    "LaunchManifest",
    "LockedRequirement",
    "SDIST",
    "WHEEL",
    "RequirementsLock",
    "TlsMode",
    "app_unusable",
    "compatible_platforms",
    "configuration_body",
    "dns_name_matches",
    "key_matches_certificate",
    "normalize_name",
    "uncovered_names",
]
