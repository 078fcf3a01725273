"""Errors that map to an HTTP status, so every layer (worker, Lambda, front door) answers alike."""

from __future__ import annotations


class InferenceError(Exception):
    """Base: carries the HTTP status the client should see and a message that names the problem."""

    status: int = 500

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class BadRequest(InferenceError):
    status = 400


class ModelNotFound(InferenceError):
    status = 404


class PayloadTooLarge(InferenceError):
    status = 413


class Overloaded(InferenceError):
    """The queue is at its bound: the client should retry after ``retry_after_s``."""

    status = 503


class ModelFailed(InferenceError):
    status = 500
