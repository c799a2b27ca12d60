"""``gramine-sgx-sigstruct-view`` stand-in: Gramine's field names and formats."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._sigstruct import FLAGS_MASK, MISC_MASK, XFRM_MASK, Sigstruct, SigstructError

_VERBOSE_ONLY = (
    "attribute_flags",
    "attribute_xfrms",
    "misc_select",
    "attribute_flags_mask",
    "attribute_xfrm_mask",
    "misc_mask",
    "date",
)


def fields(sig: Sigstruct, *, verbose: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mr_signer": sig.mr_signer.hex(),
        "mr_enclave": sig.enclave_hash.hex(),
        "isv_prod_id": sig.isv_prod_id,
        "isv_svn": sig.isv_svn,
        "attribute_flags": hex(sig.attribute_flags),
        "attribute_xfrms": hex(sig.attribute_xfrms),
        "misc_select": hex(sig.misc_select),
        "attribute_flags_mask": hex(FLAGS_MASK),
        "attribute_xfrm_mask": hex(XFRM_MASK),
        "misc_mask": hex(MISC_MASK),
        "date": sig.date.isoformat(),
        "debug_enclave": sig.debug,
    }
    if not verbose:
        for key in _VERBOSE_ONLY:
            del out[key]
    return out


def render(values: dict[str, Any], output_format: str) -> str:
    if output_format == "json":
        return json.dumps(values, indent=4) + "\n"
    if output_format == "toml":
        return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    return "Attributes:\n" + "".join(
        f"    {k}: {str(v) if not isinstance(v, bool) else str(v)}\n" for k, v in values.items()
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gramine-sgx-sigstruct-view")
    p.add_argument("sigfile", type=Path)
    p.add_argument("--verbose", "-v", dest="verbose", action="store_true", default=False)
    p.add_argument("--quiet", "-q", dest="verbose", action="store_false")
    p.add_argument("--output-format", choices=("text", "toml", "json"), default="text")
    args = p.parse_args(argv)
    try:
        sig = Sigstruct.from_bytes(args.sigfile.read_bytes())
    except (OSError, SigstructError) as exc:
        print(f"gramine-sgx-sigstruct-view: error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render(fields(sig, verbose=args.verbose), args.output_format))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
