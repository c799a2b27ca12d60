"""Gramine: the runtime environment, its measurement, and the Gramine manifest of a launch.

What a Gramine enclave runs is what Gramine measures: its manifest, its trusted
files and its loader. This package makes Confide's measurement follow that model
(ADR 0017): :func:`runtime_environment` hashes every file the runtime can run
(the interpreter, the standard library, every needed distribution, Confide),
with a stat-keyed cache so a warm start-up reads no file twice;
:func:`gramine_manifest` renders the Gramine manifest of a launch;
:func:`lint_manifest` refuses a manifest that would let the host change what
runs; :func:`simulated_mrenclave` is the simulated MRENCLAVE of a manifest.

It imports only the standard library, :mod:`confide.errors` and
:mod:`confide.wire`: the runtime imports it at start-up.

Example::

    >>> env = runtime_environment(["flask"])  # doctest: +SKIP
    >>> text = gramine_manifest(  # doctest: +SKIP
    ...     launch, enclave_argv(launch, env), env, enclave_size="2G",
    ...     max_threads=64, package=Path("package"), state_dir=Path("state"),
    ... )
    >>> lint_manifest(text, imported=runtime_imports(env))  # doctest: +SKIP
    >>> simulated_mrenclave(text).hex()  # doctest: +SKIP
"""

from ._environment import (
    EnvironmentRoots,
    RuntimeEnvironment,
    TrustedFile,
    default_cache_dir,
    runtime_environment,
)
from ._lint import RUNTIME_MODULES, imported_files, lint_manifest, runtime_imports
from ._manifest import (
    APP_CERTIFICATE,
    APP_PACKAGE,
    APP_REQUIREMENTS,
    APP_STATE,
    APP_WHEELS,
    CODE_MOUNT,
    DEFAULT_ENCLAVE_SIZE,
    DEFAULT_GRAMINE_LIBOS,
    DEFAULT_GRAMINE_RUNTIME,
    DEFAULT_MAX_THREADS,
    ENCLAVE_CERTIFICATE,
    ENCLAVE_PACKAGE,
    ENCLAVE_REQUIREMENTS,
    ENCLAVE_STATE,
    ENCLAVE_WHEELS,
    HOST_VARIABLE,
    LAUNCH_VARIABLE,
    PASSTHROUGH_ENV,
    PORT_VARIABLE,
    app_manifest,
    enclave_argv,
    gramine_manifest,
    simulated_mrenclave,
    system_library_dirs,
)
from ._predict import (
    SIGN_TOOL,
    VIEW_TOOL,
    predict_app_mrenclave,
    predict_mrenclave,
    render_app,
)

__all__ = [
    "APP_CERTIFICATE",
    "APP_PACKAGE",
    "APP_REQUIREMENTS",
    "APP_STATE",
    "APP_WHEELS",
    "CODE_MOUNT",
    "DEFAULT_ENCLAVE_SIZE",
    "DEFAULT_MAX_THREADS",
    "DEFAULT_GRAMINE_LIBOS",
    "DEFAULT_GRAMINE_RUNTIME",
    "ENCLAVE_CERTIFICATE",
    "ENCLAVE_PACKAGE",
    "ENCLAVE_REQUIREMENTS",
    "ENCLAVE_STATE",
    "ENCLAVE_WHEELS",
    "HOST_VARIABLE",
    "LAUNCH_VARIABLE",
    "PASSTHROUGH_ENV",
    "PORT_VARIABLE",
    "RUNTIME_MODULES",
    "SIGN_TOOL",
    "VIEW_TOOL",
    "EnvironmentRoots",
    "RuntimeEnvironment",
    "TrustedFile",
    "app_manifest",
    "default_cache_dir",
    "enclave_argv",
    "gramine_manifest",
    "imported_files",
    "lint_manifest",
    "predict_app_mrenclave",
    "predict_mrenclave",
    "render_app",
    "runtime_environment",
    "runtime_imports",
    "simulated_mrenclave",
    "system_library_dirs",
]
