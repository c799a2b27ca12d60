"""``gramine-sgx-sign`` stand-in (see the package's description)."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from . import _manifest
from ._sigstruct import FLAG_DEBUG, FLAG_MODE64BIT, XFRM, Sigstruct, SigstructError, check_key


def default_key() -> Path:
    """Gramine's default signing key: ``$XDG_CONFIG_HOME/gramine/enclave-key.pem``."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "gramine" / "enclave-key.pem"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gramine-sgx-sign", description="Gramine SIGSTRUCT generator")
    p.add_argument("--manifest", "-m", required=True, type=Path)
    p.add_argument("--output", "-o", required=True, type=Path)
    p.add_argument("--key", "-k", type=Path, default=None)
    p.add_argument("--sigfile", "-s", type=Path, default=None)
    p.add_argument("--date", default="today")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("--verbose", "-v", action="store_true", default=True)
    verbosity.add_argument("--quiet", "-q", action="store_true")
    return p


def _date(value: str) -> datetime.date:
    if value == "today":
        return datetime.date.today()
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise _manifest.ManifestError(
            f"--date must be YYYY-MM-DD or today, got {value!r}"
        ) from None


def sigfile_for(manifest: Path) -> Path:
    """Gramine's default: the manifest's name without ``.manifest``, plus ``.sig``."""
    name = manifest.name.removesuffix(".manifest")
    return manifest.with_name(name + ".sig")


def sign(args: argparse.Namespace) -> Sigstruct:
    from confide.gramine import simulated_mrenclave

    _, manifest = _manifest.read(args.manifest)
    key_path = args.key or default_key()
    try:
        key = check_key(serialization.load_pem_private_key(key_path.read_bytes(), password=None))
    except OSError as exc:
        raise _manifest.ManifestError(f"cannot read the key {key_path}: {exc.strerror}") from None
    sgx = manifest.get("sgx", {})
    for name in ("enclave_size", "max_threads"):
        if name not in sgx:
            raise _manifest.ManifestError(f"sgx.{name} is missing")
    libos = manifest.get("loader", {}).get("entrypoint", {})
    if _manifest.fully_expanded(manifest) and (not libos or "sha256" in libos):
        # Nothing to expand: every hash is given (the signer takes them as they are).
        _manifest.expand_trusted(manifest)
        text = args.manifest.read_text(encoding="utf-8")
    else:
        cache = _manifest.cache_from_environment()
        expanded = _manifest.with_trusted(manifest, _manifest.expand_trusted(manifest, cache))
        if libos and "sha256" not in libos:
            # The LibOS is hashed too (loader.entrypoint.sha256), and checked at start.
            expanded["loader"]["entrypoint"]["sha256"] = _manifest.libos_sha256(manifest, cache)
        text = _manifest.dumps(expanded)
        if cache is not None:
            cache.save()
    mrenclave = simulated_mrenclave(text)
    flags = FLAG_MODE64BIT | (FLAG_DEBUG if sgx.get("debug", False) else 0)
    unsigned = Sigstruct(
        enclave_hash=mrenclave,
        modulus=0,
        signature=0,
        date=_date(args.date),
        attribute_flags=flags,
        attribute_xfrms=XFRM,
        isv_prod_id=int(sgx.get("isvprodid", 0)),
        isv_svn=int(sgx.get("isvsvn", 0)),
    )
    sigstruct = unsigned.signed_with(key)
    _write(args.output, text.encode("utf-8"))
    _write(args.sigfile or sigfile_for(args.manifest), sigstruct.to_bytes())
    if not args.quiet:
        print("Measurement:")
        print(f"    {mrenclave.hex()}")
    return sigstruct


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        sign(args)
    except (_manifest.ManifestError, SigstructError) as exc:
        print(f"gramine-sgx-sign: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
