"""The operator API's request and response bodies, declared once with pydantic.

Import it as ``confide.wire.api``; the runtime never does (it does not speak this API).

The operator serves these models (FastAPI renders them and their OpenAPI
schema); :class:`confide.client.OperatorClient` validates every answer with the
same models (:func:`read_answer`), so the two sides cannot drift apart. Input
bounds are the named constants of :mod:`confide.wire`.

Example::

    >>> Health.model_validate_json('{"status": "ok"}').ok
    True
"""

from ._bodies import (
    DEFAULT_CONFIGURE_TIMEOUT_MINUTES,
    DEFAULT_MAX_LIFETIME_DAYS,
    MAX_CERTIFICATE_PEM,
    MAX_PLAN_CONFIGURE_TIMEOUT_MINUTES,
    MAX_PLAN_CORES,
    MAX_PLAN_LIFETIME_DAYS,
    MAX_PLAN_MEMORY_MIB,
    Account,
    AppList,
    AppRecord,
    DeployManifest,
    Health,
    ManifestIn,
    Metrics,
    PackageDigest,
    Plan,
    ProjectInfo,
    ProjectRequest,
    SimulationOut,
    read_answer,
)

__all__ = [
    "DEFAULT_CONFIGURE_TIMEOUT_MINUTES",
    "DEFAULT_MAX_LIFETIME_DAYS",
    "MAX_CERTIFICATE_PEM",
    "MAX_PLAN_CONFIGURE_TIMEOUT_MINUTES",
    "MAX_PLAN_CORES",
    "MAX_PLAN_LIFETIME_DAYS",
    "MAX_PLAN_MEMORY_MIB",
    "Account",
    "AppList",
    "AppRecord",
    "DeployManifest",
    "ManifestIn",
    "Health",
    "Metrics",
    "PackageDigest",
    "Plan",
    "ProjectInfo",
    "ProjectRequest",
    "SimulationOut",
    "read_answer",
]
