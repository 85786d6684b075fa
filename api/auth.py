"""Bearer-token checks as FastAPI dependencies: 401 without a known token, 403 without the route's scope.

Without a tokens file the API listens on loopback only and every request passes (api.server says so in its log).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import FORBIDDEN, UNAUTHORIZED, ApiError
from api.tokens import TokenTable, allows

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="partsight"'}
bearer = HTTPBearer(auto_error=False, description="a token from PARTSIGHT_API_TOKENS_FILE")

Check = Callable[[HTTPAuthorizationCredentials | None], Awaitable[None]]


class Auth:
    def __init__(self, tokens: TokenTable | None) -> None:
        self.tokens = tokens

    def require(self, scope: str | None) -> Check:
        """A dependency that lets a request through with a token granting `scope` (None: any known token)."""
        tokens = self.tokens

        async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> None:
            if tokens is None:
                return  # loopback only, no tokens: every local caller is trusted
            if credentials is None:
                raise ApiError(401, UNAUTHORIZED, "send an Authorization: Bearer <token> header", CHALLENGE)
            scopes = tokens.scopes_of(credentials.credentials)
            if scopes is None:
                raise ApiError(401, UNAUTHORIZED, "unknown token", CHALLENGE)
            if not allows(scopes, scope):
                raise ApiError(
                    403, FORBIDDEN, f"this token lacks the {scope!r} scope (it has {', '.join(sorted(scopes))})"
                )

        return check
