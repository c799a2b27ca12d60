"""Confide's client side: the project file (``confide.toml`` / ``mse.toml``).

Example::

    >>> from confide.client import ProjectConfig
    >>> config = ProjectConfig.load("hello")  # doctest: +SKIP
    >>> config.python_application, config.healthcheck_endpoint  # doctest: +SKIP
    ('app:app', '/health')
"""

from ._config import (
    CONFIG_FILES,
    MAX_CONFIG_SIZE,
    MAX_PEM_SIZE,
    MAX_SECRETS_SIZE,
    CloudConfig,
    ProjectConfig,
    SslConfig,
)

__all__ = [
    "CONFIG_FILES",
    "MAX_CONFIG_SIZE",
    "MAX_PEM_SIZE",
    "MAX_SECRETS_SIZE",
    "CloudConfig",
    "ProjectConfig",
    "SslConfig",
]
