"""``DeploymentConfig``: one file that describes a deployment (DESIGN.md §6).

The same YAML, TOML or JSON file drives the local run (``mark run --config FILE``), and will drive the
simulator, the AWS backend and the CDK/Terraform stacks. ``mark config example`` prints every field
with its default and meaning; ``mark config validate FILE`` checks a file, including its instance
types against the price catalog and its models against the measured latency profiles.

Every bad value is reported with the field's path and what is allowed, all at once, e.g.::

    deploy.yaml: 2 problems
      slo.sl_min: must be < 1 (got 1.5)
      fleet.instance_types: unknown instance type 'c9.huge'; the catalog knows: c5.large, ...

Units are in the names (``_ms``, ``_s``, ``_mb``). Credentials never go in this file: the AWS backend
uses the standard credential chain (environment, profile, instance role).
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.types import Market, Slo, StrictFloat, StrictInt

if TYPE_CHECKING:
    from orchestrator.economics.catalog import Catalog

SUFFIXES = (".yaml", ".yml", ".toml", ".json")
_CREDENTIAL_KEYS = re.compile(r"(secret|password|access_key|token|credential)", re.IGNORECASE)


MAX_LIST = 64  # models, instance types, subnets, keys: more is a mistake, not a deployment
MAX_PROBLEMS = 25  # reported at once; the rest are counted


def _unique(v: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    repeated: set[str] = set()
    for x in v:
        if x in seen:
            repeated.add(str(x))
        seen.add(x)
    if repeated:
        repeated = sorted(repeated)  # type: ignore[assignment]
        raise ValueError(f"listed more than once: {', '.join(repeated)}")
    return v


class ConfigError(ValueError):
    """A deployment config that cannot be read or does not validate.

    ``problems`` lists each one as ``(field path, message)``; ``str()`` renders them all, one per line.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        head = f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"
        lines = [f"  {loc}: {msg}" if loc else f"  {msg}" for loc, msg in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"  ... and {len(problems) - MAX_PROBLEMS} more")
        super().__init__("\n".join([head, *lines]))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_section(cls, data: Any) -> Any:
        return {} if data is None else data  # `slo:` with everything under it commented out


class FleetConfig(_Section):
    """Which EC2 instances the deployment may run, and how many."""

    instance_types: list[str] = Field(
        default_factory=lambda: ["c5.large"],
        min_length=1,
        max_length=MAX_LIST,
        description="instance types the planner may use (names from profiles/catalog.yaml)",
    )
    markets: list[Market] = Field(
        default_factory=lambda: [Market.ON_DEMAND, Market.SPOT],
        min_length=1,
        description="markets the planner may buy in: on-demand, spot",
    )
    min_instances: StrictInt = Field(0, ge=0, le=1000, description="never fewer instances than this")
    max_instances: StrictInt = Field(
        8, ge=1, le=1000, description="never more instances than this (local: also what this machine can hold)"
    )
    initial_instances: StrictInt = Field(1, ge=0, le=1000, description="instances started with the deployment")
    initial_type: str | None = Field(
        None, description="type of the initial instances (default: the first of instance_types)"
    )
    initial_market: Market = Field(Market.ON_DEMAND, description="market of the initial instances")

    _unique_types = field_validator("instance_types", "markets")(lambda v: _unique(v))

    @model_validator(mode="after")
    def _consistent(self) -> FleetConfig:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) exceeds max_instances ({self.max_instances})")
        if not self.min_instances <= self.initial_instances <= self.max_instances:
            raise ValueError(
                f"initial_instances ({self.initial_instances}) must be within min_instances..max_instances "
                f"({self.min_instances}..{self.max_instances})"
            )
        if self.initial_type is not None and self.initial_type not in self.instance_types:
            raise ValueError(
                f"initial_type {self.initial_type!r} is not among instance_types ({', '.join(self.instance_types)})"
            )
        if self.initial_market not in self.markets:
            raise ValueError(
                f"initial_market {self.initial_market.value!r} is not among markets "
                f"({', '.join(m.value for m in self.markets)})"
            )
        return self

    @property
    def initial(self) -> str:
        """The initial instances' type."""
        return self.initial_type or self.instance_types[0]


class LambdaConfig(_Section):
    """The Lambda function that absorbs bursts while instances boot (AWS limits as documented)."""

    enabled: bool = Field(True, description="false: no Lambda; requests the fleet cannot take get 503")
    memory_mb: StrictInt = Field(
        2048, ge=128, le=10240, description="function memory, 128..10240 MB (sets its vCPU share)"
    )
    concurrency: StrictInt = Field(2, ge=1, le=1000, description="reserved concurrency: environments at once")
    prewarm: StrictInt = Field(2, ge=0, le=1000, description="environments kept warm ahead of traffic")

    @model_validator(mode="after")
    def _prewarm_fits(self) -> LambdaConfig:
        if self.prewarm > self.concurrency:
            raise ValueError(f"prewarm ({self.prewarm}) exceeds concurrency ({self.concurrency})")
        return self


class BatchingConfig(_Section):
    """The workers' batching knobs, fixed until the controller sets them per (variant, type)."""

    max_batch_size: StrictInt = Field(8, ge=1, le=4096, description="rows per batch at most")
    batch_timeout_ms: StrictFloat = Field(
        5.0, ge=0, le=60_000, description="longest a batch's first request waits (ms)"
    )
    max_queue: StrictInt = Field(
        256,
        ge=1,
        le=1_000_000,
        description="pending requests per worker before it answers 503 (the front door's bound too)",
    )


class ControllerConfig(_Section):
    """The proactive controller's loop: forecast every interval, plan over the horizon, act."""

    interval_s: StrictFloat = Field(60.0, ge=1, le=3600, description="Δ: seconds between control steps")
    horizon_steps: StrictInt = Field(10, ge=1, le=120, description="steps the planner looks ahead")
    planner: str = Field("milp", description="the fleet planner: milp or mark_greedy")
    forecast_quantile: StrictFloat = Field(0.9, description="the forecast quantile the planner provisions for")
    forecaster: Literal["combined", "lstm"] = Field(
        "combined",
        description="the load forecaster: combined (every member mixed by recent pinball loss) or lstm (alone)",
    )
    record_arrivals: bool = Field(
        True, description="the front door records requests per second: the data the forecaster retrains on"
    )
    history_dir: str | None = Field(
        None,
        min_length=1,
        description="folder of the per-second arrival history (default: $MARK_STATE_DIR/NAME/arrivals, else "
        "~/.local/state/mark/NAME/arrivals; NAME is the deployment name)",
    )

    @field_validator("planner")
    @classmethod
    def _known_planner(cls, v: str) -> str:
        from orchestrator.policy.planning import PLANNERS

        if v not in PLANNERS:
            raise ValueError(f"unknown planner {v!r}; choose from {', '.join(PLANNERS)}")
        return v

    @field_validator("forecast_quantile")
    @classmethod
    def _known_quantile(cls, v: float) -> float:
        from predictor.features import QUANTILES

        if v not in QUANTILES:
            raise ValueError(f"must be one of the forecaster's quantiles {', '.join(map(str, QUANTILES))} (got {v})")
        return v

    @model_validator(mode="after")
    def _within_forecast(self) -> ControllerConfig:
        from predictor.features import HORIZON

        if self.horizon_steps * self.interval_s > HORIZON * 60:
            raise ValueError(
                f"horizon_steps x interval_s = {self.horizon_steps * self.interval_s:g} s reaches past the "
                f"forecaster's horizon ({HORIZON} min = {HORIZON * 60} s)"
            )
        return self


class FrontDoorSettings(_Section):
    """The front door clients call (KServe v2 / Triton HTTP)."""

    host: str = Field("127.0.0.1", min_length=1, description="interface to listen on (loopback by default)")
    port: StrictInt = Field(8080, ge=0, le=65535, description="port (0 = any free port)")
    api_key_sha256: list[str] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="SHA-256 hex digests of the accepted API keys (never the keys); empty = no key required",
    )

    @field_validator("api_key_sha256")
    @classmethod
    def _digests(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if not re.fullmatch(r"[0-9a-fA-F]{64}", d)]
        if bad:
            raise ValueError(
                f"{len(bad)} value(s) are not 64 hex digits; give the SHA-256 of each key, not the key "
                "(printf %s KEY | sha256sum | cut -d' ' -f1)"
            )
        return [d.lower() for d in v]


class LocalBackend(_Section):
    """The embedded local cloud: instances are worker processes on this machine, Lambda a process pool."""

    name: Literal["local"] = "local"
    time_factor: StrictFloat = Field(
        0.1, ge=0.001, le=100, description="real seconds per virtual second (0.1: ten virtual seconds per real second)"
    )
    instance_threads: StrictInt | None = Field(
        None, ge=1, le=256, description="cap on onnxruntime threads per instance (default: half this machine's cores)"
    )


class AwsBackend(_Section):
    """aws: EC2 instances and a Lambda function in one region (credentials from the standard chain)."""

    name: Literal["aws"]
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$", description="AWS region, e.g. us-east-1")
    endpoint_url: str | None = Field(
        None, pattern=r"^https?://", description="override every service endpoint (LocalStack: http://localhost:4566)"
    )
    profile_name: str | None = Field(
        None, description="named profile from ~/.aws/config (default: the credential chain)"
    )
    subnet_ids: list[str] = Field(default_factory=list, max_length=MAX_LIST, description="subnets for worker instances")
    model_bucket: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="S3 bucket holding the model artifacts (an S3 bucket name)",
    )

    _unique_subnets = field_validator("subnet_ids")(lambda v: _unique(v))

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return v
        url = urlsplit(v)
        if url.username or url.password:
            raise ValueError("credentials never go in the deployment config (drop the user:password@ part)")
        if not url.hostname:
            raise ValueError("needs a host, e.g. http://localhost:4566")
        return v


Backend = Annotated[LocalBackend | AwsBackend, Field(discriminator="name")]


class DeploymentConfig(_Section):
    """One deployment: what it serves, under which SLO, on what, at what cost bounds, where."""

    name: str = Field(
        "mark",
        pattern=r"^[a-z][a-z0-9-]{0,39}$",
        description="deployment name: tags every cloud resource (lowercase letters, digits, '-'; <= 40)",
    )
    models: list[str] = Field(
        default_factory=lambda: ["mobilenet_v2"], min_length=1, max_length=MAX_LIST, description="model variants served"
    )
    slo: Slo = Field(default_factory=Slo, description="the latency SLO")
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    lambda_: LambdaConfig = Field(default_factory=LambdaConfig, alias="lambda")
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    frontdoor: FrontDoorSettings = Field(default_factory=FrontDoorSettings)
    backend: Backend = Field(default_factory=LocalBackend, description="where it runs: local (default) or aws")

    _unique_models = field_validator("models")(lambda v: _unique(v))

    def history_path(self) -> Path:
        """Where the front door records arrivals: ``controller.history_dir``, else
        ``$MARK_STATE_DIR/NAME/arrivals``, else ``$XDG_STATE_HOME`` (``~/.local/state``)``/mark/NAME/arrivals``."""
        if self.controller.history_dir is not None:
            return Path(self.controller.history_dir).expanduser()
        state = os.environ.get("MARK_STATE_DIR")
        if state:
            return Path(state).expanduser() / self.name / "arrivals"
        xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(xdg) / "mark" / self.name / "arrivals"

    @model_validator(mode="before")
    @classmethod
    def _default_backend(cls, data: Any) -> Any:
        """An empty section is its defaults; a backend section without ``name`` is the local one (every
        field is optional)."""
        if isinstance(data, dict):
            data = {k: {} if v is None and k not in ("name", "models") else v for k, v in data.items()}
        if isinstance(data, dict) and isinstance(data.get("backend"), dict) and "name" not in data["backend"]:
            data = {**data, "backend": {"name": "local", **data["backend"]}}
        return data

    def problems_with(self, catalog: Catalog) -> list[tuple[str, str]]:
        """What this config asks that the price catalog cannot give: ``(field path, message)`` pairs."""
        out: list[tuple[str, str]] = []
        unknown = [t for t in self.fleet.instance_types if t not in catalog.instance_types]
        if unknown:
            out.append(
                (
                    "fleet.instance_types",
                    f"unknown instance type {', '.join(map(repr, unknown))}; the catalog knows: "
                    f"{', '.join(catalog.known_types())}",
                )
            )
        if isinstance(self.backend, AwsBackend) and self.backend.region != catalog.region:
            out.append(
                (
                    "backend.region",
                    f"the price catalog is for {catalog.region}, not {self.backend.region}: costs would be wrong",
                )
            )
        return out


def _problems(e: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in e.errors():
        raw = [p for p in err["loc"] if not str(p).startswith(("function-after", "tagged-union"))]
        # A tagged union puts its tag in the path (backend.aws.region): users wrote backend.region.
        shown = [p for i, p in enumerate(raw) if not (i > 0 and raw[i - 1] == "backend" and p in ("local", "aws"))]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in shown).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        kind = err["type"]
        if kind == "extra_forbidden":
            if _CREDENTIAL_KEYS.search(str(raw[-1])):
                msg = "credentials never go in the deployment config: the AWS backend uses the credential chain"
            else:
                msg = f"unknown field; allowed here: {', '.join(_allowed_at(raw[:-1]))}"
        elif kind == "string_pattern_mismatch":
            field = _field_at(raw)[1]
            msg = (
                f"{field.description if field and field.description else 'not an allowed value'} (got {err['input']!r})"
            )
        elif kind == "union_tag_invalid":
            msg = f"unknown backend; choose local or aws (got {err.get('ctx', {}).get('tag', '?')!r})"
        elif kind == "finite_number":
            msg = "must be a finite number"
        elif kind not in ("value_error", "missing") and not isinstance(err.get("input"), dict | list):
            if not any(_CREDENTIAL_KEYS.search(str(p)) or "key" in str(p) for p in raw):
                msg = f"{msg} (got {err['input']!r})"  # never echo what may be a key
        out.append((loc, msg))
    return out


def _field_at(loc: Iterable[Any]) -> tuple[type[BaseModel] | None, Any]:
    """The section model and the field a raw error path points at (``(section, None)`` for a section)."""
    model: type[BaseModel] | None = DeploymentConfig
    field = None
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        if model is DeploymentConfig and part == "backend":
            model, field = LocalBackend, None  # the tag (next part) says which backend
            continue
        if part in ("local", "aws") and model in (LocalBackend, AwsBackend):
            model = LocalBackend if part == "local" else AwsBackend
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model, field = ann, None
        elif field is None:
            model = None
    return model, field


def _allowed_at(loc: Iterable[Any]) -> list[str]:
    model, field = _field_at(loc)
    if model is None or field is not None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def parse_config(data: Mapping[str, Any], source: str = "config") -> DeploymentConfig:
    """Validate a mapping (parsed YAML/TOML/JSON) as a :class:`DeploymentConfig`.

    Raises:
        ConfigError: every problem at once, each with its field path and what is allowed.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(source, [("", f"the config must be a mapping at top level, got {type(data).__name__}")])
    try:
        return DeploymentConfig.model_validate(dict(data))
    except ValidationError as e:
        raise ConfigError(source, _problems(e)) from None


class DuplicateKey(ValueError):
    """A mapping names the same key twice: the file says two things, so neither is taken."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise DuplicateKey(f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1}) if len(set(keys)) != len(keys) else []
    if repeated:
        raise DuplicateKey(f"key {repeated[0]!r} appears twice in one object")
    return dict(pairs)


def load_config(path: str | Path) -> DeploymentConfig:
    """Read and validate a deployment config file (``.yaml``/``.yml``, ``.toml`` or ``.json``).

    Raises:
        ConfigError: the file is missing, unreadable, not in a known format, malformed (with the line),
            or has bad values (every problem with its field path).
    """
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise ConfigError(str(p), [("", f"unknown format {p.suffix or '(none)'!r}: use one of {', '.join(SUFFIXES)}")])
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), [("", f"not UTF-8 text (byte {e.start})")]) from None
    except FileNotFoundError:
        raise ConfigError(str(p), [("", "no such file (`mark config example > deploy.yaml` writes one)")]) from None
    except OSError as e:
        raise ConfigError(str(p), [("", f"cannot read it: {e.strerror}")]) from None
    kind = p.suffix.lstrip(".").upper().replace("YML", "YAML")
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(text)  # refuses repeated keys itself
        elif p.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_json_object)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError, DuplicateKey) as e:
        raise ConfigError(str(p), [("", f"not valid {kind}: {e}")]) from None
    except RecursionError:
        raise ConfigError(str(p), [("", f"not a config: nested too deeply to be valid {kind}")]) from None
    if data is None:
        data = {}
    try:
        return parse_config(data, str(p))
    except RecursionError:
        raise ConfigError(str(p), [("", "not a config: nested too deeply")]) from None


def with_overrides(
    config: DeploymentConfig, updates: Mapping[str, Any], origins: Mapping[str, str] | None = None
) -> DeploymentConfig:
    """A copy of ``config`` with dotted-path values replaced (``{"slo.rt_max_ms": 150}``), validated again.

    ``origins`` names where each override came from (a command-line flag) so errors name it too.

    Raises:
        ConfigError: an override is invalid (or makes the whole inconsistent).
    """
    data = config.model_dump(by_alias=True, mode="json")
    for path, value in updates.items():
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return DeploymentConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for loc, msg in _problems(e):
            flags = _flags_behind(loc, msg, origins or {})
            problems.append((f"{loc} (from {', '.join(flags)})" if flags else loc, msg))
        raise ConfigError("the command line", problems) from None


def _flags_behind(loc: str, msg: str, origins: Mapping[str, str]) -> list[str]:
    """The flags that set the field at ``loc``; for a rule across a section's fields (``lambda``:
    "prewarm (9) exceeds concurrency (4)"), the flags that set a field the message names."""
    if loc in origins:
        return [origins[loc]]
    inside = {p: f for p, f in origins.items() if p.startswith(loc + ".")}
    named = [f for p, f in inside.items() if re.search(rf"\b{re.escape(p.rsplit('.', 1)[-1])}\b", msg)]
    return list(dict.fromkeys(named))


def _yaml_scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return f"{v:.1f}"
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_scalar(x) for x in v) + "]"
    return json.dumps(v) if isinstance(v, str) and (not v or ":" in v or v[0] in "-[{#") else str(v)


def _example_lines(model: BaseModel, indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        value = getattr(model, name)
        note = f"  # {field.description}" if field.description else ""
        if isinstance(value, BaseModel):
            doc = (type(value).__doc__ or "").strip().splitlines()[0]
            lines.append(f"{pad}{key}:  # {field.description or doc}")
            lines += _example_lines(value, indent + 1)
            if isinstance(value, LocalBackend):
                lines.append(f"{pad}  # or {AwsBackend.__doc__}")
                for n, f in AwsBackend.model_fields.items():
                    default = "aws" if n == "name" else f.get_default(call_default_factory=True)
                    lines.append(f"{pad}  # {f.alias or n}: {_yaml_scalar(default)}  # {f.description or 'aws'}")
        else:
            dumped = value.value if hasattr(value, "value") else value
            if isinstance(dumped, list):
                dumped = [x.value if hasattr(x, "value") else x for x in dumped]
            lines.append(f"{pad}{key}: {_yaml_scalar(dumped)}{note}")
    return lines


def example_yaml() -> str:
    """Every field with its default and meaning, as a YAML file that :func:`load_config` accepts."""
    head = [
        "# mark deployment config: `mark config validate FILE` checks it; `mark run --config FILE` runs it",
        "# (command-line flags override it). Every field is optional: these are the defaults.",
    ]
    return "\n".join(head + _example_lines(DeploymentConfig(), 0)) + "\n"
