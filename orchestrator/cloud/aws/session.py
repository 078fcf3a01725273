"""boto3 sessions and clients for one deployment's ``AwsBackend`` settings (DESIGN.md §4).

Every AWS client of the backend comes from :class:`AwsSession`, so retries, timeouts and the endpoint
are set in one place:

- **Retries**: botocore's ``adaptive`` retry mode (``standard`` retries plus a client-side rate
  limiter that slows down after throttling errors), ``max_attempts`` counting the first call
  (https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html). The backend never
  hand-rolls a retry loop around a call; botocore resends the *same* request, so a retried
  ``RunInstances`` carries the same ``ClientToken`` and creates nothing twice.
- **Endpoint**: ``AwsBackend.endpoint_url`` (LocalStack: ``http://localhost:4566``, or a
  ``moto_server``) overrides every service; without it botocore reads ``AWS_ENDPOINT_URL`` (and the
  per-service ``AWS_ENDPOINT_URL_<SERVICE>``) from the environment by itself, since botocore 1.31.57
  (https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html).
- **Credentials**: the standard chain (environment, ``profile_name``, instance role …); never taken
  from the deployment file, never logged: ``repr`` of a session names region, profile and endpoint only.

IAM actions: none by itself (each client's module lists its own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import boto3
from botocore.config import Config

from orchestrator.config import AwsBackend

log = logging.getLogger(__name__)

RetryMode = Literal["adaptive", "standard", "legacy"]
DEFAULT_MAX_ATTEMPTS = 5  # the first call and up to 4 retries (botocore's standard-mode default is 3)


@dataclass(frozen=True)
class AwsSessionSettings:
    """What a session is built from; no secret lives here (credentials come from the chain).

    ``connect_timeout_s``/``read_timeout_s`` are seconds; ``max_attempts`` counts the first call.
    """

    region: str = "us-east-1"
    endpoint_url: str | None = None
    profile_name: str | None = None
    retry_mode: RetryMode = "adaptive"
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0

    @classmethod
    def from_backend(cls, backend: AwsBackend, **overrides: Any) -> AwsSessionSettings:
        """The settings of a deployment's ``backend`` section (``name: aws``), with ``overrides``."""
        return cls(
            region=backend.region, endpoint_url=backend.endpoint_url, profile_name=backend.profile_name, **overrides
        )


class AwsSession:
    """One boto3 session and its clients, built with the deployment's retry mode and endpoint.

    Clients are cached per service (boto3 clients are thread-safe; sessions are not, so the session
    is only used here, under construction).

    Raises:
        botocore.exceptions.ProfileNotFound: ``profile_name`` is not in the AWS config files.
        ValueError: ``max_attempts`` < 1.
    """

    def __init__(self, settings: AwsSessionSettings) -> None:
        if settings.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {settings.max_attempts}")
        self.settings = settings
        self._session = boto3.session.Session(profile_name=settings.profile_name, region_name=settings.region)
        self.config = Config(
            region_name=settings.region,
            retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
        )
        self._clients: dict[tuple[str, int | None], Any] = {}
        log.debug("aws session: %r", self)

    @classmethod
    def from_backend(cls, backend: AwsBackend, **overrides: Any) -> AwsSession:
        """A session for a deployment's ``backend`` section (see :meth:`AwsSessionSettings.from_backend`)."""
        return cls(AwsSessionSettings.from_backend(backend, **overrides))

    def client(self, service: str, *, max_attempts: int | None = None) -> Any:
        """The cached boto3 client for ``service`` ("ec2", "lambda", "s3", "sqs", …).

        ``max_attempts`` overrides the session's for this client (1: no retry, for a caller with a
        deadline that would rather fail over). The endpoint is ``settings.endpoint_url`` when set,
        else whatever botocore resolves (which honours ``AWS_ENDPOINT_URL``)."""
        key = (service, max_attempts)
        if key not in self._clients:
            config = self.config
            if max_attempts is not None:
                config = config.merge(
                    Config(retries={"mode": self.settings.retry_mode, "total_max_attempts": max_attempts})
                )
            kwargs: dict[str, Any] = {"config": config}
            if self.settings.endpoint_url:
                kwargs["endpoint_url"] = self.settings.endpoint_url
            self._clients[key] = self._session.client(service, **kwargs)  # type: ignore[call-overload]
        return self._clients[key]

    def __repr__(self) -> str:  # never the credentials: region, profile, endpoint and retry policy only
        s = self.settings
        return (
            f"AwsSession(region={s.region!r}, profile={s.profile_name!r}, endpoint={s.endpoint_url!r}, "
            f"retries={s.retry_mode}/{s.max_attempts})"
        )

    __str__ = __repr__
