"""What runs inside the enclave: attested configuration, encrypted code, sealed state.

The runtime proves itself with an RA-TLS certificate, accepts the owner's keys
only over that attested channel, decrypts the code inside the enclave and
serves the app. Its measurement is that of its :class:`LaunchManifest`.

Example::

    >>> import logging
    >>> from datetime import datetime, timezone
    >>> from confide.tee import select_tee
    >>> now = datetime.now(timezone.utc)
    >>> settings = RuntimeSettings.from_arguments(...)  # doctest: +SKIP
    >>> tee = select_tee(  # doctest: +SKIP
    ...     "simulation", simulation_state=Path("sim"), measurement=settings.measurement, now=now
    ... )
    >>> log = logging.getLogger("confide.runtime")
    >>> run_runtime(settings, tee, now=now, logger=log)  # doctest: +SKIP
"""

from ._admission import ConnectionLimits, network_of, source_of
from ._asgi import answer_lifespan, send_response
from ._configure import AppLaunch, Configurator
from ._endpoint import ConfigurationEndpoint, Configures
from ._guest import (
    FW_CFG_ITEMS,
    FW_CFG_ROOT,
    GUEST_PORT,
    USER_NET_HOST,
    TdSettings,
    fw_cfg_file,
    fw_cfg_name,
    td_runtime_settings,
)
from ._handoff import hand_off
from ._launch import (
    LaunchTee,
    check_launch,
    confide_command,
    runtime_arguments,
    start_child,
    stop_child,
)
from ._manifest import runtime_code_hash
from ._parent import PARENT_CODE, PARENT_MAX_MESSAGE, PARENT_TITLE_ROOM
from ._payload import ConfigurationRejected, ConfigurationRequest
from ._requirements import install_locked
from ._runtime import (
    APP_TIMEOUTS,
    CLOCK_SKEW,
    CONFIGURATION_CERT_VALIDITY,
    CONFIGURATION_TIMEOUTS,
    DEFAULT_SUBJECT,
    EXIT_EXPIRED,
    EnclaveIdentity,
    EnclaveRuntime,
    RuntimeEnd,
    run_runtime,
)
from ._settings import CodeSource, OwnerCertificate, RuntimeSettings, launch_manifest, read_lock
from ._state import STATE_FILE, SealedState, StateStore, write_atomically
from ._tls import (
    ALPN_PROTOCOLS,
    ServerTimeouts,
    bind_listener,
    hypercorn_config,
    server_ssl_context,
)
from ._wheeldisk import DISK_SERIAL, read_wheel_disk, write_wheel_disk
from ._workspace import CODE_ROOT, Workspace, code_folder_owner, remove_orphans

__all__ = [
    "PARENT_CODE",
    "PARENT_MAX_MESSAGE",
    "PARENT_TITLE_ROOM",
    "ALPN_PROTOCOLS",
    "APP_TIMEOUTS",
    "CLOCK_SKEW",
    "CODE_ROOT",
    "CONFIGURATION_CERT_VALIDITY",
    "CONFIGURATION_TIMEOUTS",
    "DEFAULT_SUBJECT",
    "EXIT_EXPIRED",
    "STATE_FILE",
    "AppLaunch",
    "CodeSource",
    "ConfigurationEndpoint",
    "ConfigurationRejected",
    "ConfigurationRequest",
    "Configurator",
    "Configures",
    "ConnectionLimits",
    "EnclaveIdentity",
    "EnclaveRuntime",
    "OwnerCertificate",
    "RuntimeEnd",
    "RuntimeSettings",
    "SealedState",
    "ServerTimeouts",
    "StateStore",
    "Workspace",
    "run_runtime",
    "install_locked",
    "launch_manifest",
    "read_lock",
    "runtime_code_hash",
    "network_of",
    "server_ssl_context",
    "source_of",
    # Shared with the operator's router and the client's proxy.
    "answer_lifespan",
    "send_response",
    "bind_listener",
    "hand_off",
    "hypercorn_config",
    # Launching a manifest (for backends).
    "LaunchTee",
    "check_launch",
    "runtime_arguments",
    # Starting and stopping child processes (runtimes, local apps).
    "confide_command",
    "start_child",
    "stop_child",
    # Writing a file whole or not at all.
    "write_atomically",
    # The RAM code folders (for backends that clean up after a runtime).
    "code_folder_owner",
    "remove_orphans",
    # A TD's launch through QEMU's fw_cfg (the TDX backend and the guest, ADR 0022).
    "FW_CFG_ITEMS",
    "FW_CFG_ROOT",
    "GUEST_PORT",
    "USER_NET_HOST",
    "TdSettings",
    "fw_cfg_file",
    "fw_cfg_name",
    "td_runtime_settings",
    # An app's lock and wheels on a TD's read-only disk (the TDX backend and the guest, ADR 0030).
    "DISK_SERIAL",
    "read_wheel_disk",
    "write_wheel_disk",
]
