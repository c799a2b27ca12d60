"""The operator service: the REST API and storage of the platform that hosts apps.

The API (:func:`create_app`, served by :func:`serve_api`) takes encrypted
packages and app manifests from owners, stores packages content-addressed
(:class:`BlobStore`) and apps in a SQL database (:class:`Database`, SQLite or
PostgreSQL, schema by Alembic migrations shipped here), and tells every caller
what it needs to verify an app: its launch manifest and fingerprint, its
domains and the router's address. It never holds plaintext code and never
starts a process: the backend's supervisor reads the database (see the
protocols :class:`AppEvents`, :class:`LogSource`, :class:`MetricsSource`).

The Kubernetes backend (``confide.operator._kubernetes``) and the supervisor's
election (``confide.operator._election``) need the ``confide[kubernetes]`` extra
(lightkube); they are imported only when ``operator.toml`` has a ``[kubernetes]``
table, so the runtime's measured environment (ADR 0017) does not hold that client.

Example::

    >>> import asyncio
    >>> from pathlib import Path
    >>> from confide.runtime import runtime_code_hash
    >>> settings = OperatorSettings.load(  # doctest: +SKIP
    ...     Path("/var/lib/confide"), runtime_sha256=runtime_code_hash()
    ... )
    >>> database = Database.open(settings.database_url)  # doctest: +SKIP
    >>> app = create_app(settings, database=database)  # doctest: +SKIP
    >>> stop = asyncio.Event()
    >>> asyncio.run(serve_api(app, settings, shutdown_trigger=stop.wait))  # doctest: +SKIP
"""

from ._api import create_app, serve_api
from ._backend import (
    LOCAL_RUNTIME_ENVIRONMENT,
    STOP_TIMEOUT,
    AppSpec,
    LaunchRefused,
    LocalProcessBackend,
    RuntimeBackend,
    RuntimeHandle,
)
from ._blobs import BlobStore, PackageTooLarge, StoredBlob
from ._db import (
    TOKEN_PREFIX,
    AuthenticatedToken,
    Database,
    IssuedToken,
    TokenInfo,
    authenticate_token,
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
    status_history,
    upgrade_database,
)
from ._gramine import MANIFEST_STEM, THREADS_PER_CORE, GramineBackend
from ._lifecycle import (
    TRANSITIONS,
    record_created,
    record_status,
    request_delete,
    request_stop,
)
from ._logs import MAX_LOG_BYTES, MAX_TAIL, FileLogSource, LogSource
from ._models import (
    Account,
    ApiToken,
    App,
    AppStatusChange,
    Project,
)
from ._prober import HttpProber, Probe, Prober, probe_ssl_context
from ._routes import AppRoutes
from ._schemas import MAX_MANIFEST_BYTES, parse_manifest
from ._seams import (
    AppEvents,
    CertificateAuthority,
    Clock,
    MetricsSource,
    NoEvents,
    NoMetrics,
    SimulationCollateralProvider,
    SimulationRootProvider,
    utc_now,
)
from ._serve import ADDRESSES_FILE, OperatorAddresses, run_operator
from ._settings import DEFAULT_PLANS, OperatorSettings, TdxSettings, TeeBackend, default_data_dir
from ._supervisor import MAX_RESTARTS, Supervisor, SupervisorOptions
from ._tdx import TdxBackend

__all__ = [
    "DEFAULT_PLANS",
    "MAX_LOG_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_TAIL",
    "TOKEN_PREFIX",
    "TRANSITIONS",
    "Account",
    "ApiToken",
    "App",
    "AppEvents",
    "AppStatusChange",
    "AuthenticatedToken",
    "BlobStore",
    "CertificateAuthority",
    "Clock",
    "Database",
    "FileLogSource",
    "IssuedToken",
    "LogSource",
    "MetricsSource",
    "NoEvents",
    "NoMetrics",
    "OperatorSettings",
    "PackageTooLarge",
    "Project",
    "SimulationCollateralProvider",
    "SimulationRootProvider",
    "StoredBlob",
    "TdxBackend",
    "TdxSettings",
    "TeeBackend",
    "TokenInfo",
    "authenticate_token",
    "create_app",
    "create_token",
    "default_data_dir",
    "hash_token",
    "list_tokens",
    "parse_manifest",
    "record_created",
    "record_status",
    "request_delete",
    "request_stop",
    "revoke_token",
    "serve_api",
    "status_history",
    "upgrade_database",
    "utc_now",
    # The backend, the supervisor and the whole operator.
    "ADDRESSES_FILE",
    "LOCAL_RUNTIME_ENVIRONMENT",
    "MAX_RESTARTS",
    "STOP_TIMEOUT",
    "AppRoutes",
    "AppSpec",
    "HttpProber",
    "LaunchRefused",
    "LocalProcessBackend",
    "GramineBackend",
    "MANIFEST_STEM",
    "THREADS_PER_CORE",
    "OperatorAddresses",
    "Probe",
    "Prober",
    "RuntimeBackend",
    "RuntimeHandle",
    "Supervisor",
    "SupervisorOptions",
    "probe_ssl_context",
    "run_operator",
]
