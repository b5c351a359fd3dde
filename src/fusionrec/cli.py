"""The `fusionrec` command line: each command parses its arguments and calls one library function."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fusionrec.errors import FusionrecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="fusionrec: e-commerce recommendations from many models fused by a learned ranker.")
console = Console(stderr=True)
out = Console()


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A user's mistake becomes one line on stderr and exit code 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FusionrecError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            console.print(f"[bold red]error:[/] {exc.filename}: {exc.strerror}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                    TextColumn("{task.completed:,.0f}/{task.total:,.0f}"), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


def _emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=1, default=str) + "\n")


@app.command()
@user_errors
def generate(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write events, items and users into."),
    users: int = typer.Option(5_000, min=1, max=100_000_000, help="Number of customers."),
    items: int = typer.Option(2_000, min=1, max=100_000_000, help="Number of products."),
    events: int = typer.Option(200_000, min=0, max=2_000_000_000, help="Number of events."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same shop."),
    parquet: bool = typer.Option(False, "--parquet", help="Write Parquet instead of CSV."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate the built-in synthetic shop in the native format."""
    import time

    from fusionrec.data.synthetic import ShopConfig, generate_shop, write_shop

    t0 = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("generating events", total=events)
        shop = generate_shop(ShopConfig(n_users=users, n_items=items, n_events=events, seed=seed),
                             progress=lambda done: bar.update(task, completed=done))
        bar.update(task, description="writing files", completed=events)
        paths = write_shop(shop, out_dir, parquet=parquet)
    summary = {"out": str(out_dir), "events": shop.events.height, "items": shop.items.height,
               "users": shop.users.height, "files": {k: str(v) for k, v in paths.items()},
               "seconds": round(time.perf_counter() - t0, 2)}
    if as_json:
        _emit_json(summary)
    else:
        out.print(f"wrote {summary['events']:,} events, {summary['items']:,} items and {summary['users']:,} users "
                  f"to {out_dir} in {summary['seconds']} s")


@app.command()
@user_errors
def ingest(
    paths: list[Path] = typer.Argument(..., help="Files or folders to load."),
    store: Path = typer.Option(..., "--store", help="The DuckDB store file (created if missing)."),
    fmt: str = typer.Option(..., "--format", help="Input format: fusionrec, taobao, lightgcn, ehcf, s3rec, "
                            "movielens, yoochoose, diginetica."),
    since: Optional[str] = typer.Option(None, help="Reject events before this UTC date/time (ISO 8601)."),
    until: Optional[str] = typer.Option(None, help="Reject events after this UTC date/time (ISO 8601)."),
    show_rejects: int = typer.Option(5, min=0, help="How many quarantined rows to print."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Validate and load events (and catalogue/users) into the store; rejects are quarantined."""
    from fusionrec.data.validation import ValidationRules
    from fusionrec.store.open import open_store

    rules = ValidationRules(time_range=_time_range(since, until))
    with open_store(store) as st, _progress() as bar:
        task = bar.add_task("ingesting", total=None)
        report = st.ingest(paths, fmt, rules=rules, progress=lambda src: bar.update(task, description=f"ingesting {Path(src).name}"))
        rejects = st.quarantine(limit=show_rejects) if show_rejects and report.total.rejected else None
    if as_json:
        _emit_json(report.to_dict())
        return
    t = Table(title=f"ingest ({fmt}) into {store}")
    for col in ("source", "rows in", "accepted", "rejected", "duplicates"):
        t.add_column(col, justify="right" if col != "source" else "left")
    for c in report.sources + ([report.total] if len(report.sources) > 1 else []):
        t.add_row(Path(c.source).name, f"{c.rows_in:,}", f"{c.accepted:,}", f"{c.rejected:,}", f"{c.duplicates:,}")
    out.print(t)
    tot = report.total
    rate = tot.rows_in / report.seconds if report.seconds else 0
    out.print(f"rows in {tot.rows_in:,} = accepted {tot.accepted:,} + rejected {tot.rejected:,} + duplicates "
              f"{tot.duplicates:,} ({report.seconds:.1f} s, {rate:,.0f} rows/s)")
    for reason, n in tot.reasons.items():
        out.print(f"  rejected {n:,}: {reason}")
    if rejects is not None and rejects.height:
        out.print("first quarantined rows:")
        for row in rejects.iter_rows(named=True):
            out.print(f"  {row['source']}:{row['line']}: {row['reason']}", highlight=False)
    for note in report.notes:
        out.print(f"note: {note}")


def _time_range(since: str | None, until: str | None):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    from fusionrec.errors import ConfigError

    if since is None and until is None:
        return None

    def parse(value: str | None, default: datetime, flag: str) -> datetime:
        if value is None:
            return default
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{flag}: {value!r} is not an ISO 8601 date or time (e.g. 2026-01-31T00:00:00Z)") from None
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)

    lo = parse(since, datetime(1990, 1, 1, tzinfo=timezone.utc), "--since")
    hi = parse(until, datetime(2200, 1, 1, tzinfo=timezone.utc), "--until")
    if lo >= hi:
        raise ConfigError(f"--since {since} is not before --until {until}")
    return (lo, hi)


@app.command()
@user_errors
def stats(
    store: Path = typer.Option(..., "--store", help="The DuckDB store file."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Counts per behaviour, users, items, density, date range and funnel rates."""
    from fusionrec.store.open import open_store

    with open_store(store, must_exist=True, read_only=True) as st:
        s = st.stats()
    if as_json:
        _emit_json(s)
        return
    t = Table(title=f"{store}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("events", f"{s['events']:,}")
    t.add_row("users", f"{s['users']:,}")
    t.add_row("items (with events)", f"{s['items']:,}")
    t.add_row("catalogue items", f"{s['catalogue_items']:,}")
    t.add_row("density", f"{s['density']:.6f}")
    t.add_row("date range", f"{s['first']} .. {s['last']}")
    for b, n in s["behaviors"].items():
        t.add_row(f"  {b}", f"{n:,}")
    for step, r in s["funnel"].items():
        t.add_row(f"funnel {step}", "-" if r is None else f"{r:.2%}")
    t.add_row("quarantined rows", f"{s['quarantined']:,}")
    t.add_row("bot/outlier users (flagged)", f"{s['bot_users']:,}")
    out.print(t)


def _stored_user_id(user: str) -> str:
    """The id a raw user id is stored under (its keyed HMAC when FUSIONREC_PSEUDONYM_KEY is set)."""
    from fusionrec.config import read_secrets
    from fusionrec.privacy import stored_user_id

    return stored_user_id(user, read_secrets().pseudonym_key)


def _csv_list(value: str, flag: str) -> list[str]:
    from fusionrec.errors import ConfigError

    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"{flag}: expected a comma-separated list, got {value!r}")
    return items


def _ks(value: str) -> list[int]:
    from fusionrec.errors import ConfigError

    try:
        ks = sorted({int(v) for v in _csv_list(value, "--k")})
    except ValueError:
        raise ConfigError(f"--k: expected positive integers such as 10,20; got {value!r}") from None
    if any(k <= 0 or k > 1000 for k in ks):
        raise ConfigError(f"--k: each K must be between 1 and 1000; got {value!r}")
    return ks


@app.command()
@user_errors
def evaluate(
    data: Path = typer.Option(..., "--data", help="Dataset file or folder."),
    fmt: str = typer.Option(..., "--format", help="Input format (see `ingest --help`)."),
    protocol: str = typer.Option(..., "--protocol", help="given, temporal, leave-last-out or kfold."),
    models: str = typer.Option("pop,itemknn,rp3beta,ease,als", "--models", help="Comma-separated model names."),
    k: str = typer.Option("10,20", "--k", help="Cut-offs, comma-separated."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the metrics JSON here."),
    save_recs: Optional[Path] = typer.Option(None, "--save-recs", help="Write every recommendation list as CSV."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write Markdown and HTML reports into this folder."),
    seed: int = typer.Option(0, "--seed", help="Seed for models, folds and bootstrap."),
    test_days: Optional[float] = typer.Option(None, "--test-days", min=0.0, help="temporal: the last D days are test."),
    exclude_seen: bool = typer.Option(True, "--exclude-seen/--include-seen",
                                      help="Exclude items the user had in training from targets and lists."),
    folds: int = typer.Option(5, "--folds", min=2, max=20, help="kfold: number of folds over users."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML with [models.NAME] parameters (e.g. configs/*.toml)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result JSON on stdout."),
) -> None:
    """Fit models on a protocol's training data and measure them on its test targets."""
    import shlex

    from fusionrec.data.loading import load_dataset
    from fusionrec.evaluation.evaluator import evaluate as run_evaluation
    from fusionrec.evaluation.model_config import read_model_params
    from fusionrec.evaluation.report import print_report, write_report
    from fusionrec.evaluation.splits import EvaluationError
    from fusionrec.errors import ConfigError

    ks = _ks(k)
    names = _csv_list(models, "--models")
    if protocol == "temporal" and test_days is None:
        raise ConfigError("--protocol temporal needs --test-days D (the last D days are the test window)")
    command = "fusionrec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with _progress() as bar:
        task = bar.add_task(f"loading {data}", total=None)
        ds = load_dataset(data, fmt)
        params = read_model_params(config)
        try:
            result = run_evaluation(ds, protocol, names, ks, params=params, seed=seed, test_days=test_days,
                                    exclude_seen=exclude_seen, folds=folds, command=command,
                                    progress=lambda msg: bar.update(task, description=msg))
        except EvaluationError as exc:
            raise ConfigError(str(exc)) from None
    if output:
        result.write_json(output)
    if save_recs:
        result.save_recs(save_recs)
    if report:
        paths = write_report(result, report, command=command)
        console.print(f"report: {paths.get('html', report)}")
    if as_json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        print_report(result, out)


@app.command()
@user_errors
def tune(
    data: Path = typer.Option(..., "--data", help="Dataset file or folder."),
    fmt: str = typer.Option(..., "--format", help="Input format."),
    protocol: str = typer.Option(..., "--protocol", help="given, temporal, leave-last-out or kfold."),
    model: str = typer.Option(..., "--model", help="The generator to tune (its declared search space)."),
    trials: int = typer.Option(20, "--trials", min=1, max=1000, help="Optuna trials."),
    metric: str = typer.Option("ndcg@20", "--metric", help="Validation metric to maximise, e.g. ndcg@20, recall@20."),
    test_days: Optional[float] = typer.Option(None, "--test-days", min=0.0, help="temporal: the last D days are test."),
    exclude_seen: bool = typer.Option(True, "--exclude-seen/--include-seen"),
    seed: int = typer.Option(0, "--seed"),
    write: Optional[Path] = typer.Option(None, "--write", help="Merge the best parameters into this TOML config."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Search a generator's hyper-parameters on the validation split carved from training data."""
    from fusionrec.data.loading import load_dataset
    from fusionrec.errors import ConfigError
    from fusionrec.evaluation.splits import EvaluationError
    from fusionrec.evaluation.tuning import tune as run_tune, write_params

    if metric.split("@")[0] not in ("recall", "ndcg", "hr", "precision", "map", "mrr") or "@" not in metric:
        raise ConfigError(f"--metric: expected e.g. ndcg@20 or recall@20, got {metric!r}")
    with _progress() as bar:
        task = bar.add_task(f"loading {data}", total=None)
        ds = load_dataset(data, fmt)
        try:
            res = run_tune(ds, protocol, model, trials=trials, metric=metric, seed=seed, test_days=test_days,
                           exclude_seen=exclude_seen, progress=lambda m: bar.update(task, description=m))
        except EvaluationError as exc:
            raise ConfigError(str(exc)) from None
    if write:
        write_params(write, res, f"{metric} {res.best_value:.4f} on validation (defaults {res.baseline_value:.4f}), "
                                  f"{trials} trials, {res.split}")
    summary = {"model": model, "metric": metric, "best_value": res.best_value, "defaults_value": res.baseline_value,
               "best_params": res.best_params, "trials": len(res.trials), "seconds": round(res.seconds, 1),
               "validation": res.split}
    if as_json:
        _emit_json(summary)
    else:
        out.print(f"{model}: validation {metric} {res.best_value:.4f} (defaults {res.baseline_value:.4f}) "
                  f"with {res.best_params}" + (f"; written to {write}" if write else ""))



# -- serving: train a model version, serve it, ask it, forget a user ------------------------------

@app.command()
@user_errors
def train(
    store: Optional[Path] = typer.Option(None, "--store", help="The DuckDB store file to train on (embedded engine)."),
    out_dir: Path = typer.Option(..., "--out", help="Model directory: a new version folder is written and made current."),
    pipeline: Optional[Path] = typer.Option(None, "--pipeline", help="Pipeline TOML (default: the built-in pipeline)."),
    engine: str = typer.Option("embedded", "--engine", help="embedded (DuckDB + numpy, reads --store) or spark "
                               "(Apache Spark, reads --events)."),
    events: Optional[str] = typer.Option(None, "--events", help="spark: event log PATH_OR_GLOB (CSV or Parquet; "
                                         "a folder, a glob, or an object-store URL passed to Spark)."),
    fmt: str = typer.Option("fusionrec", "--format", help="spark: format of --events: fusionrec or taobao."),
    items: Optional[str] = typer.Option(None, "--items", help="spark: catalogue file (native items CSV or Parquet)."),
    spark_master: str = typer.Option("local[*]", "--spark-master", help="spark: master URL (local[*], spark://..., "
                                     "yarn, k8s://...)."),
    spark_conf: Optional[list[str]] = typer.Option(None, "--spark-conf", help="spark: a Spark setting KEY=VALUE, "
                                                   "repeatable (e.g. spark.driver.memory=8g for a local run)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Fit the fused pipeline (bots excluded) and write a new model version, on the store or on Spark."""
    import time

    from fusionrec.errors import ConfigError
    from fusionrec.pipeline import load_pipeline_config

    if engine not in ("embedded", "spark"):
        raise ConfigError(f"--engine: expected embedded or spark, got {engine!r}")
    if engine == "embedded":
        if store is None:
            raise ConfigError("--store is required with --engine embedded (or train on Spark: --engine spark --events PATH)")
        if events is not None or items is not None:
            raise ConfigError("--events and --items go with --engine spark; the embedded engine reads --store")
    else:
        if events is None:
            raise ConfigError("--engine spark needs --events PATH_OR_GLOB (the event log to read)")
        if store is not None:
            raise ConfigError("--store goes with --engine embedded; --engine spark reads --events")
    if spark_conf and engine != "spark":
        raise ConfigError("--spark-conf goes with --engine spark")
    conf = {}
    for pair in spark_conf or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().startswith("spark.") or not value.strip():
            raise ConfigError(f"--spark-conf: expected KEY=VALUE with a spark.* key, got {pair!r}")
        conf[key.strip()] = value.strip()
    cfg = load_pipeline_config(pipeline) if pipeline else None
    t0 = time.perf_counter()
    if engine == "spark":
        from fusionrec.spark.session import SparkSettings
        from fusionrec.spark.train import train_spark

        with _progress() as bar:
            task = bar.add_task("training on Spark", total=None)
            folder = train_spark(events, fmt, out_dir, cfg, items=items,  # type: ignore[arg-type]
                                 settings=SparkSettings(master=spark_master, conf=conf),
                                 progress=lambda msg: bar.update(task, description=msg))
    else:
        from fusionrec.serving.training import train_version
        from fusionrec.store.open import open_store

        try:
            opened = open_store(store, must_exist=True, read_only=True)  # type: ignore[arg-type]
        except FusionrecError as exc:
            if "lock" not in str(exc):
                raise
            raise FusionrecError(f"{exc}; if `fusionrec serve` holds the store, retrain through it: "
                                 "POST /admin/retrain") from None
        with opened as st, _progress() as bar:
            task = bar.add_task("training", total=None)
            folder = train_version(st, out_dir, cfg, progress=lambda msg: bar.update(task, description=msg))
    manifest = json.loads((folder / "manifest.json").read_text())
    summary = {"version": manifest["version"], "path": str(folder), "data": manifest["data"],
               "metrics": manifest["metrics"], "seconds": round(time.perf_counter() - t0, 2)}
    if as_json:
        _emit_json(summary)
        return
    out.print(f"wrote model version {summary['version']} to {folder} ({summary['seconds']} s) and made it current")
    for key in ("valid_ndcg@20_heldout_users", "candidate_recall"):
        if key in summary["metrics"]:
            out.print(f"  {key}: {summary['metrics'][key]}")


@app.command()
@user_errors
def serve(
    model: Path = typer.Option(..., "--model", help="Model directory (its `current` version is served)."),
    store: Path = typer.Option(..., "--store", help="The DuckDB store: live events are written to it."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    config: Optional[Path] = typer.Option(None, "--config", help="Serving TOML: [serving] settings, [[experiments]]."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (paths carry user ids)."),
) -> None:
    """Serve the HTTP API (OpenAPI at /docs): recommendations, similar items, events in, forget, metrics, A/B."""
    import logging

    import uvicorn

    from fusionrec.errors import FusionrecError
    from fusionrec.serving.app import create_app
    from fusionrec.serving.settings import load_settings

    if not store.exists():
        raise FusionrecError(f"{store}: no such store; create it with `fusionrec ingest --store {store} ...`")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(config)
    if settings.api_key is None:
        console.print("note: no FUSIONREC_API_KEY set: writes are accepted from loopback clients only")
    application = create_app(model, store, settings)
    # keep-alive longer than the usual proxy/client idle timeouts (60 s), so the server does not close a
    # connection at the moment a client reuses it
    uvicorn.run(application, host=host, port=port, access_log=access_log, log_level="info", timeout_keep_alive=75)


@app.command()
@user_errors
def recommend(
    model: Path = typer.Option(..., "--model", help="Model directory or version folder."),
    user: str = typer.Option(..., "--user", help="The user id."),
    k: int = typer.Option(10, "--k", min=1, max=100, help="How many items."),
    store: Optional[Path] = typer.Option(None, "--store", help="Use the store's current history (default: the "
                                         "history the model was trained on)."),
    category: Optional[str] = typer.Option(None, "--category", help="Only items of this category (prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON (the API's format)."),
) -> None:
    """Recommendations for one user, with the reasons, without starting a server."""
    from fusionrec.serving.standalone import recommend_offline

    answer = recommend_offline(model, _stored_user_id(user), k, store=store, category=category)
    answer["user_id"] = user
    if as_json:
        _emit_json(answer)
        return
    t = Table(title=f"{user} ({answer['model_version']})")
    for col in ("rank", "item", "score", "why"):
        t.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for rank, it in enumerate(answer["items"], start=1):
        why = ", ".join(r.get("text") or f"{r.get('generator')} #{r.get('rank')}" for r in it["reasons"])
        t.add_row(str(rank), it["item_id"], f"{it['score']:.4f}", why)
    out.print(t)


@app.command()
@user_errors
def forget(
    store: Path = typer.Option(..., "--store", help="The DuckDB store file."),
    user: str = typer.Option(..., "--user", help="The user id to forget."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model directory: remove the user from every version."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Remove a user's events from the store and their state from the model; audit-logged by pseudonym."""
    from fusionrec.serving.forget import forget_user

    result = forget_user(store, _stored_user_id(user), model)
    result["user_id"] = user
    if as_json:
        _emit_json(result)
        return
    out.print(f"forgot {result['subject']}: {result['events_deleted']:,} events deleted, "
              f"{len(result['model_versions_updated'])} model version(s) updated")


if __name__ == "__main__":  # pragma: no cover
    app()
