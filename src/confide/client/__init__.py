"""Confide's client side: the project file (``confide.toml`` / ``mse.toml``), the
operator API client, the stored credentials, and the app context file.

Example::

    >>> from confide.client import ProjectConfig
    >>> config = ProjectConfig.load("hello")  # doctest: +SKIP
    >>> config.python_application, config.healthcheck_endpoint  # doctest: +SKIP
    ('app:app', '/health')
"""

from ._api import (
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    OperatorClient,
    ProgressCallback,
    SimulationInfo,
    normalize_url,
)
from ._config import (
    CONFIG_FILES,
    MAX_CONFIG_SIZE,
    MAX_PEM_SIZE,
    MAX_SECRETS_SIZE,
    CloudConfig,
    ProjectConfig,
    SslConfig,
)
from ._context import CONTEXT_FORMAT, CONTEXT_VERSION, MAX_CONTEXT_SIZE, AppContext
from ._credentials import (
    CREDENTIALS_FILE,
    CREDENTIALS_VERSION,
    MAX_CREDENTIALS_SIZE,
    Credentials,
    CredentialsStore,
    config_dir,
    credentials_path,
)
from ._deploy import (
    CONTEXT_FOLDER,
    DEFAULT_LIFETIME,
    DEFAULT_RELEASE_VALIDITY,
    DeployEvents,
    Deployment,
    DeployOptions,
    check_before_upload,
    check_stated_manifest,
    choose_tls,
    configuration_payload,
    deploy,
    expected_launch,
    package_code,
    read_bounded,
    requested_manifest,
    server_name,
)
from ._localtest import (
    ChildProcess,
    Environment,
    Progress,
    app_environment,
    make_venv,
    prepare_tests,
    run_localtest,
    run_tests,
    tests_environment,
)
from ._releases import (
    OWNER_KEY_FILE,
    CheckpointStore,
    LoggedStatement,
    LogInfo,
    OperatorReleaseLog,
    OwnerKeyStore,
    SeenLog,
    audit_operator_log,
    check_release,
    log_statement,
    owner_key_path,
    read_evidence,
    read_log_info,
    release_summary,
    state_dir,
)
from ._verify import (
    SIMULATION_REFUSED,
    CollateralEvidence,
    CollateralSource,
    EnclavePolicy,
    EnclaveVerifier,
    EvidenceSource,
    ReleaseSource,
    SimulationEvidence,
    TrustMaterial,
    VerifiedEnclave,
    check_owner_release,
    fetch_enclave_certificate,
    has_quote,
    pinned_client,
    verify_enclave,
    verify_launch,
)

__all__ = [
    "CONFIG_FILES",
    "MAX_CONFIG_SIZE",
    "MAX_PEM_SIZE",
    "MAX_SECRETS_SIZE",
    "CloudConfig",
    "ProjectConfig",
    "SslConfig",
    # The operator API client.
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "OperatorClient",
    "ProgressCallback",
    "SimulationInfo",
    "normalize_url",
    # The app context file.
    "CONTEXT_FORMAT",
    "CONTEXT_VERSION",
    "MAX_CONTEXT_SIZE",
    "AppContext",
    # The stored credentials.
    "CREDENTIALS_FILE",
    "CREDENTIALS_VERSION",
    "MAX_CREDENTIALS_SIZE",
    "Credentials",
    "CredentialsStore",
    "config_dir",
    "credentials_path",
    # Deploying an app.
    "CONTEXT_FOLDER",
    "DEFAULT_LIFETIME",
    "DeployEvents",
    "DeployOptions",
    "Deployment",
    "check_before_upload",
    "check_stated_manifest",
    "choose_tls",
    "configuration_payload",
    "deploy",
    "expected_launch",
    "package_code",
    "read_bounded",
    "requested_manifest",
    "server_name",
    # Running a project's app and tests without an enclave.
    "ChildProcess",
    "Environment",
    "Progress",
    "app_environment",
    "make_venv",
    "prepare_tests",
    "run_localtest",
    "run_tests",
    "tests_environment",
    # Verifying an enclave from outside: the one front door.
    "SIMULATION_REFUSED",
    "CollateralEvidence",
    "CollateralSource",
    "EnclavePolicy",
    "EnclaveVerifier",
    "EvidenceSource",
    "ReleaseSource",
    "SimulationEvidence",
    "TrustMaterial",
    "VerifiedEnclave",
    "fetch_enclave_certificate",
    "check_owner_release",
    "has_quote",
    "pinned_client",
    "verify_enclave",
    "verify_launch",
    # Owner keys and the logs seen (verifiable releases).
    "DEFAULT_RELEASE_VALIDITY",
    "OWNER_KEY_FILE",
    "CheckpointStore",
    "LogInfo",
    "LoggedStatement",
    "OperatorReleaseLog",
    "OwnerKeyStore",
    "SeenLog",
    "audit_operator_log",
    "check_release",
    "log_statement",
    "owner_key_path",
    "read_evidence",
    "read_log_info",
    "release_summary",
    "state_dir",
]

# The local HTTP proxy to a zero-trust app, pinned to its verified enclave.
from ._proxy import (  # noqa: E402
    CertificatePin,
    PinRejected,
    ProxyApp,
    ProxySettings,
    bind_loopback,
    loopback_hosts,
    request_refusal,
    serve_proxy,
)

__all__ += [
    "CertificatePin",
    "PinRejected",
    "ProxyApp",
    "ProxySettings",
    "bind_loopback",
    "loopback_hosts",
    "request_refusal",
    "serve_proxy",
]
