"""Benchmark: code package encryption and decryption, MB/s, against raw libsodium secretstream.

Both sides process the same in-memory bytes (256 MiB by default) in the same
run: "raw" is a bare loop of ``crypto_secretstream_xchacha20poly1305_push`` /
``pull`` over 64 KiB chunks (the same chunk size, no header, no framing
checks, no file objects); "confide" is :func:`confide.crypto.encrypt_stream`
/ :func:`confide.crypto.decrypt_stream` between file objects. Rounds alternate
between the two so machine noise hits both; the best round of each is
reported, with the ratio confide / raw (target: at least 0.8).

Run: ``.venv/bin/python bench/bench_package.py`` (``--mib 64 --rounds 3`` for a quick look).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from collections.abc import Callable

from nacl.bindings import (
    crypto_secretstream_xchacha20poly1305_init_pull,
    crypto_secretstream_xchacha20poly1305_init_push,
    crypto_secretstream_xchacha20poly1305_pull,
    crypto_secretstream_xchacha20poly1305_push,
    crypto_secretstream_xchacha20poly1305_state,
    crypto_secretstream_xchacha20poly1305_TAG_FINAL,
    crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
)

from confide.crypto import CHUNK_SIZE, PackageKey, decrypt_stream, encrypt_stream

_MIB = 1024 * 1024


class _Sink:
    """Discards what is written, as a fast disk would take it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.size += len(data)
        return len(data)


def _raw_encrypt(data: bytes, key: bytes, out: Callable[[bytes], object]) -> None:
    state = crypto_secretstream_xchacha20poly1305_state()
    out(crypto_secretstream_xchacha20poly1305_init_push(state, key))
    view = memoryview(data)
    last = len(data) - CHUNK_SIZE
    for i in range(0, len(data), CHUNK_SIZE):
        tag = (
            crypto_secretstream_xchacha20poly1305_TAG_FINAL
            if i >= last
            else crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
        )
        out(
            crypto_secretstream_xchacha20poly1305_push(
                state, bytes(view[i : i + CHUNK_SIZE]), None, tag
            )
        )


def _raw_decrypt(chunks: list[bytes], key: bytes) -> int:
    state = crypto_secretstream_xchacha20poly1305_state()
    crypto_secretstream_xchacha20poly1305_init_pull(state, chunks[0], key)
    total = 0
    for chunk in chunks[1:]:
        plain, _ = crypto_secretstream_xchacha20poly1305_pull(state, chunk, None)
        total += len(plain)
    return total


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="bytes to process, in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    size = args.mib * _MIB
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    key = PackageKey.generate()
    raw_key = key.secret
    package = io.BytesIO()
    encrypt_stream(io.BytesIO(data), package, key)
    ciphertext = package.getvalue()
    raw_chunks: list[bytes] = []
    _raw_encrypt(data, raw_key, raw_chunks.append)

    best: dict[str, float] = {}

    def record(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    for _ in range(args.rounds):
        record("raw_encrypt", _timed(lambda: _raw_encrypt(data, raw_key, _Sink().write)))
        record("confide_encrypt", _timed(lambda: encrypt_stream(io.BytesIO(data), _Sink(), key)))
        record("raw_decrypt", _timed(lambda: _raw_decrypt(raw_chunks, raw_key)))
        record(
            "confide_decrypt",
            _timed(lambda: decrypt_stream(io.BytesIO(ciphertext), _Sink(), key)),
        )

    rate = {name: size / _MIB / seconds for name, seconds in best.items()}
    figures = {
        "mib": args.mib,
        "chunk_size": CHUNK_SIZE,
        "python": platform.python_version(),
        "mb_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_encrypt": round(rate["confide_encrypt"] / rate["raw_encrypt"], 3),
        "ratio_decrypt": round(rate["confide_decrypt"] / rate["raw_decrypt"], 3),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{args.mib} MiB in {CHUNK_SIZE // 1024} KiB chunks, best of {args.rounds} rounds")
        for op in ("encrypt", "decrypt"):
            ours, raw = rate[f"confide_{op}"], rate[f"raw_{op}"]
            print(
                f"{op:8} confide {ours:8.1f} MiB/s   raw secretstream {raw:8.1f} MiB/s"
                f"   ratio {ours / raw:.2f}"
            )
    ok = figures["ratio_encrypt"] >= 0.8 and figures["ratio_decrypt"] >= 0.8
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
