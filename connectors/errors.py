"""What can go wrong when talking to an app, as one family of exceptions.

Every failure a connector raises is an `AppError` that names the app, the HTTP status, the app's own error
code, its message, and the request (method and URL, with secret-looking query values redacted). `retriable`
says whether trying the very same request again can succeed; `connectors.http` is the only place that acts on
it. Messages never carry tokens, secrets or Authorization headers: they are built from the app's error body
and the request line only.
"""

from __future__ import annotations

import re

import httpx

# Query parameters whose values must not reach messages or logs (e.g. `access_token=…` on some APIs).
_SECRET_PARAM = re.compile(r"token|secret|password|passwd|api[-_]?key|apikey|signature|^code$|^sig$|auth", re.I)
_REDACTED = "REDACTED"


def safe_url(url: httpx.URL | str) -> str:
    """The URL with userinfo dropped and the values of secret-looking query parameters redacted."""
    url = httpx.URL(url)
    if url.userinfo:
        url = url.copy_with(username=None, password=None)
    if not url.query:
        return str(url)
    params = [(k, _REDACTED if _SECRET_PARAM.search(k) else v) for k, v in url.params.multi_items()]
    return str(url.copy_with(params=params))


class AppError(Exception):
    """A request to an app failed. Subclasses say how; `retriable` says whether to try again, and `retry_after`
    (seconds) how long the app asked us to wait first, if it said."""

    retriable_by_default = False

    def __init__(
        self,
        app: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        method: str | None = None,
        url: httpx.URL | str | None = None,
        retriable: bool | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
    ):
        self.app = app
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.method = method
        self.url = safe_url(url) if url is not None else None
        self.retriable = self.retriable_by_default if retriable is None else retriable
        self.retry_after = retry_after  # the app's requested wait in seconds (Retry-After), if it gave one
        super().__init__(str(self))

    @property
    def path(self) -> str | None:
        return httpx.URL(self.url).path if self.url else None

    def __str__(self) -> str:
        head = " ".join(part for part in (self.app, str(self.status) if self.status else None) if part)
        code = f" [{self.code}]" if self.code else ""
        detail = f": {self.detail}" if self.detail and self.detail != self.message else ""
        where = f" ({self.method} {self.path})" if self.method and self.url else ""
        return f"{head}{code} {self.message}{detail}{where}"

    def __reduce__(self):  # keep errors picklable across process pools despite keyword-only arguments
        return _rebuild, (type(self), self.__dict__.copy())


def _rebuild(cls: type[AppError], state: dict) -> AppError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, str(error))
    return error


class AuthenticationError(AppError):
    """401, or a refresh token the app no longer accepts (invalid_grant): the connection needs re-authorising."""


class PermissionDenied(AppError):
    """403: the credentials are valid but may not do this."""


class NotFound(AppError):
    """404 (or QuickBooks Fault 610): the record does not exist."""


class RateLimited(AppError):
    """429 (or an app's own throttle signal). `retry_after` is the app's requested wait in seconds, if it gave one."""

    retriable_by_default = True


class Conflict(AppError):
    """The record changed under us: QuickBooks 5010 (stale SyncToken), Sequence 409 (stale balanceVersion).
    Re-read, then decide again; blindly re-sending cannot succeed."""


class ValidationFailed(AppError):
    """400/422: the app refused the request as invalid. Sending it again gives the same answer."""


class ServerError(AppError):
    """5xx. 500/502/503/504 are transient and retriable; others (501, 505…) are not."""

    def __init__(self, app: str, message: str, **kwargs):
        if kwargs.get("retriable") is None:
            kwargs["retriable"] = kwargs.get("status") in RETRIABLE_SERVER_STATUSES
        super().__init__(app, message, **kwargs)


class TransportFailure(AppError):
    """The exchange broke below HTTP: connection refused or reset, timeout, a body cut short. `exception` is the
    underlying httpx exception (also chained as `__cause__`)."""

    retriable_by_default = True

    def __init__(self, app: str, message: str, *, exception: BaseException | None = None, **kwargs):
        self.exception = exception
        super().__init__(app, message, **kwargs)


class BadResponse(AppError):
    """The app answered success but the body is not what was expected (not JSON, cut short, wrong shape).
    Retriable when the body does not parse (likely damaged in transit), not when it parses to the wrong shape."""


RETRIABLE_SERVER_STATUSES = frozenset({500, 502, 503, 504})


def error_class_for_status(status: int) -> type[AppError]:
    """The generic mapping from HTTP status to error class; apps refine it with their own error codes."""
    if status == 401:
        return AuthenticationError
    if status == 403:
        return PermissionDenied
    if status in (404, 410):
        return NotFound
    if status == 409:
        return Conflict
    if status == 429:
        return RateLimited
    if status in (400, 422):
        return ValidationFailed
    if status >= 500:
        return ServerError
    return AppError
