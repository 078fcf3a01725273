"""DeploymentConfig: one file, every bad value named with its field, flags override, backends by name."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.main import build_parser
from orchestrator.config import (
    AwsBackend,
    ConfigError,
    DeploymentConfig,
    LocalBackend,
    example_yaml,
    load_config,
    parse_config,
)
from orchestrator.economics.catalog import load_catalog
from orchestrator.types import Market

ROOT = Path(__file__).resolve().parents[2]


def problems(data: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as e:
        parse_config(data, "deploy.yaml")  # type: ignore[arg-type]
    return e.value.problems


def test_the_example_is_every_default_and_loads_back_in_each_format(tmp_path: Path) -> None:
    text = example_yaml()
    assert parse_config(yaml.safe_load(text)) == DeploymentConfig()
    for field in ("rt_max_ms", "sl_min", "instance_types", "memory_mb", "interval_s", "planner", "time_factor"):
        assert f"{field}:" in text  # every section is shown, with its meaning
    assert "# region: us-east-1" in text  # the aws section, commented
    dumped = DeploymentConfig(models=["digits_mlp_small"]).model_dump(by_alias=True, mode="json")
    (tmp_path / "d.json").write_text(json.dumps(dumped))
    (tmp_path / "d.toml").write_text(
        'models = ["digits_mlp_small"]\n[slo]\nrt_max_ms = 150\n[backend]\nname = "local"\n'
    )
    assert load_config(tmp_path / "d.json").models == ["digits_mlp_small"]
    toml = load_config(tmp_path / "d.toml")
    assert toml.slo.rt_max_ms == 150 and toml.slo.sl_min == 0.98 and isinstance(toml.backend, LocalBackend)
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == DeploymentConfig()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"slo": {"sl_min": 1.5}}, [("slo.sl_min", "Input should be less than 1 (got 1.5)")]),
        ({"slo": {"rt_max_ms": 10, "epsilon_ms": 10}}, [("slo", "epsilon_ms (10) must be below rt_max_ms (10)")]),
        ({"lambda": {"prewarm": 5}}, [("lambda", "prewarm (5) exceeds concurrency (2)")]),
        (
            {"lambda": {"memory_mb": 64}},
            [("lambda.memory_mb", "Input should be greater than or equal to 128 (got 64)")],
        ),
        (
            {"fleet": {"instance_types": ["c5.large", "c5.large"]}},
            [("fleet.instance_types", "listed more than once: c5.large")],
        ),
        (
            {"fleet": {"min_instances": 3, "initial_instances": 1}},
            [("fleet", "initial_instances (1) must be within min_instances..max_instances (3..8)")],
        ),
        (
            {"fleet": {"markets": ["spot"]}},
            [("fleet", "initial_market 'on-demand' is not among markets (spot)")],
        ),
        ({"backend": {"name": "gcp"}}, [("backend", "unknown backend; choose local or aws (got 'gcp')")]),
        (
            {"backend": {"name": "local", "timefactor": 1}},
            [("backend.timefactor", "unknown field; allowed here: name, time_factor, instance_threads")],
        ),
        (
            {"backend": {"name": "aws", "region": "mars"}},
            [("backend.region", "AWS region, e.g. us-east-1 (got 'mars')")],
        ),
        (
            {"controller": {"planner": "best"}},
            [("controller.planner", "unknown planner 'best'; choose from milp, mark_greedy")],
        ),
        (
            {"controller": {"forecast_quantile": 0.8}},
            [("controller.forecast_quantile", "must be one of the forecaster's quantiles 0.5, 0.9, 0.99 (got 0.8)")],
        ),
        (
            {"controller": {"interval_s": 600}},
            [
                (
                    "controller",
                    "horizon_steps x interval_s = 6000 s reaches past the forecaster's horizon (15 min = 900 s)",
                )
            ],
        ),
        ({"models": []}, [("models", "List should have at least 1 item after validation, not 0")]),
        (
            {"name": "My App"},
            [
                (
                    "name",
                    "deployment name: tags every cloud resource (lowercase letters, digits, '-'; <= 40) (got 'My App')",
                )
            ],
        ),
        (
            {"frontdoor": {"api_key_sha256": ["hunter2"]}},
            [
                (
                    "frontdoor.api_key_sha256",
                    "1 value(s) are not 64 hex digits; give the SHA-256 of each key, not the key "
                    "(printf %s KEY | sha256sum | cut -d' ' -f1)",
                )
            ],
        ),
    ],
)
def test_each_bad_value_names_its_field_and_what_is_allowed(data: dict, expected: list[tuple[str, str]]) -> None:
    assert problems(data) == expected


def test_every_problem_is_reported_at_once_and_credentials_are_refused() -> None:
    found = problems(
        {
            "slo": {"rt_max_ms": "fast"},
            "zzz": 1,
            "backend": {"name": "aws", "aws_secret_access_key": "AKIA-not-a-real-one"},
        }
    )
    assert [loc for loc, _ in found] == ["slo.rt_max_ms", "backend.aws_secret_access_key", "zzz"]
    secret = dict(found)["backend.aws_secret_access_key"]
    assert "credential chain" in secret and "AKIA" not in secret  # the value is never echoed
    assert dict(found)["zzz"].startswith("unknown field; allowed here: name, models, slo, fleet, lambda")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    for name, text, message in [
        ("missing.yaml", None, "no such file"),
        ("bad.yaml", "slo: [1, 2\n", "not valid YAML"),
        ("bad.toml", "slo = {\n", "not valid TOML"),
        ("list.yaml", "- 1\n", "must be a mapping at top level, got list"),
        ("d.ini", "", "unknown format '.ini'"),
    ]:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError, match=message) as e:
            load_config(path)
        assert str(e.value).startswith(f"{path}: 1 problem")


def test_the_catalog_check_names_unknown_types_and_a_region_the_prices_do_not_cover() -> None:
    catalog = load_catalog()
    ok = DeploymentConfig(fleet={"instance_types": ["c5.large", "g4dn.xlarge"]})  # type: ignore[arg-type]
    assert ok.problems_with(catalog) == []
    bad = DeploymentConfig(
        fleet={"instance_types": ["c9.huge"]},  # type: ignore[arg-type]
        backend=AwsBackend(name="aws", region="eu-west-1"),
    )
    (types, why), (region, msg) = bad.problems_with(catalog)
    assert types == "fleet.instance_types" and why.startswith(
        "unknown instance type 'c9.huge'; the catalog knows: c5.2xlarge"
    )
    assert (
        region == "backend.region"
        and msg == f"the price catalog is for {catalog.region}, not eu-west-1: costs would be wrong"
    )


def run_args(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["run", *argv])


def test_flags_override_the_file_and_a_flag_not_given_keeps_the_file_value(tmp_path: Path) -> None:
    from orchestrator.cli.config import deployment_from_args

    path = tmp_path / "d.yaml"
    path.write_text(
        "models: [digits_mlp_small]\nslo: {rt_max_ms: 120, sl_min: 0.95}\n"
        "fleet: {instance_types: [c5.large, c5.xlarge], markets: [spot], initial_market: spot, max_instances: 3}\n"
        "lambda: {concurrency: 4, prewarm: 3}\nbackend: {name: local, time_factor: 0.5}\n"
    )
    assert deployment_from_args(run_args("--config", str(path))) == load_config(path)
    d = deployment_from_args(
        run_args("--config", str(path), "--rt-max-ms", "80", "--instances", "5", "--lambda-concurrency", "2")
    )
    assert (d.slo.rt_max_ms, d.slo.sl_min) == (80, 0.95)
    assert (d.fleet.initial_instances, d.fleet.max_instances) == (5, 5)  # asking for 5 raises the bound
    assert (d.lambda_.concurrency, d.lambda_.prewarm) == (2, 2)  # pre-warm follows a smaller concurrency
    assert d.fleet.markets == [Market.SPOT] and d.backend.time_factor == 0.5  # type: ignore[union-attr]
    t = deployment_from_args(run_args("--config", str(path), "--type", "c5.2xlarge", "--no-lambda"))
    assert t.fleet.instance_types == ["c5.2xlarge"] and t.fleet.initial == "c5.2xlarge" and not t.lambda_.enabled
    defaults = deployment_from_args(run_args())
    assert defaults == DeploymentConfig()


def test_a_bad_flag_is_named_with_its_field() -> None:
    from orchestrator.cli.config import deployment_from_args

    with pytest.raises(ConfigError) as e:
        deployment_from_args(run_args("--sl-min", "2", "--lambda-prewarm", "9"))
    assert e.value.problems == [
        ("slo.sl_min (from --sl-min)", "Input should be less than 1 (got 2.0)"),
        ("lambda (from --lambda-prewarm)", "prewarm (9) exceeds concurrency (2)"),
    ]


def test_the_registry_imports_a_backend_only_when_chosen_and_names_the_ones_it_runs() -> None:
    code = (
        "import sys; from orchestrator.cloud import registry; "
        "assert 'orchestrator.cloud.local.instances' not in sys.modules; "
        "assert 'orchestrator.cloud.local.lambda_pool' not in sys.modules; "
        "m = registry.backend('local'); assert 'orchestrator.cloud.local.instances' in sys.modules; "
        "assert 'boto3' not in sys.modules and 'orchestrator.cloud.aws' not in sys.modules, 'aws loaded'; "
        "print(m.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "orchestrator.cloud.local.backend", out.stderr
    from orchestrator.cloud.registry import BackendUnavailable, backend

    assert backend("aws").__name__ == "orchestrator.cloud.aws.backend"
    with pytest.raises(BackendUnavailable, match="'nimbus': no such backend; this version runs: local, aws"):
        backend("nimbus")


def test_the_local_backend_turns_the_config_into_type_specs_and_a_function() -> None:
    from orchestrator.cloud.local.backend import instance_types, open_function

    catalog = load_catalog()
    d = DeploymentConfig(
        models=["digits_mlp_small"],
        fleet={"instance_types": ["c5.large", "c5.4xlarge"], "initial_type": "c5.4xlarge"},  # type: ignore[arg-type]
        backend=LocalBackend(instance_threads=1),
        **{"lambda": {"memory_mb": 1024, "concurrency": 3, "prewarm": 0}},  # type: ignore[arg-type]
    )
    specs = instance_types(d, catalog)
    assert [s.name for s in specs] == ["c5.4xlarge", "c5.large"]  # the initial type first
    assert [s.threads for s in specs] == [1, 1]  # capped by instance_threads
    assert specs[0].boot_seconds == catalog.boot_seconds("c5.4xlarge")
    fn = open_function(d, "/repo")
    assert fn is not None and (fn.config.memory_mb, fn.config.concurrency_limit) == (1024, 3)
    assert (
        open_function(d.model_copy(update={"lambda_": d.lambda_.model_copy(update={"enabled": False})}), "/r") is None
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--type", "c9.huge"], "fleet.instance_types: unknown instance type 'c9.huge'; the catalog knows: c5.2xlarge"),
        (["--model", "nope"], "models[0]: unknown model 'nope': no latency profile under"),
        (["--instances", "-1"], "fleet.initial_instances (from --instances): Input should be greater than or equal"),
    ],
)
def test_mark_run_refuses_a_bad_deployment_before_starting_anything(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["--repo", str(tmp_path / "repo"), "run", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()  # nothing was built


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "dup.yaml",
            "slo: {rt_max_ms: 100}\nslo: {sl_min: 0.5}\n",
            "not valid YAML: key 'slo' appears twice in one mapping (line 2)",
        ),
        ("dup.json", '{"lambda": {"concurrency": 4}, "lambda": {}}', "not valid JSON: key 'lambda' appears twice"),
        ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("deep.yaml", "models: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
)
def test_a_file_that_says_two_things_or_is_not_a_config_is_refused(
    name: str, text: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def test_non_utf8_is_named_with_its_file(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match=rf"^{path}: 1 problem\n  not UTF-8 text \(byte 6\)"):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"fleet": {"max_instances": True}}, [("fleet.max_instances", "Input should be a valid integer (got True)")]),
        ({"slo": {"rt_max_ms": True}}, [("slo.rt_max_ms", "Input should be a valid number (got True)")]),
        ({"slo": {"rt_max_ms": "200"}}, [("slo.rt_max_ms", "Input should be a valid number (got '200')")]),
        ({"slo": {"rt_max_ms": float("nan")}}, [("slo.rt_max_ms", "must be a finite number")]),
        (
            {"backend": {"time_factor": 1e-300}},
            [("backend.time_factor", "Input should be greater than or equal to 0.001 (got 1e-300)")],
        ),
        (
            {"frontdoor": {"api_key_sha256": "mysecretkey"}},
            [("frontdoor.api_key_sha256", "Input should be a valid list")],
        ),
        ({"models": ["a", ["b"]]}, [("models[1]", "Input should be a valid string")]),
        (
            {"backend": {"name": "aws", "endpoint_url": "http://AKIA:pw@localhost:4566"}},
            [("backend.endpoint_url", "credentials never go in the deployment config (drop the user:password@ part)")],
        ),
        (
            {"backend": {"name": "aws", "endpoint_url": "http://"}},
            [("backend.endpoint_url", "needs a host, e.g. http://localhost:4566")],
        ),
        (
            {"backend": {"name": "aws", "model_bucket": "Not A Bucket!!"}},
            [
                (
                    "backend.model_bucket",
                    "S3 bucket holding the model artifacts (an S3 bucket name) (got 'Not A Bucket!!')",
                )
            ],
        ),
        ({"models": ["m"] * 65}, [("models", "List should have at most 64 items after validation, not 65")]),
    ],
)
def test_booleans_strings_and_secrets_are_not_numbers_or_urls(data: dict, expected: list[tuple[str, str]]) -> None:
    assert problems(data) == expected


def test_a_backend_section_without_a_name_is_the_local_one_and_an_empty_section_is_the_defaults() -> None:
    assert parse_config({"backend": {"time_factor": 0.5}}).backend == LocalBackend(time_factor=0.5)
    assert parse_config({"backend": None, "slo": None}) == DeploymentConfig()
    found = problems({"backend": {"region": "mars", "aws_secret_access_key": "x"}})
    assert [loc for loc, _ in found] == ["backend.region", "backend.aws_secret_access_key"]  # both, not one


def test_a_rule_across_fields_names_the_flags_it_involves(tmp_path: Path) -> None:
    from orchestrator.cli.config import deployment_from_args

    path = tmp_path / "d.yaml"
    path.write_text("lambda: {concurrency: 4, prewarm: 4}\nfleet: {markets: [on-demand]}\n")
    with pytest.raises(ConfigError) as e:
        deployment_from_args(run_args("--config", str(path), "--lambda-memory-mb", "1024", "--lambda-prewarm", "9"))
    assert e.value.problems == [("lambda (from --lambda-prewarm)", "prewarm (9) exceeds concurrency (4)")]
    with pytest.raises(ConfigError) as e:
        deployment_from_args(run_args("--config", str(path), "--market", "spot"))
    assert e.value.problems == [("fleet (from --market)", "initial_market 'spot' is not among markets (on-demand)")]
    with pytest.raises(ConfigError) as e:
        deployment_from_args(run_args("--instances", "-1"))
    assert [loc for loc, _ in e.value.problems] == ["fleet.initial_instances (from --instances)"]
    with pytest.raises(ConfigError, match="--lambda-prewarm would have no effect with --no-lambda"):
        deployment_from_args(run_args("--no-lambda", "--lambda-prewarm", "3"))


def test_the_local_backend_refuses_more_instances_than_this_machine_holds() -> None:
    from orchestrator.cli.config import check_deployment
    from orchestrator.cloud.local.instances import machine_instance_cap

    cap = machine_instance_cap()
    d = DeploymentConfig(models=["digits_mlp_small"], fleet={"max_instances": cap + 1, "initial_instances": cap + 1})  # type: ignore[arg-type]
    assert check_deployment(d) == [
        (
            "fleet.initial_instances",
            f"{cap + 1} instances: the local backend runs at most {cap} on this machine (its memory and cores)",
        )
    ]
    assert check_deployment(d.model_copy(update={"fleet": d.fleet.model_copy(update={"initial_instances": cap})})) == []


def test_problems_are_capped_in_the_message() -> None:
    e = ConfigError("f.yaml", [(f"models[{i}]", "bad") for i in range(30)])
    lines = str(e).splitlines()
    assert lines[0] == "f.yaml: 30 problems" and lines[-1] == "  ... and 5 more" and len(lines) == 27
