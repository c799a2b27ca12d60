"""Names on the wire: the patterns of app names, applications, domains and health checks,
RFC 6125 name matching, and whether a private key is a certificate's."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

#: One lower-case DNS label, unanchored: 1 to 63 letters, digits and inner hyphens.
DNS_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
#: An app, project or plan name: 1 to 63 lower-case letters, digits and inner hyphens or
#: underscores (Cosmian's names, such as ``merge_join``). Never a domain name: an app's domain
#: is derived from its id (``<app id>.<base domain>``), never from its name.
NAME_PATTERN: Final = r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$"
NAME_LENGTH: Final = 63
#: The app as ``module[.module...]:attribute`` (ASCII identifiers).
APPLICATION_PATTERN: Final = (
    r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
)
APPLICATION_LENGTH: Final = 255
#: An owner's domain: lower-case DNS labels, at least two, the last not starting with a digit.
DOMAIN_PATTERN: Final = rf"^(?:{DNS_LABEL}\.)+[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?$"
DOMAIN_LENGTH: Final = 253
#: The path (and query) the operator probes once the app is up.
HEALTHCHECK_PATTERN: Final = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$"
HEALTHCHECK_LENGTH: Final = 255
#: Most certificates in an owner's chain (``tls: owner``), leaf first.
MAX_CERTIFICATE_CHAIN: Final = 8


def dns_name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 §6.4.3, case-insensitive: ``pattern`` (a certificate's DNS name) is ``name``,
    or ``*.rest`` whose wildcard stands for exactly one whole left-most label of ``name``."""
    pattern, name = pattern.lower(), name.lower()
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    head, _, rest = name.partition(".")
    return bool(head) and rest == pattern[2:]


def uncovered_names(cert: x509.Certificate, names: Iterable[str]) -> list[str]:
    """The names of ``names`` that ``cert``'s SAN extension does not cover (DNS names by
    :func:`dns_name_matches`, IP addresses exactly)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return list(names)
    dns = san.get_values_for_type(x509.DNSName)
    ips = set(san.get_values_for_type(x509.IPAddress))
    missing = []
    for name in names:
        try:
            covered = ipaddress.ip_address(name) in ips
        except ValueError:
            covered = any(dns_name_matches(pattern, name) for pattern in dns)
        if not covered:
            missing.append(name)
    return missing


def key_matches_certificate(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """Whether ``key`` is the private half of ``cert``'s public key (their SPKIs are equal).

    Raises ``ValueError`` or ``UnsupportedAlgorithm`` for a certificate key it cannot encode.
    """
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)
