"""Bearer-token authentication of API requests, before anything else happens.

:class:`Authenticator` is a FastAPI dependency. FastAPI resolves dependencies
before it calls the endpoint, and the endpoints that take an upload parse
their body themselves, after this dependency ran: an unauthenticated request
never gets a byte of its body stored, not even in a temporary file.

Missing, malformed, unknown and revoked tokens all get the same 401 with
``WWW-Authenticate: Bearer``, so a caller learns nothing about which it was.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ._db import AuthenticatedToken, Database, authenticate_token
from ._seams import Clock

_UNAUTHORIZED: Final = "a valid API token is required (Authorization: Bearer cfd_...)"

# auto_error=False: we answer 401 (FastAPI's own would be 403 for a missing header).
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `confide operator token create`.",
)


def unauthorized() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=_UNAUTHORIZED,
        headers={"WWW-Authenticate": "Bearer"},
    )


class Authenticator:
    """Resolves ``Authorization: Bearer <token>`` to an :class:`AuthenticatedToken`, or 401."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._database = database
        self._clock = clock

    def __call__(
        self,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> AuthenticatedToken:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise unauthorized()
        with self._database.session() as session:
            found = authenticate_token(session, credentials.credentials, now=self._clock())
        if found is None:
            raise unauthorized()
        return found
