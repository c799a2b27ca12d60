"""The transparency log's routes, under ``/api/v1/log`` (ADR 0019).

Reads need no token: app users check releases without an account.

- ``GET /log``: ``{"origin", "log_key", "checkpoint"}``: the log's origin, its
  verifier key (``<name>+<hash>+<base64>``) and its latest checkpoint (a C2SP
  signed note, as a string);
- ``GET /log/entries?start=S&end=E``: ``{"entries": [{"index", "envelope"}]}``,
  the leaves ``S <= index < E`` (at most 256), each envelope base64;
- ``GET /log/consistency?first=M&second=N``: ``{"proof": [base64, ...]}``;
- ``GET /log/fingerprints/{hex}?since=M``: ``{"checkpoint", "entries":
  [{"index", "envelope", "proof"}], "consistency"}``: the statements about a
  fingerprint with their inclusion proofs at the latest checkpoint, and the
  consistency proof from size ``M`` to it (one round trip for a verifier);
- ``POST /log/statements`` (token): ``{"envelope": "<DSSE JSON>", "owner_key":
  "ed25519:..."}`` answered 201 ``{"index", "checkpoint", "proof"}``; 422
  names the refused field.
"""

# No ``from __future__ import annotations``: FastAPI reads the annotations at definition time.
import base64
import re
from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from confide import strictjson
from confide.errors import JsonError
from confide.release import MAX_ENVELOPE_SIZE

from ._db import AuthenticatedToken
from ._translog import MAX_PAGE, LogRefused, TransparencyLog, encode_hashes

#: Largest ``POST /log/statements`` body: the envelope as a JSON string, escaped, and the key.
MAX_STATEMENT_BODY: Final = 2 * MAX_ENVELOPE_SIZE + 1024
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")


def _invalid(loc: str, field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": (loc, field), "msg": message, "input": None}]
    )


def log_router(log: TransparencyLog, authenticate: Callable[..., AuthenticatedToken]) -> APIRouter:
    """The log's routes, on ``log``; ``authenticate`` is the API's token dependency."""
    Auth = Annotated[AuthenticatedToken, Depends(authenticate)]
    router = APIRouter(prefix="/log", tags=["log"])

    @router.get("")
    def info() -> dict[str, Any]:
        """No authentication. The log's origin, verifier key and latest checkpoint."""
        note = log.checkpoint()
        return {"origin": log.origin, "log_key": log.verifier_text, "checkpoint": note.decode()}

    @router.get("/entries")
    def entries(
        start: Annotated[int, Query(ge=0)], end: Annotated[int, Query(ge=0)]
    ) -> dict[str, Any]:
        """No authentication. The leaves ``start <= index < end``."""
        if end - start > MAX_PAGE or end < start:
            raise _invalid("query", "end", f"ask for 0 to {MAX_PAGE} entries")
        rows = log.entries(start, end)
        return {
            "entries": [
                {"index": i, "envelope": base64.b64encode(leaf).decode("ascii")} for i, leaf in rows
            ]
        }

    @router.get("/consistency")
    def consistency(
        first: Annotated[int, Query(ge=0)], second: Annotated[int, Query(ge=0)]
    ) -> dict[str, Any]:
        """No authentication. The consistency proof from size ``first`` to size ``second``."""
        try:
            return {"proof": encode_hashes(log.consistency(first, second))}
        except LogRefused as exc:
            raise _invalid("query", exc.field, str(exc)) from None

    @router.get("/fingerprints/{fingerprint}")
    def about(
        fingerprint: Annotated[str, Path(min_length=64, max_length=64)],
        since: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """No authentication. What the log holds about one launch fingerprint (lowercase hex)."""
        if not _HEX64.match(fingerprint):
            raise _invalid("path", "fingerprint", "64 lowercase hex digits")
        try:
            found = log.about(bytes.fromhex(fingerprint), since)
        except LogRefused as exc:
            raise _invalid("query", exc.field, str(exc)) from None
        return {
            "checkpoint": found.checkpoint.decode(),
            "entries": [
                {
                    "index": i,
                    "envelope": base64.b64encode(leaf).decode("ascii"),
                    "proof": encode_hashes(proof),
                }
                for i, leaf, proof in found.entries
            ],
            "consistency": encode_hashes(found.consistency),
        }

    @router.post("/statements", status_code=status.HTTP_201_CREATED)
    async def append(request: Request, auth: Auth) -> dict[str, Any]:
        """Log a release or revocation statement signed by ``owner_key``.

        The body is read only now, after authentication, and bounded.
        """
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_STATEMENT_BODY:
                raise _invalid("body", "envelope", f"the body is over {MAX_STATEMENT_BODY} bytes")
        try:
            doc = strictjson.loads_object(body, what="the body", max_bytes=MAX_STATEMENT_BODY)
        except JsonError as exc:
            raise _invalid("body", "envelope", str(exc)) from None
        envelope, owner_key = doc.get("envelope"), doc.get("owner_key")
        if set(doc) != {"envelope", "owner_key"} or not isinstance(envelope, str):
            raise _invalid("body", "envelope", "the body is {envelope: string, owner_key: string}")
        if not isinstance(owner_key, str):
            raise _invalid("body", "owner_key", "the owner key is a string ed25519:BASE64")
        try:
            done = await run_in_threadpool(log.append, auth, envelope.encode(), owner_key)
        except LogRefused as exc:
            raise _invalid("body", exc.field, str(exc)) from None
        return {
            "index": done.index,
            "checkpoint": done.checkpoint.decode(),
            "proof": encode_hashes(done.proof),
        }

    return router
