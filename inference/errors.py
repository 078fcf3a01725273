"""Errors that map to an HTTP status, so every layer (worker, Lambda, front door) answers alike."""

from __future__ import annotations


class InferenceError(Exception):
    """Base: carries the HTTP status the client should see and a message that names the problem.

    ``headers`` are extra response headers the status needs (``Allow`` on 405, ``WWW-Authenticate``
    on 401); ``Retry-After`` comes from ``retry_after_s``.
    """

    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers = headers


class BadRequest(InferenceError):
    status = 400


class Unauthorized(InferenceError):
    status = 401


class ModelNotFound(InferenceError):
    status = 404


class NoRoute(InferenceError):
    """The path is not one of the KServe v2 / Triton routes this server has."""

    status = 404


class MethodNotAllowed(InferenceError):
    status = 405


class PayloadTooLarge(InferenceError):
    status = 413


class UnsupportedMediaType(InferenceError):
    """A Content-Encoding the server cannot decode."""

    status = 415


class Overloaded(InferenceError):
    """Not admitted (queue at its bound, draining, still loading): retry after ``retry_after_s``,
    here or elsewhere. Nothing of the request ran, so another server may take it."""

    status = 503


class ModelFailed(InferenceError):
    status = 500
