"""The one exception tree of Confide.

Every error Confide raises on purpose derives from :class:`Error`; anything
else escaping the library is a bug. Foreign exceptions are mapped at the
boundary with ``raise ... from exc``.

::

    Error
    ├── UsageError                 the command or call could not run (bad argument, unreadable file)
    │   └── AppLoadError           the app cannot be imported as named: no restart can fix it
    │       └── RequirementError   a locked wheel is missing, not the locked one, or unsafe
    ├── AttestationError           the evidence is not acceptable (code, check, observed, expected)
    │   ├── FormatError            a quote, certificate or collateral item is malformed
    │   ├── CertificateError       a chain, signature, validity window or anchor check failed
    │   ├── RevocationError        a certificate is listed in a CRL
    │   ├── CollateralError        TCB info, QE identity or CRL is wrong or out of date
    │   ├── SignatureError         a quote or QE report signature or binding does not hold
    │   ├── TcbError               no TCB level matches, or the TCB is revoked
    │   ├── SimulationError        the quote comes from a simulated TEE and that was not allowed
    │   ├── PolicyError            verified evidence does not match the caller's expectations
    │   ├── ReleaseError           no release statement of this owner holds for this code now
    │   ├── LogError               a transparency log checkpoint or proof does not hold
    │   └── FreshnessError         a challenge answer is not this nonce on this connection
    ├── CryptoError                data could not be opened, or is not acceptable once opened
    ├── JsonError                  a JSON document is not strict JSON (confide.strictjson)
    ├── WireError                  a body does not have the shape its confide.wire model says
    ├── FetchError                 collateral or a peer certificate could not be fetched
    ├── OperatorError              the operator's API could not be reached or refused a call
    ├── LifecycleError             an app's status change its lifecycle does not allow (a bug)
    ├── TeeError                   the local TEE could not produce a quote or a key
    │   └── TsmError               configfs-tsm is absent, not tdx_guest, or raced
    └── ManifestError              a Gramine manifest breaks a rule of confide.gramine's linter

Every :class:`AttestationError` carries a stable machine-readable ``code``
(e.g. ``quote.signature``), the ``check`` that failed in words, and the
``observed`` and ``expected`` values when they exist. Its ``str()`` is one
line meant for a person.

Example::

    >>> from confide.errors import PolicyError
    >>> err = PolicyError("policy.mrenclave", "enclave measurement", observed="aa", expected="bb")
    >>> str(err)
    'enclave measurement: observed aa, expected bb'
"""

from __future__ import annotations

__all__ = [
    "AppLoadError",
    "AttestationError",
    "CertificateError",
    "CollateralError",
    "CryptoError",
    "Error",
    "FetchError",
    "FormatError",
    "FreshnessError",
    "JsonError",
    "LifecycleError",
    "LogError",
    "ManifestError",
    "OperatorError",
    "PolicyError",
    "ReleaseError",
    "RequirementError",
    "RevocationError",
    "SignatureError",
    "SimulationError",
    "TcbError",
    "TeeError",
    "TsmError",
    "UsageError",
    "WireError",
]


class Error(Exception):
    """Root of every error Confide raises on purpose."""

    #: A stable machine-readable identifier of the failure.
    code: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class UsageError(Error):
    """The command or call could not run: bad argument, unreadable file."""

    code = "usage"


class AppLoadError(UsageError):
    """The app cannot be imported as named: a module it imports is missing, or
    ``python_application`` names no module or attribute. No restart can fix it."""

    code = "app.unusable"


class RequirementError(AppLoadError):
    """A locked wheel was refused by the runtime (ADR 0024): missing from the operator's
    cache, not the locked hash (observed and expected in the message), not a wheel of
    the locked version, or unsafe to extract. ``code`` names which
    (``requirements.hash_mismatch``, ...). No restart can fix it."""

    code = "requirements"

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class CryptoError(Error):
    """Data could not be opened, or is not acceptable once opened.

    A wrong key, a tampered or truncated package, a sealed box that does not
    open, an archive entry that would escape its directory. ``code`` names the
    failure for programs (e.g. ``package.truncated``); ``str()`` is one line.
    """

    code = "crypto"

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class FetchError(Error):
    """Something could not be fetched (collateral, a peer's certificate).

    The message names the URL (or host:port) and the reason.
    """

    code = "fetch"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"fetching {url} failed: {reason}")
        self.url = url
        self.reason = reason


class JsonError(Error):
    """A JSON document is not strict JSON (see :mod:`confide.strictjson`)."""

    code = "json"


class WireError(Error):
    """A body does not have the shape its :mod:`confide.wire.api` model says (names the field)."""

    code = "wire"


class LifecycleError(Error):
    """An app's status change that its lifecycle (``confide.operator``'s table) does not allow.

    A bug in the operator, never an answer to a client: it is not mapped to a status code.
    """

    code = "lifecycle"


class ManifestError(Error):
    """A Gramine manifest breaks a rule of :func:`confide.gramine.lint_manifest`.

    ``code`` names the rule for programs (e.g. ``gramine.debug``); ``str()`` is one
    line saying what was found, what is expected and what to do.
    """

    code = "gramine"

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class OperatorError(Error):
    """The operator could not be reached, refused a call, or answered nonsense.

    ``code`` names the case for programs (e.g. ``operator.unauthorized``);
    ``status`` is the HTTP status when there was an answer; ``url`` the
    operator's URL; ``limit`` the package size limit when it was the cause.
    """

    code = "operator"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        url: str,
        status: int | None = None,
        limit: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.url = url
        self.status = status
        self.limit = limit


class TeeError(Error):
    """The local TEE could not produce a quote or a sealing key."""

    code = "tee"


class TsmError(TeeError):
    """The kernel's configfs-tsm report interface failed us (a TDX guest's quotes).

    ``code`` is stable (e.g. ``tsm.provider``, ``tsm.generation``); ``observed``
    and ``expected`` are the values compared, when there are any.
    """

    def __init__(
        self,
        code: str,
        check: str,
        *,
        observed: object = None,
        expected: object = None,
        hint: str | None = None,
    ) -> None:
        message = check
        if observed is not None or expected is not None:
            message = f"{check}: observed {observed}, expected {expected}"
        super().__init__(message, hint=hint)
        self.code = code
        self.check = check
        self.observed = observed
        self.expected = expected


class AttestationError(Error):
    """The evidence is not acceptable.

    ``code`` names the failed check for programs; ``check`` says it in words;
    ``observed`` and ``expected`` are the values compared, when there are any.
    """

    def __init__(
        self,
        code: str,
        check: str,
        *,
        observed: object = None,
        expected: object = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        parts = [check]
        if observed is not None or expected is not None:
            parts.append(f"observed {_show(observed)}, expected {_show(expected)}")
        if detail:
            parts.append(detail)
        super().__init__(": ".join(parts), hint=hint)
        self.code = code
        self.check = check
        self.observed = observed
        self.expected = expected
        self.detail = detail
        #: The checks that passed before this one failed (set by the verifier).
        self.checks: tuple[object, ...] = ()


class FormatError(AttestationError):
    """A quote, certificate or collateral item is malformed."""


class CertificateError(AttestationError):
    """A certificate chain, signature, validity window or trust anchor check failed."""


class RevocationError(AttestationError):
    """A certificate in the chain is listed in a CRL."""


class CollateralError(AttestationError):
    """TCB info, QE identity or a CRL does not fit the quote or is outside its window."""


class SignatureError(AttestationError):
    """A quote or QE report signature, or a hash binding, does not hold."""


class TcbError(AttestationError):
    """No TCB level matches the platform, or its TCB is revoked."""


class SimulationError(AttestationError):
    """The quote comes from a simulated TEE and simulation was not explicitly allowed."""


class PolicyError(AttestationError):
    """Verified evidence does not match what the caller expects."""


class ReleaseError(AttestationError):
    """No release statement signed by the expected owner holds for this code now.

    Its envelope is malformed or signed by another key, it is about another
    fingerprint, outside its validity window, or revoked (``release.*`` codes).
    """


class LogError(AttestationError):
    """A transparency log's checkpoint, inclusion or consistency proof does not hold.

    A checkpoint not signed by the log's key or of another origin, a statement
    the log does not include, or a log that is not an extension of the one this
    client saw before (``log.*`` codes).
    """


class FreshnessError(AttestationError):
    """A challenge answer does not prove the enclave answered now, on this connection.

    Not TLS 1.3, another enclave's quote, or a report data for another nonce,
    another connection, or neither (``fresh.*`` codes, ADR 0021).
    """


def _show(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple | frozenset | set):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)
