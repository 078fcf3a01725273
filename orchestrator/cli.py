"""``mark``: the command line. Subcommands: zoo, profile, worker, run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.errors import InferenceError

DEFAULT_MODEL = "digits_mlp_small"
# sklearn's digits image 0 (a handwritten "0"), so the printed curl command returns a real answer.
DIGIT_ZERO = (
    "[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,"
    "0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]"
)


def _repo(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from inference.repository import ModelRepository

    return ModelRepository(args.repo)


def cmd_zoo_build(args: argparse.Namespace) -> int:
    from inference.zoo import FAMILIES

    repo = _repo(args)
    families = args.family or ["digits"]
    for fam in families:
        if fam not in FAMILIES:
            print(f"error: unknown family {fam!r}; choose from {', '.join(FAMILIES)}", file=sys.stderr)
            return 2
    for fam in families:
        if fam == "digits":
            from inference.zoo import digits

            cards = digits.build(repo, only=args.only)
        else:
            try:
                from inference.zoo import imagenet
            except ImportError as e:
                print(
                    f"error: the imagenet family needs the 'zoo' extra ({e.name} is missing): "
                    "run `bash scripts/setup-venv.sh zoo,dev`",
                    file=sys.stderr,
                )
                return 2
            cards = imagenet.build(repo, only=args.only)
        for c in cards:
            print(
                f"{c.name:24} {c.family:9} top1 {c.primary_accuracy:.3f}  {c.file_bytes / 1e6:7.2f} MB  {c.sha256[:12]}"
            )
    print(f"model repository: {repo.root}")
    return 0


def cmd_zoo_list(args: argparse.Namespace) -> int:
    repo = _repo(args)
    cards = repo.cards()
    if not cards:
        print(f"no models in {repo.root}; build some with `mark zoo build digits` or `mark zoo build imagenet`")
        return 0
    print(f"{'name':24} {'family':9} {'accuracy':>8} {'source':9} {'size MB':>8}  input")
    for c in cards:
        acc = c.accuracy[0] if c.accuracy else None
        inp = ", ".join(f"{t.name}:{t.datatype}{list(t.shape)}" for t in c.inputs)
        print(
            f"{c.name:24} {c.family:9} {c.primary_accuracy:8.3f} {acc.source if acc else '-':9} "
            f"{c.file_bytes / 1e6:8.2f}  {inp}"
        )
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from orchestrator.profiler import PROFILES_DIR, profile, write_profile

    result = profile(
        _repo(args),
        args.model,
        threads=args.threads,
        max_batch=args.max_batch,
        slots=args.slots,
        min_samples=args.samples,
    )
    path = write_profile(result, Path(args.out) if args.out else PROFILES_DIR)
    print(f"{'batch':>5} {'p50 ms':>10} {'p99 ms':>10} {'rows/s':>10}")
    for row in result["batches"]:
        print(f"{row['batch_size']:5d} {row['p50_ms']:10.3f} {row['p99_ms']:10.3f} {row['throughput_rps']:10.1f}")
    print(f"wrote {path}")
    return 0


def _worker_settings(args: argparse.Namespace, models: list[str]):  # type: ignore[no-untyped-def]
    from ec2_worker.config import WorkerSettings

    return WorkerSettings(
        models=models,
        repository=args.repo,
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        threads=args.threads,
        slots=args.slots,
        max_batch_size=args.max_batch,
        batch_timeout_ms=args.batch_timeout_ms,
        max_queue=args.max_queue,
        rt_max_ms=args.rt_max_ms,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    from ec2_worker.server import run

    run(_worker_settings(args, args.model))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The local default: make sure the model exists, then serve it and say how to call it."""
    from ec2_worker.server import run

    repo = _repo(args)
    if not repo.has(args.model):
        from inference.zoo import digits

        if args.model not in {v.name for v in digits.VARIANTS}:
            print(f"error: model {args.model!r} is not built; run `mark zoo build imagenet` first", file=sys.stderr)
            return 2
        print(f"[run] building the digits family into {repo.root} (first run only)", file=sys.stderr)
        digits.build(repo, only=[args.model])
    card = repo.card(args.model)
    inp = card.inputs[0]
    base = f"http://{args.host}:{args.port}"
    example = DIGIT_ZERO if card.family == "digits" else "..."
    print(
        f"\nserving {args.model} ({card.family}, top-1 {card.primary_accuracy:.3f}) on {base}\n"
        f"  health:   curl {base}/v2/health/ready\n"
        f"  metadata: curl {base}/v2/models/{args.model}\n"
        f"  infer:    curl -s -X POST {base}/v2/models/{args.model}/infer -d "
        f'\'{{"inputs":[{{"name":"{inp.name}","datatype":"{inp.datatype}","shape":[1,64],"data":{example}}}]}}\'\n'
        f"  metrics:  curl {base}/metrics\n"
        f"  python:   tritonclient.http.InferenceServerClient('{args.host}:{args.port}')\n"
        "Ctrl-C stops (accepted requests are finished first).\n",
        flush=True,
    )
    run(_worker_settings(args, [args.model]))
    return 0


def _add_worker_flags(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="public interface (default loopback)")
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--admin-port", type=int, default=0, help="internal control port on 127.0.0.1 (0 = any free)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads per slot")
    p.add_argument("--slots", type=int, default=1, help="batches executed at once (2 slots x 1 thread suits 2 cores)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-timeout-ms", type=float, default=5.0)
    p.add_argument("--max-queue", type=int, default=256)
    p.add_argument("--rt-max-ms", type=float, default=200.0, help="default per-request deadline (RTmax)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mark", description="Hybrid IaaS + FaaS inference orchestrator")
    p.add_argument("--repo", default=None, help="model repository folder (default: $MARK_MODEL_REPO or ./model-repo)")
    sub = p.add_subparsers(dest="command", required=True)

    zoo = sub.add_parser("zoo", help="build and list models").add_subparsers(dest="zoo_command", required=True)
    b = zoo.add_parser("build", help="build model families into the repository")
    b.add_argument("family", nargs="*", help="digits, imagenet (default: digits)")
    b.add_argument("--only", nargs="+", help="only these variant names")
    b.set_defaults(func=cmd_zoo_build)
    zoo.add_parser("list", help="list built models").set_defaults(func=cmd_zoo_list)

    pr = sub.add_parser("profile", help="measure T(b) for a model on this machine")
    pr.add_argument("model")
    pr.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads per slot")
    pr.add_argument("--slots", type=int, default=1, help="batches run at once (a worker's parallel slots)")
    pr.add_argument("--max-batch", type=int, default=32)
    pr.add_argument("--samples", type=int, default=50, help="minimum timed runs per batch size")
    pr.add_argument("--out", default=None, help="profiles folder (default: profiles/latency in the checkout)")
    pr.set_defaults(func=cmd_profile)

    w = sub.add_parser("worker", help="run one EC2-worker server")
    w.add_argument("--model", nargs="+", required=True)
    _add_worker_flags(w, 8000)
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser("run", help="the local default: build the model if needed and serve it")
    r.add_argument("--model", default=DEFAULT_MODEL)
    _add_worker_flags(r, 8000)
    r.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (InferenceError, FileNotFoundError, ValueError) as e:
        msg = e.message if isinstance(e, InferenceError) else str(e)
        print(f"error: {msg}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
