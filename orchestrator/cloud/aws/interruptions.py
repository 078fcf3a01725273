"""Spot interruption and rebalance notices: EventBridge → SQS for the controller, and the instance
metadata document the worker polls (DESIGN.md §3 "Spot").

EC2 emits **"EC2 Spot Instance Interruption Warning"** two minutes before it stops or terminates a
spot instance (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html),
with ``detail.instance-id`` and ``detail.instance-action`` (``terminate``, ``stop`` or ``hibernate``);
and **"EC2 Instance Rebalance Recommendation"** (``detail.instance-id`` only) when the instance is at
elevated risk of interruption, possibly well before a warning
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html). An EventBridge
rule (``source: aws.ec2``, those two detail types) targets an SQS queue, whose message body is the
event JSON (an SNS hop wraps it in ``{"Type": "Notification", "Message": "<event>"}``; both are read).

On the instance the same warning appears at ``http://169.254.169.254/latest/meta-data/spot/instance-action``
as ``{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`` (404 until then; AWS recommends
polling every 5 seconds): :func:`parse_instance_action` reads it.

A malformed or unrelated message is logged and deleted, never raised: a bad message must not stop
the controller nor come back forever (for inspection, give the queue a dead-letter queue).

IAM actions: ``sqs:ReceiveMessage``, ``sqs:DeleteMessage`` (the batch call needs the same action) on
the interruption queue. The queue policy must let ``events.amazonaws.com`` ``sqs:SendMessage``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.cloud.base import InterruptionNotice

log = logging.getLogger(__name__)

SPOT_NOTICE_S = 120.0  # the warning comes two minutes before the interruption (AWS docs above)
INTERRUPTION_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE_RECOMMENDATION = "EC2 Instance Rebalance Recommendation"
SQS_MAX_WAIT_S = 20  # ReceiveMessage's longest long poll
SQS_MAX_MESSAGES = 10  # ReceiveMessage's largest batch


class MalformedEvent(ValueError):
    """A message that is not an EC2 spot interruption or rebalance event we can read."""


@dataclass(frozen=True)
class SpotInterruption:
    """A spot interruption warning: ``action`` (terminate/stop/hibernate) at ``terminate_at``.

    Times are Unix seconds (UTC)."""

    instance_id: str
    action: str
    noticed_at: float
    terminate_at: float

    def notice(self) -> InterruptionNotice:
        return InterruptionNotice(self.instance_id, self.noticed_at, self.terminate_at)


@dataclass(frozen=True)
class RebalanceRecommendation:
    """The instance is at elevated risk of interruption (no deadline): replace it when convenient."""

    instance_id: str
    noticed_at: float


SpotEvent = SpotInterruption | RebalanceRecommendation


def _timestamp(value: Any, what: str) -> float:
    if not isinstance(value, str):
        raise MalformedEvent(f"{what}: expected an ISO 8601 time, got {type(value).__name__}")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as e:
        raise MalformedEvent(f"{what}: {value!r} is not an ISO 8601 time") from e


def parse_event(body: str | bytes | dict[str, Any]) -> SpotEvent | None:
    """The spot event in an EventBridge event (or an SNS notification wrapping one).

    Returns None for a well-formed event of another kind (the rule may route more than ours).

    Raises:
        MalformedEvent: not JSON, not an event, or a spot event missing its instance id or time.
    """
    try:
        event = json.loads(body) if isinstance(body, str | bytes) else body
    except ValueError as e:
        raise MalformedEvent(f"not JSON: {e}") from e
    if not isinstance(event, dict):
        raise MalformedEvent("not a JSON object")
    if event.get("Type") == "Notification" and isinstance(event.get("Message"), str):
        return parse_event(event["Message"])
    kind = event.get("detail-type")
    if not isinstance(kind, str):
        raise MalformedEvent("no detail-type: not an EventBridge event")
    if kind not in (INTERRUPTION_WARNING, REBALANCE_RECOMMENDATION):
        return None
    detail = event.get("detail")
    if not isinstance(detail, dict) or not isinstance(detail.get("instance-id"), str) or not detail["instance-id"]:
        raise MalformedEvent(f"{kind}: no detail.instance-id")
    at = _timestamp(event.get("time"), f"{kind}: time")
    if kind == REBALANCE_RECOMMENDATION:
        return RebalanceRecommendation(detail["instance-id"], at)
    action = detail.get("instance-action")
    if not isinstance(action, str):
        raise MalformedEvent(f"{kind}: no detail.instance-action")
    return SpotInterruption(detail["instance-id"], action, at, at + SPOT_NOTICE_S)


def parse_instance_action(document: str | bytes, instance_id: str) -> SpotInterruption:
    """The instance-metadata ``spot/instance-action`` document, e.g.
    ``{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`` (``time``: when the action happens,
    UTC). ``noticed_at`` is taken as two minutes before it.

    Raises:
        MalformedEvent: not that document.
    """
    try:
        doc = json.loads(document)
    except ValueError as e:
        raise MalformedEvent(f"instance-action: not JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("action"), str):
        raise MalformedEvent("instance-action: expected {'action': ..., 'time': ...}")
    at = _timestamp(doc.get("time"), "instance-action: time")
    return SpotInterruption(instance_id, doc["action"], at - SPOT_NOTICE_S, at)


class InterruptionQueue:
    """Reads spot events from the SQS queue an EventBridge rule feeds.

    ``wait_s`` is the long-poll time in seconds (0..20; 0 = short poll, for a caller that must not
    block). Messages are deleted once read, malformed ones included (logged)."""

    def __init__(self, sqs: Any, queue_url: str, wait_s: int = SQS_MAX_WAIT_S) -> None:
        if not 0 <= wait_s <= SQS_MAX_WAIT_S:
            raise ValueError(f"wait_s must be 0..{SQS_MAX_WAIT_S}, got {wait_s}")
        self.sqs = sqs
        self.queue_url = queue_url
        self.wait_s = wait_s
        self.malformed = 0  # messages dropped as unreadable, for metrics

    def poll(self, wait_s: int | None = None) -> list[SpotEvent]:
        """One ``ReceiveMessage`` (up to 10 messages, long poll ``wait_s``), each parsed and deleted.

        Raises:
            botocore.exceptions.ClientError: SQS refused (after botocore's retries); nothing was deleted.
        """
        out = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=SQS_MAX_MESSAGES,
            WaitTimeSeconds=self.wait_s if wait_s is None else wait_s,
        )
        events: list[SpotEvent] = []
        done: list[dict[str, str]] = []
        for i, msg in enumerate(out.get("Messages", [])):
            try:
                event = parse_event(msg.get("Body", ""))
            except MalformedEvent as e:
                self.malformed += 1
                log.warning("interruption queue: dropped malformed message %s: %s", msg.get("MessageId"), e)
            else:
                if event is None:
                    log.info("interruption queue: ignored a non-spot event %s", msg.get("MessageId"))
                else:
                    log.info("interruption queue: %s", event)
                    events.append(event)
            done.append({"Id": str(i), "ReceiptHandle": msg["ReceiptHandle"]})
        if done:
            result = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done)
            for failed in result.get("Failed", []):  # it will come back and be handled again (idempotent)
                log.warning("interruption queue: could not delete message %s: %s", failed.get("Id"), failed)
        return events
