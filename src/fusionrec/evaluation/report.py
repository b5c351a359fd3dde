"""Human-readable evaluation reports: a rich table for the terminal, Markdown and self-contained HTML files."""

from __future__ import annotations

import base64
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from jinja2 import Environment
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from fusionrec.evaluation.evaluator import EvalResult, metric_names

__all__ = ["metrics_table", "print_report", "comparison_sentences", "write_report", "plot_figures"]


def _rows(result: EvalResult) -> list[str]:
    present = set().union(*(r.metrics for r in result.models.values())) if result.models else set()
    return [m for m in metric_names(result.ks) if m in present]


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def _cell(result: EvalResult, model: str, metric: str, style: str) -> str:
    r = result.models[model]
    v = r.metrics.get(metric)
    text = _fmt(v)
    lo, hi = r.ci.get(metric, (None, None))
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        text += f" ±{(hi - lo) / 2:.4f}" if style == "short" else f" [{lo:.4f}, {hi:.4f}]"
    if r.std is not None and metric in r.std:
        text += f" (sd {r.std[metric]:.4f})"
    return text


def metrics_table(result: EvalResult) -> Table:
    """Metrics in rows, models in columns: mean ± half the 95% bootstrap CI; the best model is starred."""
    title = (f"{result.dataset} · {result.protocol} · {result.n_users_evaluated:,} users · "
             f"{result.n_items:,} items · seen items {'excluded' if result.exclude_seen else 'allowed'}")
    table = Table(title=title, title_justify="left")
    table.add_column("metric", no_wrap=True)
    for name in result.models:
        table.add_column(name + (" *" if name == result.best_model else ""), justify="right", no_wrap=True)
    for metric in _rows(result):
        table.add_row(metric, *(_cell(result, n, metric, "short") for n in result.models))
    table.add_row("fit s", *(f"{r.fit_seconds:.2f}" for r in result.models.values()))
    table.add_row("recommend s", *(f"{r.recommend_seconds:.2f}" for r in result.models.values()))
    return table


def comparison_sentences(result: EvalResult, metric: str | None = None) -> list[str]:
    """One line per model against the best on `metric` (default the primary), e.g. 'fusion beats ease ...'."""
    metric = metric or result.primary_metric
    floor = 1.0 / (result.n_bootstrap + 1) if result.n_bootstrap else 0.0
    out = []
    for c in result.comparisons:
        if c["metric"] != metric:
            continue
        verb = "beats" if c["diff"] > 0 else ("ties with" if c["diff"] == 0 else "trails")
        lo, hi = c["ci"]
        out.append(f"{c['model']} {verb} {c['versus']} on {metric} by {c['diff']:+.4f} "
                   f"(95% CI [{lo:+.4f}, {hi:+.4f}]; paired bootstrap p {_p_eq(c['p_bootstrap'], floor)}, "
                   f"paired t-test p {_p_eq(c['p_ttest'])}; {c['n_users']:,} users)")
    return out


def _p(p: float, floor: float = 0.0) -> str:
    """A p-value for people; `floor` is the smallest value the test can give (1 / (resamples + 1))."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if floor and p <= floor * (1 + 1e-9):
        return f"< {floor * 1.0001:.2g}"
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def _p_eq(p: float, floor: float = 0.0) -> str:
    text = _p(p, floor)
    return text if text.startswith("<") else f"= {text}"


def print_report(result: EvalResult, console: Console | None = None) -> None:
    """The metric table and the comparisons with the best model, on the terminal."""
    console = console or Console()
    table = metrics_table(result)
    if not console.is_terminal:
        # piped output has no width to respect: print the table whole rather than wrapped
        wide = console.measure(table, options=console.options.update_width(10_000)).maximum
        console.width = max(console.width, wide)
    console.print(table)
    for line in comparison_sentences(result):
        console.print(line)
    reach = result.reach
    if reach and reach["cold_share"] > 0:
        k = max(result.ks)
        console.print(f"{reach['cold_share']:.1%} of the {reach['targets']:,} test targets are items with no "
                      f"training interaction; models that learn from interactions alone reach at most "
                      f"recall@{k} {reach['ceilings'][f'recall@{k}']:.4f}")


# -- plots --------------------------------------------------------------------------------------

def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_figures(result: EvalResult) -> dict[str, bytes]:
    """PNG bytes by file name: metric vs K, popularity of recommended items, per-user metric distribution."""
    figs: dict[str, bytes] = {}
    models = list(result.models)
    ks = result.ks

    fig = Figure(figsize=(10, 6.5))
    for ax, metric in zip(fig.subplots(2, 2).ravel(), ("recall", "ndcg", "precision", "hr")):
        for name in models:
            r = result.models[name]
            y = np.array([r.metrics.get(f"{metric}@{k}", np.nan) for k in ks])
            ci = np.array([r.ci.get(f"{metric}@{k}", (np.nan, np.nan)) for k in ks])
            err = np.abs(np.vstack([y - ci[:, 0], ci[:, 1] - y]))
            ax.errorbar(ks, y, yerr=err, marker="o", capsize=3, label=name)
        ax.set_xlabel("K")
        ax.set_title(f"{metric}@K (95% CI)")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize="small")
    fig.tight_layout()
    figs["metric_vs_k.png"] = _png(fig)

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    pop = np.asarray(result.item_popularity, np.float64)
    top = max(float(pop.max(initial=1.0)), 1.0)
    bins = np.logspace(0, math.log10(top) + 0.05, 40)
    # shares per log-spaced bin (not densities, which would weigh bins by their linear width)
    if len(pop):
        ax.hist(np.maximum(pop, 1), bins=bins, weights=np.full(len(pop), 1.0 / len(pop)), histtype="step",
                linestyle="--", color="grey", label="catalogue items")
    for name in models:
        rp = result.models[name].rec_popularity
        if len(rp):
            g = result.models[name].metrics.get(f"gini@{ks[-1]}", float("nan"))
            ax.hist(np.maximum(rp, 1), bins=bins, weights=np.full(len(rp), 1.0 / len(rp)), histtype="step",
                    linewidth=1.5, label=f"{name} (Gini {g:.2f})")
    ax.set_xscale("log")
    ax.set_xlabel("item popularity (training users)")
    ax.set_ylabel("share of recommendations (of items, for the catalogue)")
    ax.set_title(f"Popularity of recommended items (top {ks[-1]})")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    figs["popularity.png"] = _png(fig)

    metric = result.primary_metric
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for name in models:
        v = np.sort(result.models[name].per_user.get(metric, np.empty(0)))
        if len(v):
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=f"{name} (mean {v.mean():.4f})")
    ax.set_xlabel(f"per-user {metric}")
    ax.set_ylabel("share of users ≤ x")
    ax.set_title(f"Distribution of {metric} over users")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    figs["per_user.png"] = _png(fig)
    return figs


# -- files --------------------------------------------------------------------------------------

_CAPTIONS = {
    "metric_vs_k.png": "Ranking metrics against K, with 95% bootstrap confidence intervals over users.",
    "popularity.png": "How popular the recommended items are, against the catalogue.",
    "per_user.png": "Per-user distribution of the primary metric.",
}

_HTML = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fusionrec evaluation: {{ r.dataset }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3} pre{background:#f6f6f6;padding:.8em;overflow-x:auto}
figure{margin:1.5em 0} img{max-width:100%} .best{font-weight:bold}
</style></head><body>
<h1>Evaluation: {{ r.dataset }}</h1>
<ul>
<li>format <code>{{ r.format }}</code>, protocol <code>{{ r.protocol }}</code>{% if r.test_days %}, test window {{ "{:g}".format(r.test_days) }} days{% endif %}{% if r.folds %}, {{ r.folds }} folds (mean, sd across folds){% endif %}</li>
<li>{{ "{:,}".format(r.n_users_evaluated) }} users evaluated, {{ "{:,}".format(r.n_items) }} items ranked (full ranking), seen items {{ "excluded" if r.exclude_seen else "allowed (repeats count)" }}</li>
<li>split: {{ r.split_description | join(" | ") }}</li>
<li>data checksum (sha256 of input files): <code>{{ r.checksum or "n/a" }}</code></li>
<li>seed {{ r.seed }}; generated {{ when }}</li>
</ul>
<h2>Command</h2>
<pre>{{ command }}</pre>
<h2>Metrics (mean [95% CI])</h2>
<table><tr><th>metric</th>{% for m in models %}<th{% if m == r.best_model %} class="best"{% endif %}>{{ m }}{% if m == r.best_model %} ★{% endif %}</th>{% endfor %}</tr>
{% for row in rows %}<tr><td>{{ row[0] }}</td>{% for c in row[1:] %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h2>Comparisons with the best model ({{ r.primary_metric }})</h2>
<ul>{% for s in sentences %}<li>{{ s }}</li>{% else %}<li>one model only</li>{% endfor %}</ul>
<h2>Plots</h2>
{% for name, data in images %}<figure><img alt="{{ name }}" src="data:image/png;base64,{{ data }}"><figcaption>{{ captions[name] }}</figcaption></figure>
{% endfor %}
</body></html>
""")


def _table_rows(result: EvalResult) -> list[list[str]]:
    rows = [[m, *(_cell(result, n, m, "long") for n in result.models)] for m in _rows(result)]
    rows.append(["fit seconds", *(f"{r.fit_seconds:.2f}" for r in result.models.values())])
    rows.append(["recommend seconds", *(f"{r.recommend_seconds:.2f}" for r in result.models.values())])
    rows.append(["params", *(", ".join(f"{k}={v}" for k, v in r.params.items()) or "-"
                             for r in result.models.values())])
    return rows


def _markdown(result: EvalResult, command: str, images: Sequence[str], when: str) -> str:
    models = list(result.models)
    lines = [f"# Evaluation: {result.dataset}", ""]
    extra = ""
    if result.test_days:
        extra += f", test window {result.test_days:g} days"
    if result.folds:
        extra += f", {result.folds} folds (mean and sd across folds)"
    lines += [
        f"- format `{result.format}`, protocol `{result.protocol}`{extra}",
        f"- {result.n_users_evaluated:,} users evaluated, {result.n_items:,} items ranked (full ranking), "
        f"seen items {'excluded' if result.exclude_seen else 'allowed (repeats count)'}",
        f"- split: {' | '.join(result.split_description)}",
        f"- data checksum (sha256 of input files): `{result.checksum or 'n/a'}`",
        f"- seed {result.seed}; generated {when}",
        "", "## Command", "", "```", command, "```", "",
        "## Metrics (mean [95% CI])", "",
        "| metric | " + " | ".join(f"**{m}** ★" if m == result.best_model else m for m in models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for row in _table_rows(result):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    lines += ["", f"## Comparisons with the best model ({result.primary_metric})", ""]
    lines += [f"- {s}" for s in comparison_sentences(result)] or ["- one model only"]
    lines += ["", "## Plots", ""]
    for name in images:
        lines += [f"![{_CAPTIONS.get(name, name)}]({name})", "", f"*{_CAPTIONS.get(name, name)}*", ""]
    return "\n".join(lines)


def write_report(result: EvalResult, out_dir: Path, command: str | None = None) -> dict[str, Path]:
    """Write report.md (with PNGs beside it) and a self-contained report.html into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = command or result.command or "(command not recorded)"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figs = plot_figures(result)
    paths: dict[str, Path] = {}
    for name, data in figs.items():
        p = out_dir / name
        p.write_bytes(data)
        paths[name] = p
    md = out_dir / "report.md"
    md.write_text(_markdown(result, command, list(figs), when) + "\n", encoding="utf-8")
    page = _HTML.render(
        r=result, command=command, when=when, models=list(result.models), rows=_table_rows(result),
        sentences=comparison_sentences(result), captions=_CAPTIONS,
        images=[(name, base64.b64encode(data).decode("ascii")) for name, data in figs.items()],
    )
    hp = out_dir / "report.html"
    hp.write_text(page, encoding="utf-8")
    paths["report.md"], paths["report.html"] = md, hp
    return paths
