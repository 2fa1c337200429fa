"""A model card for every registered version (Markdown and a self-contained HTML file).

What the model is for, what it was trained and judged on (snapshot and digest, FeatureService and
features, the split), how well it did (validation and test metrics with their bootstrap intervals,
the run's plots), what it cost (energy and emissions of its training), what the gate decided and
against which champion, who approved it if a person did, and what the figures cannot say. It is
written by the pipeline when the gate decides (and again when a person approves or rejects), logged
to the version's run under ``model_card/`` and linked from the version's description.

``python -m crossfit_mlops registry card VERSION`` prints the Markdown.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

from crossfit_mlops.features.specs import feature_set
from crossfit_mlops.features.training_sets import SPLIT_PERCENT, SPLIT_SALT
from crossfit_mlops.tracking import client, fluent
from crossfit_mlops.tracking.history import history

log = logging.getLogger(__name__)

CARD_DIR = "model_card"
PLOTS = ("predicted_vs_actual", "residuals", "feature_importance")
LIVE_TAG_PREFIXES = ("live.", "shadow.", "rollback.")  # written by live monitoring (monitoring/live.py)

_MARKDOWN = """\
# Model card: {{ name }} v{{ version }}

{{ decision_line }}

## Intended use
Predicts a CrossFit athlete's **total lift** (clean and jerk + snatch + deadlift + back squat, in
pounds) from profile and survey answers, for athletes like those of the CrossFit Games open data
(adults 18-90, as the raw contract admits). It estimates; it does not judge an athlete, and it is
not meant for decisions about a person's health or eligibility.

## Model
| what | value |
|---|---|
| family | {{ tags.model_family }} |
| run | `{{ tags.run_name }}` ({{ run_id }}) |
| hyperparameters | {{ params }} |
| code | git {{ run_tags.get('git_commit', 'unknown') }}, package digest {{ run_tags.get('code_version', 'unknown') }} |
| trained by | {{ run_tags.get('airflow.dag_id', '?') }} run {{ run_tags.get('airflow.run_id', '?') }} |

## Data
| what | value |
|---|---|
| snapshot | {{ tags.snapshot_id }} (raw sha256 `{{ tags.snapshot_sha256 }}`) |
| FeatureService | `{{ tags.feature_service }}` ({{ features|length }} features, feature version {{ tags.feature_version }}) |
| split | by athlete, salted hash `{{ split_salt }}`: {{ split }}; rows train / validation / test: {{ rows }} |

Features: {{ features|join(', ') }}.

## Performance
| split | RMSE (lb) | MAE (lb) | R² |
|---|---|---|---|
| validation | {{ '%.1f'|format(m.val_rmse) }} | {{ '%.1f'|format(m.val_mae) }} | {{ '%.3f'|format(m.val_r2) }} |
| test | {{ '%.1f'|format(m.test_rmse) }} [{{ ci('test_rmse') }}] | {{ '%.1f'|format(m.test_mae) }} [{{ ci('test_mae') }}] | {{ '%.3f'|format(m.test_r2) }} [{{ ci('test_r2', '%.3f') }}] |

Brackets: 95% bootstrap intervals over the test athletes. On data of this kind the test R² moves
by about +-0.01 with the choice of split alone, so differences inside these intervals are noise.

{% for plot in plots %}![{{ plot }}]({{ plot }}.png)
{% endfor %}
## Cost of training
Energy {{ '%.4g'|format(m.energy_kwh * 1000) }} Wh, {{ '%.4g'|format(m.emissions_kg_co2eq * 1000) }} g CO2eq
(country {{ params_all.get('codecarbon_country', '?') }}), fit {{ '%.1f'|format(m.fit_seconds) }} s.
Method: {{ run_tags.get('emissions_method', 'CodeCarbon') }}.

## Gate
| what | value |
|---|---|
| decision | **{{ tags.get('gate.decision', 'pending') }}** |
| reason | {{ tags.get('gate.reason', '-') }} |
| champion compared with | {{ tags.get('gate.champion_version', 'none') }} (test RMSE {{ tags.get('gate.champion_test_rmse', 'none') }}) |
| improvement interval | {{ tags.get('gate.improvement_interval', 'none') }} |
| policy | `{{ tags.get('gate.policy', '-') }}` |
{% if approvals %}
## Human approval
| at | decision | by | reason |
|---|---|---|---|
{% for e in approvals %}| {{ e.at }} | {{ e.event }} | {{ e.actor }} | {{ e.reason }} |
{% endfor %}{% endif %}
{% if live %}
## Live traffic
What monitoring measured on the API's traffic (`live.*`: as @champion; `shadow.*`: scored in the
shadow of the champion named; `rollback.*`: why it was rolled back). Live figures are on the
requests whose labels had arrived; the intervals are 95% bootstrap intervals over those requests.

| tag | value |
|---|---|
{% for key, value in live %}| `{{ key }}` | {{ value }} |
{% endfor %}{% endif %}
## Known limits
- Emissions are CodeCarbon estimates: without RAPL counters (virtual machines, containers) it
  takes CPU power from the CPU's TDP times its load and RAM power from its size.
- The data are what athletes typed into a web form: self-reported lifts, body weights (some in kg,
  which the contract drops), survey answers; they show associations, not causes.
- Within one sex the features explain about half of the variance: expect errors of about
  {{ '%.0f'|format(m.test_rmse) }} lb (RMSE) on athletes like the test set, more on others.
{% if raw_source == 'generated' %}- This version was trained on a **generated** snapshot (the project's simulator), not on real athletes.
{% endif %}"""

_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}}
table{{border-collapse:collapse;margin:.5rem 0 1rem}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}}
th{{background:#f4f4f4}}img{{max-width:100%;border:1px solid #eee;margin:.25rem 0}}code{{background:#f4f4f4;padding:0 .2rem}}
</style></head><body>{body}</body></html>"""


def _context(tracking_uri: str, model_name: str, version: str, plot_dir: Path) -> dict[str, Any]:
    c = client(tracking_uri)
    mv = c.get_model_version(model_name, version)
    run = c.get_run(mv.run_id)
    params = run.data.params
    hyper = {k: v for k, v in params.items() if not k.startswith(("rows_", "n_features", "model", "feature_version", "codecarbon"))}
    metrics = dict(run.data.metrics)
    spec = feature_set(mv.tags["feature_version"])
    events = [e for e in history(tracking_uri, model_name) if e["version"] == str(version) and e["event"].startswith("approval")]
    return {
        "name": model_name, "version": version, "tags": dict(mv.tags), "run_id": mv.run_id, "run_tags": run.data.tags,
        "params": ", ".join(f"{k}={v}" for k, v in sorted(hyper.items())) or "defaults", "params_all": params,
        "m": metrics, "features": spec.names, "split_salt": SPLIT_SALT,
        "split": " / ".join(f"{p}% {s}" for s, p in SPLIT_PERCENT.items()),
        "rows": " / ".join(params.get(f"rows_{s}", "?") for s in ("train", "validation", "test")),
        "ci": lambda key, fmt="%.1f": f"{fmt % metrics[key + '_low']} to {fmt % metrics[key + '_high']}" if key + "_low" in metrics else "-",
        "plots": [p for p in PLOTS if (plot_dir / f"{p}.png").is_file()], "approvals": events,
        "raw_source": _raw_source(mv.tags.get("snapshot_id")),
        "decision_line": _decision_line(mv.tags),
        "live": sorted((k, v) for k, v in mv.tags.items() if k.startswith(LIVE_TAG_PREFIXES)),
    }  # fmt: skip


def _raw_source(snapshot_id: str | None) -> str:
    """Where the version's snapshot came from ("generated" / "provided"), if its manifest is here."""
    from crossfit_mlops.storage import catalog

    try:
        return catalog().raw_manifest(snapshot_id).source if snapshot_id else ""
    except (FileNotFoundError, ValueError):
        return ""


def _decision_line(tags: dict[str, str]) -> str:
    decision = tags.get("gate.decision", "pending")
    if decision == "promoted":
        return "**Promoted to @champion** by the gate" + (" and a person's approval." if tags.get("approval.by") else ".")
    if decision == "rejected":
        return "**Not promoted**: the gate kept the champion (reason below)."
    return f"Gate decision: **{decision}**."


def render(tracking_uri: str, model_name: str, version: str, workdir: Path) -> tuple[str, str]:
    """``(markdown, self-contained html)`` of the version's card; the run's plots are fetched into
    ``workdir`` (and embedded in the HTML)."""
    import mlflow
    from jinja2 import Environment, StrictUndefined
    from markdown_it import MarkdownIt
    from mlflow.exceptions import MlflowException

    mv = client(tracking_uri).get_model_version(model_name, version)
    with fluent(tracking_uri):
        for plot in PLOTS:
            try:
                mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=f"plots/{plot}.png", dst_path=str(workdir))
            except (MlflowException, OSError):  # a run logged without that plot: the card says less
                log.info("run %s has no plot %s", mv.run_id, plot)
    plot_dir = workdir  # download_artifacts puts plots/<name>.png at <dst>/<name>.png
    env = Environment(undefined=StrictUndefined, autoescape=False, trim_blocks=False)
    markdown = env.from_string(_MARKDOWN).render(**_context(tracking_uri, model_name, version, plot_dir))
    body = MarkdownIt("commonmark").enable("table").render(markdown)
    for plot in PLOTS:
        if (plot_dir / f"{plot}.png").is_file():
            data = base64.b64encode((plot_dir / f"{plot}.png").read_bytes()).decode()
            body = body.replace(f'src="{plot}.png"', f'src="data:image/png;base64,{data}"')
    return markdown, _HTML.format(title=f"{model_name} v{version}", body=body)


def write_card(tracking_uri: str, model_name: str, version: str) -> str:
    """Render the card, log it to the version's run (``model_card/``), link it from the version's
    description; returns the card's artifact URI (``runs:/<run>/model_card/card.html``)."""
    import tempfile

    c = client(tracking_uri)
    mv = c.get_model_version(model_name, version)
    with tempfile.TemporaryDirectory() as tmp:
        markdown, html = render(tracking_uri, model_name, version, Path(tmp))
        (Path(tmp) / "card.md").write_text(markdown)
        (Path(tmp) / "card.html").write_text(html)
        c.log_artifact(mv.run_id, str(Path(tmp) / "card.md"), CARD_DIR)
        c.log_artifact(mv.run_id, str(Path(tmp) / "card.html"), CARD_DIR)
    uri = f"runs:/{mv.run_id}/{CARD_DIR}/card.html"
    first_line = (mv.description or "").split("\nModel card:")[0]
    c.update_model_version(model_name, version, description=f"{first_line}\nModel card: {uri}")
    c.set_model_version_tag(model_name, version, "model_card", uri)
    return uri


def read_card(tracking_uri: str, model_name: str, version: str) -> str:
    """The Markdown of a version's card (what ``registry card`` prints)."""
    import mlflow

    mv = client(tracking_uri).get_model_version(model_name, version)
    with fluent(tracking_uri):
        return mlflow.artifacts.load_text(f"runs:/{mv.run_id}/{CARD_DIR}/card.md")
