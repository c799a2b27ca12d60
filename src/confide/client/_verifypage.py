"""The verification page ``confide proxy`` serves at ``/.well-known/confide/`` (ADR 0026).

What the proxy verified, shown in the browser the user reaches the app from:
the TEE and whether it is simulated, the TCB status and its advisories, the
measurement and what it was checked against (the fingerprint, the launch
manifest and its names, the owner's release), the certificate's and the
collateral's windows, when it was verified and the fresh challenge (ADR 0021).
A request the proxy refuses to forward (the enclave's certificate does not
verify, or its verification ran out and does not verify again) shows the
verifier's error code and one-line message on the same page for a browser.

One definition: :func:`verification_document` takes every value from the
verifier's result objects (:class:`~confide.client.VerifiedEnclave`, its
:meth:`VerifiedQuote.to_dict <confide.attestation.VerifiedQuote.to_dict>` as
``confide verify --json`` prints it, :func:`~confide.client.release_summary`),
never recomputed; it is served as is at ``verification.json``, and
:func:`render_page` only lays it out, escaping every value (an app, an
operator and an owner choose some of them: names, release labels, error
texts). The page carries no script, and only a style sheet shipped in this
package (:data:`STYLE_PATH`), under a Content-Security-Policy that allows
nothing else (:data:`PAGE_HEADERS`).

The page is not a trust anchor: it is served on the app's own origin, so a
page of the app can read it or draw a copy of it. The page says so, and names
the terminal where ``confide proxy`` runs as what to rely on.

Example::

    >>> document = verification_document(policy, verified, now=now)  # doctest: +SKIP
    >>> html = render_page(document)  # doctest: +SKIP
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final
from urllib.parse import unquote

from cryptography.hazmat.primitives import hashes

from ._releases import release_summary
from ._verify import EnclavePolicy, VerifiedEnclave

#: Every path under this prefix is the proxy's own; none is forwarded to the app.
PAGE_PREFIX: Final = "/.well-known/confide"
PAGE_PATH: Final = PAGE_PREFIX + "/"
JSON_PATH: Final = PAGE_PREFIX + "/verification.json"
STYLE_PATH: Final = PAGE_PREFIX + "/style.css"
#: The version of the JSON document's layout.
DOCUMENT_FORMAT: Final = "confide-verification-v1"
#: The one script-free, frame-free policy of every answer the proxy makes itself: only
#: this origin's style sheet and images, no form target, no base, never in a frame.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
#: Headers of every answer the proxy makes itself (``Cache-Control: no-store`` is
#: :func:`~confide.runtime.send_response`'s).
PAGE_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
#: Longest error message shown (the verifier's one line, cut).
MAX_MESSAGE: Final = 2000
#: The statuses of the document.
VERIFIED: Final = "verified"
NOT_VERIFIED: Final = "not verified"

_STYLE_RESOURCE: Final = "verification.css"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the proxy refused to use the enclave: the verifier's error code and one line."""

    code: str
    message: str
    at: datetime


def is_page_path(path: str) -> bool:
    """Whether ``path`` (percent-decoded, as the browser's request names it) is the proxy's.

    Dot segments are removed first (RFC 3986 §5.2.4), so ``/x/../.well-known/confide/``
    is the proxy's too, never the app's. So is every spelling an app's server or
    framework might take for it (:func:`_loose`): ``//`` or ``\\`` for ``/``, another
    case, ``;params`` on a segment, percent-encoding left after the server's decoding.
    Taking too much only answers 404 for an odd path under the prefix; forwarding one
    would let the app answer in place of the page.
    """
    normal = _loose(path)
    return normal == PAGE_PREFIX or normal.startswith(PAGE_PATH)


#: Rounds of percent-decoding :func:`_loose` undoes (``%25`` nested this deep).
_MAX_DECODING: Final = 4


def _loose(path: str) -> str:
    """``path`` as the most lenient server would read it, for :func:`is_page_path` only."""
    for _ in range(_MAX_DECODING):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/").lower()
    segments = [segment.split(";", 1)[0] for segment in path.split("/")]
    if len(segments) > 2:  # ``a//b`` is ``a/b``; the leading and trailing ones are kept
        segments = [segments[0], *(s for s in segments[1:-1] if s), segments[-1]]
    return remove_dot_segments("/".join(segments))


def remove_dot_segments(path: str) -> str:
    """``path`` without its ``.`` and ``..`` segments (RFC 3986 §5.2.4)."""
    out: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/".join(out)


def wants_html(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the client is a browser asking for a page (``Accept`` names ``text/html``)."""
    return any(key.lower() == b"accept" and b"text/html" in value.lower() for key, value in headers)


def style_sheet() -> bytes:
    """The page's style sheet, shipped in this package (nothing is fetched from elsewhere)."""
    return resources.files(__package__).joinpath(_STYLE_RESOURCE).read_bytes()


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def verification_document(
    policy: EnclavePolicy,
    verified: VerifiedEnclave | None,
    *,
    now: datetime,
    refusal: Refusal | None = None,
) -> dict[str, Any]:
    """What the proxy verified, as the JSON document it serves (``verification.json``).

    ``verified``: the verification in force (``None``: none holds now, then
    ``refusal`` says why). ``refusal`` with ``verified``: the last certificate
    the proxy refused while this verification held. Every value comes from
    ``verified`` and ``policy`` as the verifier made them.
    """
    expected = {
        "name": policy.name,
        "fingerprint": policy.fingerprint.hex() if policy.fingerprint is not None else None,
        "owner_key_id": policy.owner.key_id if policy.owner is not None else None,
        "owner_key": policy.owner.to_text() if policy.owner is not None else None,
        "simulation_allowed": policy.allow_simulation,
        "accepted_tcb_statuses": sorted(policy.checks.accepted_tcb_statuses),
        # A TD's MRTD and RTMR0-2 are checked against these (ADR 0022); none: only a
        # simulated TD verifies, against the simulated guest image's values.
        "td_reference": (
            {
                name: getattr(policy.td_reference, name).hex()
                for name in ("mr_td", "rtmr0", "rtmr1", "rtmr2")
            }
            if policy.td_reference is not None
            else None
        ),
    }
    enclave: dict[str, Any] | None = None
    if verified is not None:
        cert = verified.certificate
        fresh = verified.fresh
        enclave = {
            "quote": verified.quote.to_dict(),
            "name": verified.name,
            "launch": verified.launch.to_dict() if verified.launch is not None else None,
            "certificate": {
                "sha256": cert.fingerprint(hashes.SHA256()).hex(),
                "not_before": _iso(cert.not_valid_before_utc),
                "not_after": _iso(cert.not_valid_after_utc),
            },
            "fresh": (
                {
                    "nonce": fresh.nonce.hex(),
                    "verified_at": _iso(fresh.quote.verified_at),
                    "report_data": fresh.quote.report_data.hex(),
                }
                if fresh is not None
                else None
            ),
            "release": (
                release_summary(verified.release) if verified.release is not None else None
            ),
            "valid_until": _iso(verified.valid_until),
        }
    return {
        "format": DOCUMENT_FORMAT,
        "status": VERIFIED if verified is not None else NOT_VERIFIED,
        "domain": policy.name,
        "shown_at": _iso(now),
        "expected": expected,
        "enclave": enclave,
        "error": (
            {
                "code": refusal.code,
                "message": refusal.message[:MAX_MESSAGE],
                "at": _iso(refusal.at),
            }
            if refusal is not None
            else None
        ),
    }


# -- the page ------------------------------------------------------------------------------


def escape(value: object) -> str:
    """``value`` as HTML text or attribute value: nothing in it can open a tag or a quote."""
    return html.escape(str(value), quote=True)


def _time(value: object) -> str:
    """A document time (ISO text, or UNIX seconds as ``VerifiedQuote.to_dict`` writes them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat()
    return "" if value is None else str(value)


def _rows(rows: Iterable[tuple[str, object]]) -> str:
    cells = "".join(
        f'<tr><th scope="row">{escape(name)}</th><td>{escape(value)}</td></tr>'
        for name, value in rows
        if value is not None and value != ""
    )
    return f'<table class="fields">{cells}</table>'


def _section(title: str, body: str, *, kind: str = "") -> str:
    cls = f' class="{escape(kind)}"' if kind else ""
    return f"<section{cls}><h2>{escape(title)}</h2>{body}</section>"


def _checks(checks: Sequence[Mapping[str, Any]]) -> str:
    rows = "".join(
        f'<tr class="{escape(str(c["outcome"]).replace(" ", "-"))}"><td>{escape(c["name"])}</td>'
        f"<td>{escape(c['outcome'])}</td><td>{escape(c['detail'])}</td></tr>"
        for c in checks
    )
    return (
        '<table class="checks"><thead><tr><th scope="col">check</th><th scope="col">result'
        f'</th><th scope="col">detail</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _expected(expected: Mapping[str, Any]) -> str:
    code = (
        f"the owner's release (owner {expected['owner_key_id']})"
        if expected["owner_key_id"]
        else None
    )
    return _rows(
        [
            ("name launched for", expected["name"]),
            ("fingerprint", expected["fingerprint"]),
            ("code", code),
            ("owner key", expected["owner_key"]),
            ("TCB statuses accepted", ", ".join(expected["accepted_tcb_statuses"])),
            ("TD guest image", _td_image(expected["td_reference"])),
            (
                "simulated TEE",
                "accepted (tests only)" if expected["simulation_allowed"] else "refused",
            ),
        ]
    )


def _td_image(reference: Mapping[str, str] | None) -> str | None:
    if reference is None:  # not a TD, or a simulated one checked against the simulated image
        return None
    return ", ".join(
        f"{name.upper().replace('_', '')} {value}" for name, value in reference.items()
    )


def _enclave(enclave: Mapping[str, Any]) -> str:
    quote = enclave["quote"]
    advisories = ", ".join(quote["advisory_ids"]) or "none"
    tee = str(quote["tee"]).upper() + (
        " (SIMULATED: proves nothing about hardware)" if quote["simulated"] else ""
    )
    parts = [
        _section(
            "The enclave",
            _rows(
                [
                    ("TEE", tee),
                    (
                        "root of trust",
                        "Intel SGX Root CA"
                        if quote["production_root"]
                        else "a simulation root"
                        if quote["simulated"]
                        else "the given root CA",
                    ),
                    ("TCB status", quote["tcb_status"]),
                    ("advisories", advisories),
                    ("platform TCB", quote["platform_tcb_status"]),
                    ("QE TCB", quote["qe_tcb_status"]),
                    (
                        "debug",
                        "yes: its memory is readable by the host"
                        if quote["debug"]
                        else "no (production enclave)",
                    ),
                ]
            ),
        ),
    ]
    launch = enclave["launch"]
    measured = [
        ("MRENCLAVE", quote["mrenclave"]),
        ("MRSIGNER", quote["mrsigner"]),
        ("MRTD", quote["mr_td"]),
        ("RTMR3", quote["rtmr3"]),
        ("name verified", enclave["name"]),
    ]
    if launch is not None:
        measured += [
            ("names it was launched for", ", ".join(launch["san"])),
            ("app id", launch["app_id"]),
            ("application", launch["application"]),
            ("TLS", launch["tls"]),
            ("code package SHA-256", launch["package_sha256"]),
            ("runtime SHA-256", launch["runtime_sha256"]),
        ]
    parts.append(_section("The code it runs (measured)", _rows(measured)))
    release = enclave["release"]
    if release is not None:
        parts.append(
            _section(
                "The owner's release",
                _rows(
                    [
                        ("owner", release["owner_key_id"]),
                        ("owner key", release["owner_key"]),
                        ("version", release["version"]),
                        ("source", release["source_ref"]),
                        ("fingerprint", release["fingerprint"]),
                        ("valid", f"{release['not_before']} to {release['not_after']}"),
                        ("log index", release["log_index"]),
                        (
                            "log checkpoint",
                            f"{release['checkpoint']['origin']} size "
                            f"{release['checkpoint']['size']} root {release['checkpoint']['root']}",
                        ),
                    ]
                ),
            )
        )
    cert = enclave["certificate"]
    fresh = enclave["fresh"]
    parts.append(
        _section(
            "When, and until when",
            _rows(
                [
                    ("verified at", _time(quote["verified_at"])),
                    (
                        "fresh challenge",
                        f"answered at {fresh['verified_at']} for nonce {fresh['nonce']}, on a "
                        "connection pinned to the certificate"
                        if fresh is not None
                        else "none (not asked)",
                    ),
                    ("certificate", f"{cert['not_before']} to {cert['not_after']}"),
                    ("certificate SHA-256", cert["sha256"]),
                    ("collateral and PCK chain valid until", _time(quote["valid_until"])),
                    ("this verification holds until", enclave["valid_until"]),
                ]
            ),
        )
    )
    parts.append(_section("Checks", _checks(quote["checks"])))
    return "".join(parts)


_NOT_AN_ANCHOR: Final = (
    "This page is served by confide proxy on your computer, on the app's own origin: a page "
    "of the app can read it or draw a copy of it, so it is not proof by itself. Rely on the "
    "terminal where you started confide proxy (it printed the same verification, and prints "
    "each new one), or run confide verify."
)


def render_page(document: Mapping[str, Any], *, forwarded_path: str | None = None) -> bytes:
    """The HTML page of ``document`` (:func:`verification_document`); every value escaped.

    ``forwarded_path``: the app's path a refused request asked for (the page then
    says nothing was sent to the app).
    """
    domain = document["domain"] or "the app"
    enclave = document["enclave"]
    error = document["error"]
    if enclave is not None and forwarded_path is None:
        quote = enclave["quote"]
        kind = "a SIMULATED " if quote["simulated"] else "a "
        verdict = (
            f"Verified: {kind}{str(quote['tee']).upper()} enclave runs the expected code "
            f"for {domain}"
        )
        verdict_class = "verdict simulated" if quote["simulated"] else "verdict ok"
    else:
        verdict = f"Not verified: nothing was sent to {domain}"
        verdict_class = "verdict fail"
    body = [
        f'<header class="{verdict_class}"><p class="what">confide proxy: verification of '
        f"{escape(domain)}</p><h1>{escape(verdict)}</h1></header>",
        f'<p class="notice">{escape(_NOT_AN_ANCHOR)}</p>',
    ]
    if error is not None:
        reason = _rows(
            [
                ("error code", error["code"]),
                ("message", error["message"]),
                ("at", error["at"]),
                ("request", forwarded_path),
            ]
        )
        title = (
            "Why it was refused"
            if enclave is None or forwarded_path
            else ("Last refused certificate (the verification below still holds)")
        )
        body.append(_section(title, reason, kind="error"))
    body.append(_section("What it was checked against", _expected(document["expected"])))
    if enclave is not None and forwarded_path is None:
        body.append(_enclave(enclave))
    body.append(
        f"<footer><p>Shown at {escape(document['shown_at'])}. For scripts: "
        f'<a href="{escape(JSON_PATH)}">verification.json</a>; '
        f'<a href="{escape(PAGE_PATH)}">this page again</a>.</p></footer>'
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(verdict)}</title>"
        f'<link rel="stylesheet" href="{escape(STYLE_PATH)}"></head>'
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
    return page.encode()
