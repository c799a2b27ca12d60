"""The project file, ``confide.toml`` (or Cosmian's ``mse.toml``): what an app is, how to test it.

Format (paths are relative to the project file)::

    name = "hello"                        # the app's name
    python_application = "app:app"        # module:attribute of the WSGI/ASGI app, in [cloud] code
    healthcheck_endpoint = "/health"      # answers 2xx once the app is up
    tests_cmd = "pytest"                  # run in [cloud] tests, with TEST_REMOTE_URL set
    tests_requirements = ["pytest>=8,<10", "httpx>=0.27,<1"]
    requirements = ["pandas>=2"]         # optional: what the app imports (else requirements.txt
                                          # in [cloud] code); locked by confide deploy
    allow_sdists = ["tinypkg"]            # optional: distributions built from source in the
                                          # enclave (their build code runs there; ADR 0024)

    [cloud]
    code = "src"                          # the app folder: what is packaged and run
    tests = "tests"                       # the tests folder (never packaged)
    project = "default"                   # the operator project the app belongs to
    hardware = "small"                    # the operator plan (Cosmian's hardware name)
    secrets = "secrets.json"              # optional: a JSON object the app reads at $SECRETS_PATH
    expiration_date = 2026-01-31T00:00:00Z  # optional: TOML date-time or ISO 8601 string
    docker = "ghcr.io/cosmian/mse-ds:20230228"  # optional: a Cosmian image; with no requirements
                                          # declared, its requirement set is locked (ADR 0024)

    [cloud.ssl]                           # optional: own certificate, "fully encrypted SaaS"
    domain_name = "app.example.com"
    private_key = "key.pem"               # PEM, unencrypted
    certificate = "cert.pem"              # PEM chain, leaf first

It is the schema of ``mse.toml`` from Cosmian's ``mse-cli``; keys Confide does
not use are not an error: they are listed
once in :attr:`ProjectConfig.warnings` and otherwise ignored. As in mse-cli,
an ``expiration_date`` without a time zone is in local time, and with
``[cloud.ssl]`` but no ``expiration_date`` the app expires with its
certificate.

Every check that fails raises one :class:`~confide.errors.UsageError` whose
text is one line: the file, the key, what was found, what was expected, and
what to do.

Example::

    >>> from pathlib import Path
    >>> from confide.client import ProjectConfig
    >>> config = ProjectConfig.load(Path("hello"))  # doctest: +SKIP
    >>> config.python_module, config.cloud.code.name, config.ssl  # doctest: +SKIP
    ('app', 'src', None)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
)

from confide.errors import UsageError
from confide.wire import (
    APPLICATION_PATTERN,
    DOMAIN_PATTERN,
    HEALTHCHECK_PATTERN,
    MAX_CERTIFICATE_CHAIN,
    dns_name_matches,
    key_matches_certificate,
)

#: Project files looked for in a folder, in this order.
CONFIG_FILES: Final = ("confide.toml", "mse.toml")
#: Largest project file read.
MAX_CONFIG_SIZE: Final = 256 * 1024
#: Largest secrets file read (the runtime's configuration payload limit).
MAX_SECRETS_SIZE: Final = 1024 * 1024
#: Largest certificate chain or private key file read.
MAX_PEM_SIZE: Final = 256 * 1024
_MAX_NAME: Final = 255
_MAX_HARDWARE: Final = 63
_MAX_TESTS_CMD: Final = 4096
_MAX_REQUIREMENTS: Final = 256
_MAX_REQUIREMENT: Final = 1024
_MAX_DOCKER: Final = 255
_MAX_SHOWN: Final = 60

_APPLICATION: Final = re.compile(APPLICATION_PATTERN)
_HEALTHCHECK: Final = re.compile(HEALTHCHECK_PATTERN)
_DOMAIN: Final = re.compile(DOMAIN_PATTERN)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

_TOP_KEYS: Final = (
    "name",
    "python_application",
    "healthcheck_endpoint",
    "tests_cmd",
    "tests_requirements",
    "requirements",
    "allow_sdists",
    "cloud",
)
_CLOUD_KEYS: Final = (
    "code",
    "tests",
    "project",
    "hardware",
    "secrets",
    "expiration_date",
    "ssl",
    "docker",
)
_SSL_KEYS: Final = ("domain_name", "private_key", "certificate")

#: What each key is, for the hint of a "missing key" error.
_ABOUT: Final = {
    "name": 'the app\'s name, e.g. name = "hello"',
    "python_application": 'the app as module:attribute, e.g. python_application = "app:app"',
    "healthcheck_endpoint": 'a path answered once the app is up, e.g. "/health"',
    "tests_cmd": 'the command that tests the app, e.g. tests_cmd = "pytest"',
    "tests_requirements": 'what the tests need, e.g. tests_requirements = ["pytest"]',
    "cloud": "a [cloud] table with code, tests, project and hardware",
    "code": 'the app folder relative to the project file, e.g. code = "src"',
    "tests": 'the tests folder relative to the project file, e.g. tests = "tests"',
    "project": 'the operator project, e.g. project = "default"',
    "hardware": 'the operator plan, e.g. hardware = "small"',
    "domain_name": 'the domain the certificate is for, e.g. domain_name = "app.example.com"',
    "private_key": 'the PEM private key of the certificate, e.g. private_key = "key.pem"',
    "certificate": 'the PEM certificate chain, leaf first, e.g. certificate = "cert.pem"',
}


@dataclass(frozen=True, slots=True)
class SslConfig:
    """The owner's own certificate (``[cloud.ssl]``), checked against its key and domain."""

    #: The domain the app is served at, lower-case; the certificate covers it.
    domain_name: str
    #: The PEM private key file (absolute); it matches the leaf certificate.
    private_key: Path
    #: The PEM certificate chain file, leaf first (absolute).
    certificate: Path
    #: When the leaf certificate stops being valid (UTC).
    not_valid_after: datetime


@dataclass(frozen=True, slots=True)
class CloudConfig:
    """The ``[cloud]`` table: where the code and tests are, and how the app is deployed."""

    #: The app folder (absolute): what is packaged and served.
    code: Path
    #: The tests folder (absolute).
    tests: Path
    project: str
    #: The operator plan; Cosmian calls it hardware.
    hardware: str
    #: A file holding one JSON object, given to the app at ``$SECRETS_PATH`` (absolute).
    secrets: Path | None
    #: When the app stops (time-zone aware), in the future when loaded.
    expiration_date: datetime | None
    #: The owner's certificate; present means the "fully encrypted SaaS" scenario.
    ssl: SslConfig | None
    #: Cosmian's ``docker`` key: the runtime image the app was written for (ADR 0024).
    docker: str | None = None


@dataclass(frozen=True, slots=True)
class ProjectConfig:
    """A checked project file. Build it with :meth:`load`."""

    #: The project file read (absolute).
    path: Path
    name: str
    #: ``module:attribute``; the module is a file or package in :attr:`CloudConfig.code`.
    python_application: str
    #: Starts with ``/``.
    healthcheck_endpoint: str
    tests_cmd: str
    tests_requirements: tuple[str, ...]
    cloud: CloudConfig
    #: The app's declared requirements (``requirements`` key); ``None``: not in the file.
    requirements: tuple[str, ...] | None = None
    #: Distributions the owner allows to be built from source in the enclave
    #: (``allow_sdists`` key): their build code runs there (ADR 0024).
    allow_sdists: tuple[str, ...] = ()
    #: One line per key that is not used (and was ignored), in file order.
    warnings: tuple[str, ...] = ()

    @property
    def ssl(self) -> SslConfig | None:
        """The owner's certificate, when the app is to be "fully encrypted SaaS"."""
        return self.cloud.ssl

    @property
    def python_module(self) -> str:
        return self.python_application.split(":", 1)[0]

    @property
    def python_attribute(self) -> str:
        return self.python_application.split(":", 1)[1]

    @property
    def tests_argv(self) -> tuple[str, ...]:
        """``tests_cmd`` split as a POSIX shell would (it is never run through a shell)."""
        return tuple(shlex.split(self.tests_cmd))

    @classmethod
    def load(cls, path: Path | str, *, now: datetime | None = None) -> ProjectConfig:
        """Read and check a project file.

        ``path`` is the file, or a folder holding ``confide.toml`` (else ``mse.toml``).
        ``now`` (time-zone aware; the current time by default) is the time the
        expiration date and the certificate are checked at.
        """
        given = Path(path)
        file = _find(given)
        data = _read(file, "project file", MAX_CONFIG_SIZE, _shown_path(file))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"{_shown_path(file)}: not UTF-8 text (byte {exc.start})", hint="save it as UTF-8"
            ) from None
        return cls.from_toml(text, path=file, now=now)

    @classmethod
    def from_toml(
        cls, text: str, *, path: Path | str, now: datetime | None = None
    ) -> ProjectConfig:
        """Check the TOML ``text`` of the project file at ``path`` (other files are read)."""
        when = datetime.now(UTC) if now is None else now
        if when.tzinfo is None or when.utcoffset() is None:
            raise UsageError("now must be time-zone aware")
        file = Path(os.path.abspath(path))
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(
                f"{_shown_path(file)}: not valid TOML: {exc}", hint="fix its syntax"
            ) from None
        except RecursionError:
            raise UsageError(f"{_shown_path(file)}: not valid TOML: nested too deeply") from None
        return _Parser(file, when).project(raw)


def _find(given: Path) -> Path:
    try:
        is_dir = stat.S_ISDIR(os.stat(given).st_mode)
    except (OSError, ValueError):
        is_dir = False
    if not is_dir:
        return Path(os.path.abspath(given))
    for name in CONFIG_FILES:
        candidate = given / name
        if candidate.is_file():
            return Path(os.path.abspath(candidate))
    raise UsageError(
        f"no {' or '.join(CONFIG_FILES)} in {given}",
        hint="give the project file's path, or create a project with 'confide scaffold NAME'",
    )


def _read(path: Path, what: str, limit: int, shown: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(
            f"{shown}: cannot read the {what} {_shown_path(path)}: {reason}",
            hint="check the path and its permissions",
        ) from None
    if len(data) > limit:
        raise UsageError(f"{shown}: the {what} {_shown_path(path)} is larger than {limit} bytes")
    return data


def _shown_path(path: Path | str) -> str:
    """A path as is, unless it holds control characters (then escaped: the message is one line)."""
    text = str(path)
    return repr(text) if _CONTROL.search(text) else text


def _show(value: object) -> str:
    """A value as one short line (``repr`` escapes newlines and control characters)."""
    text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return text


#: TOML's words for each type a value can have (bool before int, datetime before date).
_KINDS: Final = (
    *((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string")),
    *((list, "an array"), (dict, "a table"), (datetime, "a date-time"), (date, "a date")),
    (time, "a time"),
)


def _kind(value: object) -> str:
    return next((word for kind, word in _KINDS if isinstance(value, kind)), type(value).__name__)


def _is(path: Path, test: Callable[[int], bool]) -> bool:
    """``test`` (``stat.S_ISDIR``, ...) of what ``path`` names; ``False`` if nothing."""
    try:
        return test(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


class _Parser:
    """Checks a parsed project file; the first failure raises."""

    def __init__(self, file: Path, now: datetime) -> None:
        self.file = file
        self.base = file.parent
        self.now = now
        self.warnings: list[str] = []

    # -- errors ------------------------------------------------------------------------------

    def fail(self, where: str, what: str, *, hint: str | None = None) -> UsageError:
        return UsageError(f"{_shown_path(self.file)}: {where}: {what}", hint=hint)

    def unused(self, table: dict[str, Any], known: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in known:
                self.warnings.append(
                    f"{self.file.name}: {prefix}{key} is not used by Confide; it was ignored"
                )

    def required(self, table: dict[str, Any], key: str, prefix: str) -> Any:
        if key not in table:
            raise UsageError(
                f"{_shown_path(self.file)}: missing key {prefix}{key}", hint=f"add {_ABOUT[key]}"
            )
        return table[key]

    def string(
        self, value: Any, where: str, *, limit: int, example: str, strip: bool = True
    ) -> str:
        if not isinstance(value, str):
            raise self.fail(
                where,
                f"observed {_kind(value)} {_show(value)}, expected a string",
                hint=f"write it as {example}",
            )
        text = value.strip() if strip else value
        if not text:
            raise self.fail(where, "is empty", hint=f"write it as {example}")
        if len(text) > limit:
            raise self.fail(where, f"is {len(text)} characters long, expected at most {limit}")
        if _CONTROL.search(text):
            raise self.fail(where, f"observed {_show(text)}, expected no control characters")
        return text

    def folder(self, value: Any, where: str, example: str) -> Path:
        text = self.string(value, where, limit=4096, example=example, strip=False)
        path = Path(os.path.abspath(self.base / text))
        if not _is(path, stat.S_ISDIR):
            raise self.fail(
                where,
                f"the folder {_show(text)} ({path}) does not exist",
                hint=f"create it, or fix the path (relative to {self.file.name})",
            )
        return path

    def file_path(self, value: Any, where: str, example: str) -> Path:
        text = self.string(value, where, limit=4096, example=example, strip=False)
        path = Path(os.path.abspath(self.base / text))
        if not _is(path, stat.S_ISREG):
            raise self.fail(
                where,
                f"the file {_show(text)} ({path}) does not exist or is not a regular file",
                hint=f"fix the path (relative to {self.file.name})",
            )
        return path

    # -- tables ------------------------------------------------------------------------------

    def project(self, raw: dict[str, Any]) -> ProjectConfig:
        self.unused(raw, _TOP_KEYS, "")
        name = self.string(
            self.required(raw, "name", ""), "name", limit=_MAX_NAME, example='name = "hello"'
        )
        application = self.application(self.required(raw, "python_application", ""))
        healthcheck = self.healthcheck(self.required(raw, "healthcheck_endpoint", ""))
        tests_cmd = self.tests_cmd(self.required(raw, "tests_cmd", ""))
        requirements = self.requirements(self.required(raw, "tests_requirements", ""))
        cloud_raw = self.required(raw, "cloud", "")
        if not isinstance(cloud_raw, dict):
            raise self.fail(
                "cloud",
                f"observed {_kind(cloud_raw)}, expected a table",
                hint="write it as a [cloud] section",
            )
        cloud = self.cloud(cloud_raw)
        self.module_file(application, cloud.code)
        app_requirements = None
        if "requirements" in raw:
            app_requirements = self.requirements(raw["requirements"], where="requirements")
        allow_sdists: tuple[str, ...] = ()
        if "allow_sdists" in raw:
            allow_sdists = self.requirements(raw["allow_sdists"], where="allow_sdists")
        return ProjectConfig(
            path=self.file,
            name=name,
            python_application=application,
            healthcheck_endpoint=healthcheck,
            tests_cmd=tests_cmd,
            tests_requirements=requirements,
            cloud=cloud,
            requirements=app_requirements,
            allow_sdists=allow_sdists,
            warnings=tuple(self.warnings),
        )

    def application(self, value: Any) -> str:
        example = 'python_application = "app:app"'
        text = self.string(value, "python_application", limit=_MAX_NAME, example=example)
        if not _APPLICATION.fullmatch(text):
            raise self.fail(
                "python_application",
                f"observed {_show(text)}, expected module:attribute",
                hint="e.g. app:app for 'app = Flask(...)' in app.py",
            )
        return text

    def module_file(self, application: str, code: Path) -> None:
        module = application.split(":", 1)[0]
        parts = module.split(".")
        as_file = code.joinpath(*parts[:-1], parts[-1] + ".py")
        as_package = code.joinpath(*parts, "__init__.py")
        if not (_is(as_file, stat.S_ISREG) or _is(as_package, stat.S_ISREG)):
            shown = os.path.join(*parts) + ".py"
            raise self.fail(
                "python_application",
                f"module {module!r} not found: no {shown} in the code folder {code}",
                hint="fix python_application or [cloud] code",
            )

    def healthcheck(self, value: Any) -> str:
        example = 'healthcheck_endpoint = "/health"'
        text = self.string(value, "healthcheck_endpoint", limit=_MAX_NAME, example=example)
        if not _HEALTHCHECK.fullmatch(text):
            raise self.fail(
                "healthcheck_endpoint",
                f"observed {_show(text)}, expected a URL path starting with /",
                hint="e.g. /health",
            )
        return text

    def tests_cmd(self, value: Any) -> str:
        example = 'tests_cmd = "pytest"'
        text = self.string(value, "tests_cmd", limit=_MAX_TESTS_CMD, example=example)
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise self.fail(
                "tests_cmd", f"observed {_show(text)}: {exc}", hint="fix its quoting"
            ) from None
        if not argv:
            raise self.fail("tests_cmd", "names no command", hint=f"write it as {example}")
        return text

    def requirements(self, value: Any, where: str = "tests_requirements") -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(
                where,
                f"observed {_kind(value)} {_show(value)}, expected an array of strings",
                hint='e.g. tests_requirements = ["pytest", "httpx"]',
            )
        if len(value) > _MAX_REQUIREMENTS:
            raise self.fail(where, f"has {len(value)} items, expected at most {_MAX_REQUIREMENTS}")
        out = []
        for i, item in enumerate(value):
            text = self.string(item, f"{where}[{i}]", limit=_MAX_REQUIREMENT, example='"pytest>=8"')
            if text.startswith("-"):
                raise self.fail(
                    f"{where}[{i}]",
                    f"observed {_show(text)}, expected a requirement, not a pip option",
                    hint='e.g. "httpx>=0.27"',
                )
            out.append(text)
        return tuple(out)

    def cloud(self, raw: dict[str, Any]) -> CloudConfig:
        p = "[cloud] "
        self.unused(raw, _CLOUD_KEYS, p)
        code = self.folder(self.required(raw, "code", p), f"{p}code", 'code = "src"')
        tests = self.folder(self.required(raw, "tests", p), f"{p}tests", 'tests = "tests"')
        project = self.string(
            self.required(raw, "project", p),
            f"{p}project",
            limit=_MAX_NAME,
            example='project = "default"',
        )
        hardware = self.string(
            self.required(raw, "hardware", p),
            f"{p}hardware",
            limit=_MAX_HARDWARE,
            example='hardware = "small"',
        )
        secrets = None
        if "secrets" in raw:
            secrets = self.secrets(raw["secrets"])
        expiration = None
        if "expiration_date" in raw:
            expiration = self.expiration(raw["expiration_date"])
        docker = None
        if "docker" in raw:
            docker = self.string(
                raw["docker"],
                f"{p}docker",
                limit=_MAX_DOCKER,
                example='docker = "ghcr.io/cosmian/mse-flask:20230228"',
            )
        ssl = None
        if "ssl" in raw:
            ssl_raw = raw["ssl"]
            if not isinstance(ssl_raw, dict):
                raise self.fail(
                    f"{p}ssl",
                    f"observed {_kind(ssl_raw)}, expected a table",
                    hint="write it as a [cloud.ssl] section",
                )
            ssl = self.ssl(ssl_raw, expiration)
            if expiration is None:
                # As mse-cli: without an expiration date, the app lasts as long as its certificate.
                expiration = ssl.not_valid_after
        return CloudConfig(
            code=code,
            tests=tests,
            project=project,
            hardware=hardware,
            secrets=secrets,
            expiration_date=expiration,
            ssl=ssl,
            docker=docker,
        )

    def secrets(self, value: Any) -> Path:
        where = "[cloud] secrets"
        path = self.file_path(value, where, 'secrets = "secrets.json"')
        data = _read(path, "secrets file", MAX_SECRETS_SIZE, f"{_shown_path(self.file)}: {where}")
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise self.fail(
                where, f"{path} is not JSON: {exc}", hint="fix it (a JSON object)"
            ) from None
        except RecursionError:
            raise self.fail(where, f"{path} is not JSON: nested too deeply") from None
        if not isinstance(parsed, dict):
            kind = type(parsed).__name__ if parsed is not None else "null"
            raise self.fail(
                where,
                f"{path} holds a JSON {kind}, expected a JSON object",
                hint='e.g. {"api_token": "..."}',
            )
        return path

    def expiration(self, value: Any) -> datetime:
        where = "[cloud] expiration_date"
        hint = "e.g. expiration_date = 2030-01-31T00:00:00Z"
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime.combine(value, time())
        elif isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                raise self.fail(
                    where,
                    f"observed {_show(value)}, expected an ISO 8601 date-time",
                    hint=hint,
                ) from None
        else:
            raise self.fail(
                where, f"observed {_kind(value)} {_show(value)}, expected a date-time", hint=hint
            )
        if moment.tzinfo is None or moment.utcoffset() is None:
            try:
                # As mse-cli: a date-time without a time zone is in local time.
                moment = moment.astimezone()
            except (OverflowError, ValueError, OSError):
                raise self.fail(
                    where, f"observed {_show(str(value))}, which is out of range", hint=hint
                ) from None
        if moment <= self.now:
            raise self.fail(
                where,
                f"observed {moment.isoformat()}, which is in the past "
                f"(now {self.now.astimezone(UTC).isoformat(timespec='seconds')})",
                hint="give a date in the future",
            )
        return moment

    def ssl(self, raw: dict[str, Any], expiration: datetime | None) -> SslConfig:
        p = "[cloud.ssl] "
        self.unused(raw, _SSL_KEYS, p)
        domain = self.string(
            self.required(raw, "domain_name", p),
            f"{p}domain_name",
            limit=253,
            example='domain_name = "app.example.com"',
        )
        domain = domain.lower().removesuffix(".")
        if not _DOMAIN.fullmatch(domain):
            raise self.fail(
                f"{p}domain_name",
                f"observed {_show(domain)}, expected a DNS name",
                hint="e.g. app.example.com (no scheme, port or wildcard)",
            )
        key_path = self.file_path(
            self.required(raw, "private_key", p), f"{p}private_key", 'private_key = "key.pem"'
        )
        cert_path = self.file_path(
            self.required(raw, "certificate", p), f"{p}certificate", 'certificate = "cert.pem"'
        )
        leaf = self.certificate(cert_path)
        not_after = leaf.not_valid_after_utc
        where = f"{p}certificate"
        if not_after <= self.now:
            raise self.fail(
                where,
                f"{cert_path} expired on {not_after.isoformat()}",
                hint="renew the certificate",
            )
        if leaf.not_valid_before_utc > self.now:
            raise self.fail(
                where,
                f"{cert_path} is not valid before {leaf.not_valid_before_utc.isoformat()}",
                hint="check the clock, or wait",
            )
        if expiration is not None and not_after < expiration:
            raise self.fail(
                where,
                f"{cert_path} expires on {not_after.isoformat()}, "
                f"before [cloud] expiration_date {expiration.isoformat()}",
                hint="renew the certificate or choose an earlier expiration_date",
            )
        self.covers(leaf, domain, cert_path)
        self.key_matches(key_path, leaf, cert_path)
        return SslConfig(
            domain_name=domain,
            private_key=key_path,
            certificate=cert_path,
            not_valid_after=not_after,
        )

    def certificate(self, path: Path) -> x509.Certificate:
        where = "[cloud.ssl] certificate"
        data = _read(path, "certificate", MAX_PEM_SIZE, f"{_shown_path(self.file)}: {where}")
        try:
            chain = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise self.fail(
                where, f"{path} holds no PEM certificate", hint="give the PEM chain, leaf first"
            ) from None
        if len(chain) > MAX_CERTIFICATE_CHAIN:
            raise self.fail(
                where,
                f"{path} holds {len(chain)} certificates, expected 1 to {MAX_CERTIFICATE_CHAIN}",
                hint="give the leaf and its intermediates, not the whole trust store",
            )
        return chain[0]

    def covers(self, leaf: x509.Certificate, domain: str, path: Path) -> None:
        where = "[cloud.ssl] domain_name"
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            names = []
        except ValueError as exc:
            raise self.fail(
                "[cloud.ssl] certificate", f"{path} has malformed extensions: {exc}"
            ) from None
        if not any(dns_name_matches(pattern, domain) for pattern in names):
            raise self.fail(
                where,
                f"{domain} is not covered by the certificate {path}: "
                f"its DNS names are {', '.join(names) if names else 'none'}",
                hint="give a certificate for this domain, or fix domain_name",
            )

    def key_matches(self, key_path: Path, leaf: x509.Certificate, cert_path: Path) -> None:
        where = "[cloud.ssl] private_key"
        data = _read(key_path, "private key", MAX_PEM_SIZE, f"{_shown_path(self.file)}: {where}")
        try:
            key = load_pem_private_key(data, password=None)
        except TypeError:
            raise self.fail(
                where,
                f"{key_path} is encrypted",
                hint="give the key unencrypted (e.g. openssl pkey -in key.pem -out plain.pem)",
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise self.fail(
                where, f"{key_path} holds no PEM private key", hint="give the PEM key"
            ) from None
        try:
            matches = key_matches_certificate(key, leaf)
        except (ValueError, UnsupportedAlgorithm):
            raise self.fail(
                "[cloud.ssl] certificate", f"{cert_path} has an unsupported public key"
            ) from None
        if not matches:
            raise self.fail(
                where,
                f"{key_path} does not match the certificate {cert_path}",
                hint="give the key the certificate was issued for",
            )
