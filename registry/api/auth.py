"""Bearer-token authentication for the write and auditor routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from registry.api.service import ForbiddenError, RegistryService
from registry.storage.tokens import AuthenticationError, TokenHolder

_bearer = HTTPBearer(auto_error=False, description="qiledger token create ...")


class MissingTokenError(AuthenticationError):
    code = "token_missing"


def service_for(request: Request) -> RegistryService:
    """The app's service. The hottest public reads call this with the request
    instead of declaring the ``Service`` dependency: solving even an async
    dependency costs FastAPI about 40 us a request."""
    service: RegistryService = request.app.state.service
    return service


async def service_of(request: Request) -> RegistryService:
    # async: a sync dependency would cost a thread-pool round trip per request
    return service_for(request)


async def token_holder(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenHolder:
    # async: a sync dependency costs a thread-pool round trip per request, and a
    # token check is a cached digest comparison (a miss, once per token and cache
    # period, is one indexed read).
    if credentials is None:
        raise MissingTokenError("this route needs an API token: Authorization: Bearer <token>")
    service = service_for(request)
    holder = service.tokens.authenticate(credentials.credentials)
    service.rate_limiter.take(holder.token_id)
    return holder


def require(*roles: str) -> Callable[..., Awaitable[TokenHolder]]:
    """A dependency admitting tokens of these roles."""

    async def check(holder: Annotated[TokenHolder, Depends(token_holder)]) -> TokenHolder:
        if holder.role not in roles:
            raise ForbiddenError(f"a {holder.role} token cannot use this route")
        return holder

    return check


Service = Annotated[RegistryService, Depends(service_of)]
