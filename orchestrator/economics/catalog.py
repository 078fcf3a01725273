"""The price and instance catalog (profiles/catalog.yaml), validated into frozen pydantic models.

Every cost the system reports is only as good as these figures, so each one carries its source, the
date of its data and how sure we are of it (verified / corroborated / estimate / unverified), and a
bad catalog stops the load with a message that names the field path and what is allowed, e.g.
``instance_types.c5.large.on_demand_usd_per_hour.value: must be a positive number, got 'abc'``.
Strict types: a quoted number in the YAML is an error rather than silently coerced.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import types
import typing
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from orchestrator.types import MARKETS

DEFAULT_CATALOG_PATH = Path(__file__).resolve().parents[2] / "profiles" / "catalog.yaml"

Architecture = Literal["x86_64", "arm64"]
Confidence = Literal["verified", "corroborated", "estimate", "unverified"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)

_INSTANCE_TYPE_NAME = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")


class CatalogError(ValueError):
    """The catalog file is missing, unreadable or invalid; the message names the path and field."""


class UnknownInstanceTypeError(ValueError, KeyError):
    """Asked for an instance type the catalog does not list (a ValueError that also reads as a KeyError)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# --- scalar validators: our own messages, so every error says what is allowed -------------------


def _positive_number(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise PydanticCustomError("positive_number", "must be a positive number, got {got}", {"got": repr(v)})
    return float(v)


def _positive_int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise PydanticCustomError("positive_int", "must be a positive integer, got {got}", {"got": repr(v)})
    return v


def _non_empty_str(v: object) -> str:
    if not isinstance(v, str) or not v.strip():
        raise PydanticCustomError("non_empty_str", "must be a non-empty string, got {got}", {"got": repr(v)})
    return v


def _iso_date(v: object) -> dt.date:
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        return v
    if isinstance(v, str):
        try:
            return dt.date.fromisoformat(v)
        except ValueError:
            pass
    raise PydanticCustomError("iso_date", "must be a date written YYYY-MM-DD, got {got}", {"got": repr(v)})


PositiveNumber = Annotated[float, PlainValidator(_positive_number)]
PositiveInt = Annotated[int, PlainValidator(_positive_int)]
NonEmptyStr = Annotated[str, PlainValidator(_non_empty_str)]
IsoDate = Annotated[dt.date, PlainValidator(_iso_date)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Provenance(_Model):
    """Where a figure comes from, the date of its data, and how sure we are of it."""

    source: NonEmptyStr
    as_of: IsoDate
    confidence: Confidence
    basis: NonEmptyStr | None = None  # how an estimate was derived (required for 'estimate')
    note: NonEmptyStr | None = None  # why a figure is unverified, or known disagreements

    @model_validator(mode="after")
    def _explained(self) -> Provenance:
        if self.confidence == "estimate" and self.basis is None:
            raise PydanticCustomError(
                "estimate_needs_basis", "confidence 'estimate' needs a 'basis' saying how the figure was derived"
            )
        if self.confidence == "unverified" and self.note is None:
            raise PydanticCustomError(
                "unverified_needs_note", "confidence 'unverified' needs a 'note' saying why it could not be confirmed"
            )
        return self


class Figure(Provenance):
    """A positive number with its provenance."""

    value: PositiveNumber


class IntFigure(Provenance):
    """A positive integer with its provenance."""

    value: PositiveInt


class Gpu(_Model):
    count: PositiveInt
    model: NonEmptyStr
    memory_gib: PositiveNumber


class InstanceType(_Model):
    """One EC2 instance type: shape, prices (USD/hour) and the time from launch to serving-ready."""

    vcpu: PositiveInt
    memory_gib: PositiveNumber
    gpu: Gpu | None
    specs: Provenance
    on_demand_usd_per_hour: Figure
    spot_usd_per_hour_typical: Figure
    boot_seconds: Figure
    sagemaker_realtime_usd_per_hour: Figure

    @model_validator(mode="after")
    def _spot_not_above_on_demand(self) -> InstanceType:
        spot, od = self.spot_usd_per_hour_typical.value, self.on_demand_usd_per_hour.value
        if spot > od:
            raise PydanticCustomError(
                "spot_above_on_demand",
                "spot_usd_per_hour_typical ({spot}) must not exceed on_demand_usd_per_hour ({od}) "
                "(the default maximum Spot price is the On-Demand price; this is most likely a typo)",
                {"spot": spot, "od": od},
            )
        return self

    def price_usd_per_hour(self, market: str) -> float:
        """On-demand price, or the typical spot price, per hour."""
        if _check_market(market) == "spot":
            return self.spot_usd_per_hour_typical.value
        return self.on_demand_usd_per_hour.value


class Ec2Billing(_Model):
    min_billed_seconds_per_launch: IntFigure
    billing_increment_seconds: IntFigure


class MemoryRange(Provenance):
    min: PositiveInt
    max: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> MemoryRange:
        if self.min > self.max:
            raise PydanticCustomError(
                "range_order", "min ({lo}) must not exceed max ({hi})", {"lo": self.min, "hi": self.max}
            )
        return self


class EphemeralStorage(MemoryRange):
    included: PositiveInt

    @model_validator(mode="after")
    def _included_in_range(self) -> EphemeralStorage:
        if not self.min <= self.included <= self.max:
            raise PydanticCustomError(
                "included_out_of_range",
                "included ({inc}) must lie between min ({lo}) and max ({hi})",
                {"inc": self.included, "lo": self.min, "hi": self.max},
            )
        return self


class LambdaGbSecondPrices(_Model):
    x86_64: Figure
    arm64: Figure


class LambdaPricing(_Model):
    """Lambda's on-demand prices and limits (tier 1; free tier not applied)."""

    usd_per_gb_second: LambdaGbSecondPrices
    usd_per_million_requests: Figure
    billing_granularity_ms: IntFigure
    memory_mb: MemoryRange
    default_concurrency: IntFigure
    ephemeral_storage_mb: EphemeralStorage
    ephemeral_storage_usd_per_gb_second: Figure

    def gb_second_price(self, architecture: str) -> float:
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(map(repr, ARCHITECTURES))}, got {architecture!r}")
        price: Figure = getattr(self.usd_per_gb_second, architecture)
        return price.value

    @property
    def usd_per_request(self) -> float:
        return self.usd_per_million_requests.value / 1_000_000


class Catalog(_Model):
    """The whole catalog. Look-ups raise errors that list what is known."""

    schema_version: Literal[1]
    region: NonEmptyStr
    currency: Literal["USD"]
    checked_on: IsoDate
    ec2_billing: Ec2Billing
    instance_types: dict[str, InstanceType] = Field(min_length=1)
    lambda_: LambdaPricing = Field(alias="lambda")

    @field_validator("instance_types")
    @classmethod
    def _type_names(cls, v: dict[str, InstanceType]) -> dict[str, InstanceType]:
        bad = [name for name in v if not _INSTANCE_TYPE_NAME.match(name)]
        if bad:
            raise PydanticCustomError(
                "instance_type_name",
                "instance type names look like 'family.size' (e.g. 'c5.large'), got {bad}",
                {"bad": ", ".join(map(repr, bad))},
            )
        return v

    def known_types(self) -> list[str]:
        return sorted(self.instance_types)

    def instance(self, instance_type: str) -> InstanceType:
        try:
            return self.instance_types[instance_type]
        except (KeyError, TypeError):
            raise UnknownInstanceTypeError(
                f"unknown instance type {instance_type!r}; the catalog knows: {', '.join(self.known_types())}"
            ) from None

    def price_usd_per_hour(self, instance_type: str, market: str) -> float:
        """On-demand price, or the typical spot price, of one instance per hour."""
        _check_market(market)
        return self.instance(instance_type).price_usd_per_hour(market)

    def boot_seconds(self, instance_type: str) -> float:
        return self.instance(instance_type).boot_seconds.value

    def sagemaker_usd_per_hour(self, instance_type: str) -> float:
        """SageMaker real-time inference price of the ml.* twin of ``instance_type`` per hour (on-demand)."""
        return self.instance(instance_type).sagemaker_realtime_usd_per_hour.value

    @property
    def min_billed_seconds(self) -> int:
        return self.ec2_billing.min_billed_seconds_per_launch.value


def _check_market(market: str) -> str:
    if market not in MARKETS:
        raise ValueError(f"market must be one of {', '.join(map(repr, MARKETS))}, got {market!r}")
    return market


# --- loading -------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys: a repeated instance type would otherwise silently win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read and validate the catalog (default: profiles/catalog.yaml in this checkout)."""
    p = Path(path) if path is not None else DEFAULT_CATALOG_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"catalog file not found: {p}") from None
    except OSError as e:
        raise CatalogError(f"cannot read catalog file {p}: {e}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as e:
        raise CatalogError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{p}: the catalog must be a YAML mapping at top level, got {type(raw).__name__}")
    try:
        return Catalog.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors(include_url=False)]
        raise CatalogError(
            f"{p}: invalid catalog ({len(lines)} problem{'s' * (len(lines) != 1)}):\n  " + "\n  ".join(lines)
        ) from None


def _describe(err: Mapping[str, Any]) -> str:
    """One validation error as 'field.path: what is allowed, got X'."""
    loc = tuple(err["loc"])
    path = ".".join(str(part) for part in loc) or "(top level)"
    kind = err["type"]
    got = err.get("input")
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1])
        hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        return f"{path}: unknown field{hint}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{path}: must be one of {expected}, got {got!r}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        allowed = _allowed_fields(loc)
        what = f"a mapping with fields {', '.join(allowed)}" if allowed else "a mapping"
        return f"{path}: must be {what}, got {got!r}"
    if kind == "too_short":
        return f"{path}: must not be empty"
    if kind in _OWN_ERRORS:  # our messages already say what is allowed and what was given
        return f"{path}: {err['msg']}"
    return f"{path}: {err['msg']}, got {got!r}"


_OWN_ERRORS = {
    "positive_number",
    "positive_int",
    "non_empty_str",
    "iso_date",
    "estimate_needs_basis",
    "unverified_needs_note",
    "spot_above_on_demand",
    "range_order",
    "included_out_of_range",
    "instance_type_name",
}


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names the model at ``loc`` accepts (walking Catalog's annotations), for messages."""
    ann: Any = Catalog
    for part in loc:
        ann = _unwrap(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = next((f for n, f in ann.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return []
            ann = field.annotation
        elif get_origin(ann) is dict:
            ann = get_args(ann)[1]
        else:
            return []
    ann = _unwrap(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [f.alias or n for n, f in ann.model_fields.items()]
    return []


def _unwrap(ann: Any) -> Any:
    """Strip Optional/Annotated so the walk sees the model or dict type underneath."""
    while True:
        origin = get_origin(ann)
        if origin is Annotated:
            ann = get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in get_args(ann) if a is not type(None)]
            if len(rest) != 1:
                return ann
            ann = rest[0]
        else:
            return ann
