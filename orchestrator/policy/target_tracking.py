"""Application Auto Scaling target tracking on ``SageMakerVariantInvocationsPerInstance``, as AWS documents it.

Pure: a configuration, the state and one minute's observation in; the new state and the desired
instance count out. No clock, no I/O. The controller (orchestrator/controller/sagemaker.py) feeds it
one datapoint per minute and turns the desired count into launches and drains.

What AWS documents, and what this module does with it (each figure with its source; "User Guide"
is the Application Auto Scaling User Guide, target tracking chapter,
https://docs.aws.amazon.com/autoscaling/application/userguide/target-tracking-scaling-policy-overview.html,
also kept by AWS on GitHub as awsdocs/application-auto-scaling-user-guide,
doc_source/application-auto-scaling-target-tracking.md):

- **Metric.** ``InvocationsPerInstance``: "The number of invocations sent to a model, normalized by
  InstanceCount in each ProductionVariant. 1/numberOfInstances is sent as the value on each request,
  where numberOfInstances is the number of active instances" (SageMaker API Reference,
  ScalingPolicyMetric, https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ScalingPolicyMetric.html);
  per minute: the SageMaker load-testing guide multiplies RPS by 60 "to match the per-minute
  CloudWatch metric that SageMaker AI uses to implement auto scaling"
  (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-loadtest.html). Here: one
  datapoint per 60 s period = invocations in the period / instances in service; booting instances
  are not active, so they do not dilute it. With none in service the datapoint is missing, and a
  missing datapoint breaches neither alarm ("A target tracking scaling policy does not scale in when
  the state of the alarm is INSUFFICIENT_DATA", User Guide). A minute without invocations is a
  datapoint of 0: our choice (AWS does not say whether SageMaker publishes real zeros; the User Guide
  notes only that metrics which do can scale in on no traffic); it lets an idle endpoint scale in.
- **Alarms.** Target tracking "creates and manages the CloudWatch alarms" (User Guide); AWS's pages do
  not print their settings. The alarms Application Auto Scaling creates (named
  ``TargetTracking-...-AlarmHigh/-AlarmLow``, described "DO NOT EDIT OR DELETE. For
  TargetTrackingScaling policy ...") read, in Terraform exports of them in public repositories for
  ECS services (the same Application Auto Scaling target tracking as SageMaker variants):
  AlarmHigh ``GreaterThanThreshold``, threshold = the target (70), ``period 60``,
  ``evaluation_periods 3``; AlarmLow ``LessThanThreshold``, threshold 63 (= 0.9 x 70; another
  export: 45 for a target of 50), ``period 60``, ``evaluation_periods 15``. AWS's own ECS Fargate
  workshop (Amazon.com, CC-BY-SA-4.0) says the same: "Scale UP: CPUUtilization > 30 for 3 datapoints
  within 3 minutes; Scale DOWN: CPUUtilization < 27 for 15 datapoints within 15 minutes". Here:
  ``scale_out_datapoints = 3`` datapoints above the target, ``scale_in_datapoints = 15`` below
  ``scale_in_ratio = 0.9`` x the target, consecutive, one a minute. The User Guide's own words on
  the low threshold: "removing capacity only when utilization passes a threshold that is far enough
  below the target value (usually more than 10% lower)".
- **Alarm re-invocation.** "Except for Auto Scaling actions, the actions happen only on state
  transitions" (CloudWatch User Guide, Alarm actions,
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarm-actions.html): an alarm that
  stays in ALARM keeps invoking the policy. Here: the alarms are evaluated every minute and the
  policy acts whenever one holds.
- **Scaling adjustment.** The policy "calculates the scaling adjustment based on the metric and the
  target value" and "scales out proportionally to the metric as fast as it can, but scales in more
  gradually"; it "always acts conservatively by rounding up or down when it determines how much
  capacity to add or remove. This prevents it from adding insufficient capacity or removing too much
  capacity" (User Guide). Here: the capacity the load needs is ceil(in-service x metric / target)
  (= ceil(invocations per minute / target)), bounded by [min_capacity, max_capacity]
  (RegisterScalableTarget's MinCapacity/MaxCapacity); scale-out raises the desired capacity to it,
  scale-in lowers it to it (ceil: never so far that the metric would pass the target).
- **Cooldowns.** ScaleOutCooldown and ScaleInCooldown default to 300 s for "Amazon SageMaker endpoint
  variants" (Application Auto Scaling API Reference, TargetTrackingScalingPolicyConfiguration,
  https://docs.aws.amazon.com/autoscaling/application/APIReference/API_TargetTrackingScalingPolicyConfiguration.html).
  Scale-out: "The scaling policy won't increase the desired capacity again unless either a larger
  scale out is triggered or the cooldown period ends. While the scale-out cooldown period is in
  effect, the capacity added by the initiating scale-out activity is calculated as part of the
  desired capacity for the next scale-out activity." Scale-in: "scale-in activities are blocked until
  the cooldown period has expired. However, if another alarm triggers a scale-out activity during the
  scale-in cooldown period, Application Auto Scaling scales out the target immediately" (User Guide).
  Here: a scale-in waits ``scale_in_cooldown_s`` after the previous scale-in; a scale-out never
  waits. During a scale-out cooldown a scale-out happens only if the load needs more than the
  desired capacity, which includes the instances still starting (AWS's rule word for word); outside
  it, AWS assumes the capacity added earlier is in service by then. We count instances still
  starting as part of the desired capacity at all times, so one that boots past the cooldown is
  never paid for twice: the two readings agree while start-up <= cooldown, and ours is the cheaper
  for SageMaker when it is not. (So with this metric the scale-out cooldown never binds beyond the
  proportional rule; it is kept because it is AWS's rule, and a tick's reason says when a
  scale-out happened during it.)
- **Scale-in pace.** Slow by construction: 15 minutes below 0.9 x target, then at most one
  proportional step per scale-in cooldown.

Not modelled (each would delay SageMaker's scale-outs, so leaving them out favours SageMaker):
CloudWatch's delay in publishing a datapoint, and any refusal by SageMaker to change the capacity
while the endpoint is still "Updating" from the previous change (not documented either way here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

SCALE_OUT = "scale-out"
SCALE_IN = "scale-in"
NONE = "none"
_EPS = 1e-9  # so that 2 x target invocations need 2 instances, not 3, after float division


class TargetTrackingError(ValueError):
    """An invalid policy or observation; the message names the field."""


@dataclass(frozen=True)
class TargetTrackingPolicy:
    """One target tracking policy on a SageMaker variant (defaults: AWS's, see the module docstring).

    ``target_value``: invocations per instance per minute; ``period_s``: the metric's period (s);
    cooldowns in seconds; datapoints are consecutive periods.
    """

    target_value: float
    min_capacity: int = 1
    max_capacity: int = 1000
    scale_out_cooldown_s: float = 300.0
    scale_in_cooldown_s: float = 300.0
    scale_out_datapoints: int = 3
    scale_in_datapoints: int = 15
    scale_in_ratio: float = 0.9
    period_s: float = 60.0
    disable_scale_in: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_value) and self.target_value > 0):
            raise TargetTrackingError(f"target_value must be a positive number, got {self.target_value}")
        if not 0 <= self.min_capacity <= self.max_capacity:
            raise TargetTrackingError(
                f"need 0 <= min_capacity <= max_capacity, got {self.min_capacity} and {self.max_capacity}"
            )
        for name in ("scale_out_cooldown_s", "scale_in_cooldown_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise TargetTrackingError(f"{name} must be >= 0, got {v}")
        for name in ("scale_out_datapoints", "scale_in_datapoints"):
            if getattr(self, name) < 1:
                raise TargetTrackingError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.scale_in_ratio <= 1:
            raise TargetTrackingError(f"scale_in_ratio must lie in (0, 1], got {self.scale_in_ratio}")
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise TargetTrackingError(f"period_s must be positive, got {self.period_s}")

    @property
    def scale_in_threshold(self) -> float:
        """AlarmLow's threshold: invocations per instance per minute below which scale-in may start."""
        return self.scale_in_ratio * self.target_value

    def bound(self, capacity: int) -> int:
        """``capacity`` within [min_capacity, max_capacity]."""
        return max(self.min_capacity, min(self.max_capacity, capacity))


@dataclass(frozen=True)
class Datapoint:
    """One period of the metric: invocations in the period and instances in service at its end."""

    invocations: float
    in_service: int

    @property
    def metric(self) -> float | None:
        """Invocations per in-service instance in the period; None (missing) with none in service."""
        return self.invocations / self.in_service if self.in_service > 0 else None


@dataclass(frozen=True)
class TrackingState:
    """The policy's state: the desired capacity (DesiredInstanceCount, pending instances included),
    the recent datapoints (oldest first), and when the last scale-out / scale-in happened (s)."""

    desired: int
    datapoints: tuple[Datapoint, ...] = ()
    last_scale_out_s: float | None = None
    last_scale_in_s: float | None = None


@dataclass(frozen=True)
class TrackingDecision:
    """The outcome of one evaluation: the new state, its desired capacity and why."""

    state: TrackingState
    metric: float | None  # this period's invocations per in-service instance (None: missing)
    needed: int | None  # capacity the observed load needs, bounded (None: metric missing)
    alarm_high: bool
    alarm_low: bool
    activity: str  # SCALE_OUT | SCALE_IN | NONE
    reason: str

    @property
    def desired(self) -> int:
        return self.state.desired


def initial_state(policy: TargetTrackingPolicy, capacity: int) -> TrackingState:
    """The state of a variant deployed with ``capacity`` instances (bounded by the policy)."""
    if capacity < 0:
        raise TargetTrackingError(f"capacity must be >= 0, got {capacity}")
    return TrackingState(desired=policy.bound(capacity))


def needed_capacity(policy: TargetTrackingPolicy, point: Datapoint) -> int | None:
    """ceil(in-service x metric / target), bounded: the proportional rule; None when the metric is missing."""
    if point.metric is None:
        return None
    return policy.bound(math.ceil(point.invocations / policy.target_value - _EPS))


def _window(points: tuple[Datapoint, ...], n: int) -> tuple[Datapoint, ...] | None:
    return points[-n:] if len(points) >= n else None


def alarm_high(policy: TargetTrackingPolicy, points: tuple[Datapoint, ...]) -> bool:
    """AlarmHigh: the last ``scale_out_datapoints`` datapoints all present and above the target."""
    w = _window(points, policy.scale_out_datapoints)
    return w is not None and all(p.metric is not None and p.metric > policy.target_value for p in w)


def alarm_low(policy: TargetTrackingPolicy, points: tuple[Datapoint, ...]) -> bool:
    """AlarmLow: the last ``scale_in_datapoints`` datapoints all present and below the scale-in threshold."""
    w = _window(points, policy.scale_in_datapoints)
    return w is not None and all(p.metric is not None and p.metric < policy.scale_in_threshold for p in w)


def _cooldown_until(last_s: float | None, cooldown_s: float, now_s: float) -> float | None:
    """When the cooldown started at ``last_s`` ends, if it is still running at ``now_s``; else None."""
    if last_s is None or now_s - last_s >= cooldown_s:
        return None
    return last_s + cooldown_s


def evaluate(
    policy: TargetTrackingPolicy,
    state: TrackingState,
    *,
    now_s: float,
    invocations: float,
    in_service: int,
) -> TrackingDecision:
    """Add the period that ended at ``now_s`` (``invocations`` in it, ``in_service`` instances serving)
    and apply the alarms, the proportional rule and the cooldowns. Pure."""
    if not (math.isfinite(invocations) and invocations >= 0):
        raise TargetTrackingError(f"invocations must be a non-negative number, got {invocations}")
    if in_service < 0:
        raise TargetTrackingError(f"in_service must be >= 0, got {in_service}")
    point = Datapoint(float(invocations), in_service)
    keep = max(policy.scale_out_datapoints, policy.scale_in_datapoints)
    points = (*state.datapoints, point)[-keep:]
    high, low = alarm_high(policy, points), alarm_low(policy, points)
    needed = needed_capacity(policy, point)
    # Bounds changed since the last step (or the initial capacity was out of them): follow them.
    desired = policy.bound(state.desired)
    new = replace(state, datapoints=points, desired=desired)
    activity, reason = NONE, "metric within the alarms"

    if high and needed is not None:
        if needed > desired:
            # A scale-out also ends a scale-in cooldown ("the scale-in cooldown period stops").
            new = replace(new, desired=needed, last_scale_out_s=now_s, last_scale_in_s=None)
            activity = SCALE_OUT
            larger = _cooldown_until(state.last_scale_out_s, policy.scale_out_cooldown_s, now_s) is not None
            reason = (
                f"AlarmHigh: {policy.scale_out_datapoints} datapoints > {policy.target_value:g}; "
                f"needs {needed} > desired {desired}" + (" (a larger scale-out, during the cooldown)" if larger else "")
            )
        else:
            reason = f"AlarmHigh, but desired {desired} (pending included) already covers the {needed} needed"
    elif low and needed is not None and not policy.disable_scale_in:
        until = _cooldown_until(state.last_scale_in_s, policy.scale_in_cooldown_s, now_s)
        if needed >= desired:
            reason = f"AlarmLow, but removing capacity would push the metric above the target (needs {needed})"
        elif until is not None:
            reason = f"AlarmLow, scale-in cooldown until {until:g} s"
        else:
            new = replace(new, desired=needed, last_scale_in_s=now_s)
            activity = SCALE_IN
            reason = (
                f"AlarmLow: {policy.scale_in_datapoints} datapoints < {policy.scale_in_threshold:g}; "
                f"desired {desired} -> {needed}"
            )
    elif needed is None:
        reason = "metric missing: no instance in service"
    return TrackingDecision(new, point.metric, needed, high, low, activity, reason)
