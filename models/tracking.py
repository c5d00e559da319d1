"""MLflow: where runs go, what each training run logs, and the model registry.

Embedded by default: a SQLite store and an artifact folder under ``<output dir>/mlflow``, so
nothing needs a server. A tracking URI given on the command line or in ``MLFLOW_TRACKING_URI``
wins. One experiment per ICB (``phm-risk <ICB code>``).

A training run is a parent run with one child run per outcome x model kind x input variant.
Every child logs its parameters, validation metrics (with QRISK3 / QDiabetes measured on the
same patients), the feature list, the training-data digest, calibration and ROC plots, and the
model with its signature and pinned requirements. The candidate of each outcome is registered
as a new version of ``phm-<ICB>-<outcome>`` with the alias ``candidate``; only the fairness gate
moves ``champion``.

Nothing patient-level is logged: no input example, counts only after small-number
suppression (as parameters, so they are text), plots of aggregates over bins of at least
100 patients.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from models.fairness import NOT_AUDITED
from models.metrics import Validation, validate
from models.train import (
    COMPARATOR_NAMES,
    EQUITY_CATEGORICAL,
    EQUITY_FLAGS,
    EQUITY_NUMERIC,
    OUTCOMES,
    Outcome,
    TrainingResult,
)
from phm.disclosure import WITHHELD, show, small
from phm.exceptions import ConfigError

CANDIDATE, CHAMPION = "candidate", "champion"
# The user's setting, read once: mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into the
# environment, so reading it later would return the last URI this process used instead.
CONFIGURED_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
MIN_PATIENTS_PER_BIN = 100


@dataclass(frozen=True)
class TrackingLocation:
    tracking_uri: str
    artifact_root: str | None  # None: the server's or store's default

    def ui_command(self) -> str:
        if self.tracking_uri.startswith("sqlite:"):
            # without MLflow's job workers (seven processes for its GenAI jobs, unused here): the UI
            # answers sooner and does not take a core for a minute (docs/fairness.md)
            return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false uv run mlflow ui --backend-store-uri {self.tracking_uri}"
                    " --host 127.0.0.1")
        return f"open {self.tracking_uri} in a browser"

    def ui_url(self, page: str) -> str:
        """A page of the MLflow UI: on the tracking server, or on ``mlflow ui``'s default address."""
        base = self.tracking_uri if self.tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/{page}"


def tracking_location(output_dir: Path, tracking_uri: str | None = None) -> TrackingLocation:
    """The configured tracking URI, else a SQLite store under ``output_dir/mlflow``."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri or CONFIGURED_TRACKING_URI
    if uri:
        return TrackingLocation(uri, None)
    folder = (Path(output_dir) / "mlflow").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return TrackingLocation(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri())


def store_template_path(mlflow_version: str) -> Path:
    """Where an empty embedded store, its schema migrated, is kept for the next new store of the
    same MLflow version: ``PHM_CACHE_DIR``, else ``$XDG_CACHE_HOME/phm-risk``, else
    ``~/.cache/phm-risk``. It holds MLflow's tables and nothing of any run."""
    base = os.environ.get("PHM_CACHE_DIR")
    if not base:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "phm-risk"
    return Path(base) / f"mlflow-store-{mlflow_version}.db"


def _copy_new(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` whole or not at all, never over a file already there."""
    import shutil
    import threading

    target.parent.mkdir(parents=True, exist_ok=True)
    # a name of this process and thread, created as any new file is (the umask's mode, where a
    # temporary file's would be 0600)
    partial = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial"
    try:
        shutil.copyfile(source, partial)
        os.link(partial, target)  # fails if the target exists: another process made it first
    finally:
        partial.unlink(missing_ok=True)


def _new_store_file(location: TrackingLocation) -> Path | None:
    """The embedded SQLite store's file where it does not exist yet; None for a tracking server or
    a store already made."""
    if not location.tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(location.tracking_uri[len("sqlite:///"):])
    return None if database.exists() else database


def create_store(location: TrackingLocation) -> None:
    """Create the embedded SQLite store's tables if the store is new. On a new file MLflow runs
    its schema migrations one by one (about 2 s of CPU and 3-4 s here), so the first store of an
    MLflow version is kept as a template (``store_template_path``) and later new stores are a copy
    of it; the copy's Default experiment, which the pipeline never uses, is pointed at the store's
    own artifact folder. Anything that goes wrong with the template falls back to MLflow's own
    creation; a failure of that is left to the store's first real use to report."""
    import sqlite3

    import mlflow
    from mlflow import MlflowClient

    database = _new_store_file(location)
    if database is None:
        return
    try:
        template = store_template_path(mlflow.__version__)
    except RuntimeError:  # no home folder to find (a service account without one): no cache
        template = None
    if location.artifact_root and template and template.is_file():  # the embedded store only
        try:
            _copy_new(template, database)
            con = sqlite3.connect(database)
            try:
                with con:
                    con.execute("update experiments set artifact_location = ? where experiment_id = 0",
                                (f"{location.artifact_root}/0",))
            finally:
                con.close()
            return
        except (OSError, sqlite3.Error):
            if database.exists():
                return  # made by another process meanwhile, or copied before the update failed
    try:
        MlflowClient(location.tracking_uri).search_experiments(max_results=1)
    except Exception:  # noqa: BLE001 - reported by the store's first real use
        return
    if location.artifact_root and template:
        try:
            _copy_new(database, template)
        except OSError:
            pass  # no cache (read-only home, or another process kept its template first): next time


def create_store_meanwhile(location: TrackingLocation):
    """Create the embedded SQLite store's tables (``create_store``) in a thread, so that the caller
    does other work meanwhile (the flow: ingest, mostly in DuckDB). Returns the thread, which the
    caller joins before anything else uses the store, or None where there is nothing to create (a
    tracking server, or a store that exists)."""
    import threading

    if _new_store_file(location) is None:
        return None
    thread = threading.Thread(target=create_store, args=(location,), name="mlflow-store", daemon=True)
    thread.start()
    return thread


def remove_unfinished_runs(output_dir: Path, tracking_uri: str | None = None) -> int:
    """Remove the artifacts of runs that failed or were killed in the embedded store under
    ``output_dir/mlflow``; a run left RUNNING (its process was killed) is marked KILLED. Their
    records stay, as the history of what happened. Runs a registered model version comes from
    are kept whole. Returns how many runs were cleaned.

    Only the run's own store: a configured tracking server is shared, and another run's RUNNING
    run there may be alive. The caller holds the output folder's run lock, so no run of this
    store is alive when it is called."""
    if tracking_uri or CONFIGURED_TRACKING_URI:
        return 0
    folder = (Path(output_dir) / "mlflow").resolve()
    if not (folder / "mlflow.db").is_file():
        return 0
    import shutil
    from urllib.parse import unquote, urlparse

    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    location = tracking_location(output_dir)
    client = MlflowClient(tracking_uri=location.tracking_uri)
    registered = {v.run_id for v in client.search_model_versions()}
    artifacts = (folder / "artifacts").resolve()
    cleaned = 0
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    for run in client.search_runs(experiments, filter_string="attributes.status != 'FINISHED'",
                                  run_view_type=ViewType.ALL, max_results=50_000):
        if run.info.run_id in registered:
            continue
        path = Path(unquote(urlparse(run.info.artifact_uri).path)).resolve()
        partial = path.is_relative_to(artifacts) and path.exists()
        if partial:
            shutil.rmtree(path, ignore_errors=True)
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
        cleaned += partial or run.info.status == "RUNNING"
    return cleaned


def experiment_name(icb_code: str) -> str:
    return f"phm-risk {icb_code}"


def registered_model_name(icb_code: str, outcome: Outcome) -> str:
    return f"phm-{icb_code}-{outcome.short}"


def experiment_description(icb_code: str) -> str:
    """What a reviewer reads first on the ICB's experiment page in the MLflow UI."""
    return (f"phm-risk runs for ICB {icb_code}.\n\n"
            f"- **fairness audit, {icb_code}, <extract date>: <PASS/WARN/FAIL>**: the fairness audit and its gate "
            "(tag `phm.kind` = `fairness audit`). Open one: its description gives the decision per outcome, who "
            "signed off and why, and where the report is (Artifacts, `fairness/fairness_audit.html`). To see only "
            "these, search ``tags.`phm.kind` = 'fairness audit'``.\n"
            "- **train <index date> +<horizon>y**: training of the three risk models, with a child run per "
            "outcome and model (validation on held-out practices, calibration and figures per ethnic group).\n\n"
            f"The registered models `phm-{icb_code}-cvd`, `-t2d` and `-hypertension` carry the audit's decision "
            "on each version (tags `phm.fairness_gate`, `phm.signoff.*`, and the version's description). "
            "docs/fairness.md says how to review.")


def ensure_experiment(client, icb_code: str, artifact_root: str) -> str:
    """The ICB's experiment (created, described, on first use); its id."""
    name = experiment_name(icb_code)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root, tags={
        "phm.icb_code": icb_code, "mlflow.note.content": experiment_description(icb_code)})


def data_digest(frame: pl.DataFrame) -> str:
    """A digest of the training table's content (independent of row order): sha256 over the
    sorted row hashes and the column names. Stable for a given polars version (pinned)."""
    row_hashes = np.sort(frame.hash_rows(seed=0).to_numpy())
    digest = hashlib.sha256("\x1f".join(frame.columns).encode())
    digest.update(row_hashes.tobytes())
    return digest.hexdigest()


def pinned_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("scikit-learn", "numpy", "scipy", "pandas", "skops")]


# The types outside skops' own trusted set that the project's models hold, declared rather than
# read off each model: the survival wrapper (models.hazard.HorizonHazardModel) around scikit-learn
# pipelines, the boosting's tree predictors, and the numpy/scipy types the GLM's spline is built
# from. MLflow saves each model once (skops) and loads it back with exactly this list, so a model
# holding any other type is refused there, naming it (a library upgrade that renames one of these
# fails training loudly, never silently trusts something new). Finding them by serialising each
# model first (skops.io.get_untrusted_types) saved every model twice.
SKOPS_TRUSTED_TYPES = (
    "models.hazard.HorizonHazardModel",
    "models.impute.GroupImputer",
    "models.impute.MedianImputer",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "numpy.dtype",
    "scipy._lib.array_api_compat.numpy._aliases.asarray",
    "scipy.interpolate._bsplines.BSpline",
)


def _bins(predicted: np.ndarray) -> int:
    return int(max(2, min(10, predicted.size // MIN_PATIENTS_PER_BIN)))


def calibration_points(y: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted and observed rate in equal-sized bins of predicted risk."""
    order = np.argsort(predicted, kind="stable")
    groups = np.array_split(order, _bins(predicted))
    return (np.array([predicted[g].mean() for g in groups]), np.array([y[g].mean() for g in groups]))


ROC_POINTS = 600  # about one per pixel of the plot's width: the curve as drawn, at a fraction of the cost


def _curve_points(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``ROC_POINTS`` of the ROC curve's points, evenly spread, ends kept (a
    300,000-patient validation set has tens of thousands: drawing them all costs seconds)."""
    if fpr.size <= ROC_POINTS:
        return fpr, tpr
    keep = np.unique(np.linspace(0, fpr.size - 1, ROC_POINTS).round().astype(np.int64))
    return fpr[keep], tpr[keep]


def _plots(folder: Path, title: str, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[Path]:
    """Calibration and ROC plots; ``curves`` maps a label to (recorded outcome, predicted risk).

    Drawn on matplotlib's Agg canvas directly (no pyplot state), with fixed margins rather than
    ``bbox_inches="tight"`` (which draws every figure twice) and at most ``ROC_POINTS`` points
    per ROC curve: the same two PNGs a reviewer opens in MLflow, about 5x cheaper."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    def figure():
        fig = Figure(figsize=(5.5, 5.2))
        FigureCanvasAgg(fig)
        fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.87)
        return fig, fig.add_subplot()

    paths = []
    fig, ax = figure()
    top = 0.0
    for label, (y, predicted) in curves.items():
        mean_predicted, observed = calibration_points(y, predicted)
        ax.plot(mean_predicted, observed, marker="o", label=label)
        top = max(top, mean_predicted.max(), observed.max())
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="perfect calibration")
    ax.set(xlabel="mean predicted risk", ylabel="observed (recorded) rate",
           title=f"Calibration: {title}\n(validation practices, bins of >= {MIN_PATIENTS_PER_BIN} patients)")
    ax.legend(fontsize=8)
    paths.append(folder / "calibration.png")
    fig.savefig(paths[-1], dpi=110)

    fig, ax = figure()
    for label, (y, predicted) in curves.items():
        fpr, tpr, _ = roc_curve(y, predicted)
        ax.plot(*_curve_points(fpr, tpr), label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="false positive rate", ylabel="sensitivity", title=f"ROC: {title}\n(validation practices)")
    ax.legend(fontsize=8)
    paths.append(folder / "roc.png")
    fig.savefig(paths[-1], dpi=110)
    return paths


def rests_on_few(validation: Validation) -> bool:
    """Are the validation's outcomes, or its patients without one, 1-7? Its AUROC (a count of pairs
    over outcomes x non-outcomes) and observed / expected (outcomes over a sum of risks) would then
    give the count back: its figures are not logged."""
    return small(validation.events) or small(validation.n - validation.events)


def validation_metrics(prefix: str, validation: Validation) -> dict[str, float]:
    """Metrics only: counts are logged separately, suppressed, as parameters; none where they rest
    on 1-7 outcomes (``rests_on_few``)."""
    if rests_on_few(validation):
        return {}
    return {f"{prefix}_{k}": float(v) for k, v in validation.as_dict().items()
            if k not in ("n", "events") and np.isfinite(v)}


def truth_metrics(validation_frame: pl.DataFrame, predicted: np.ndarray, truth: pl.DataFrame,
                  outcome: Outcome) -> dict[str, float]:
    """Synthetic data only: the prediction against each patient's true need and true (recorded
    or not) outcome from the generator's truth/ folder. The need is the gate study's yardstick
    (models/fairness/truth.py, ``true_need_horizon``: hypertension present at T0 but not diagnosed
    counts as 1, type 2 diabetes reads its chance); as an outcome, either condition present at T0
    but not diagnosed counts as had."""
    from scipy.stats import spearmanr

    from models.fairness.truth import PRESENT_AT_T0, true_need_horizon

    event = {"cvd": "cvd_event", "t2d": "t2d_event", "hypertension": "htn_event"}[outcome.short]
    had = pl.col(event).fill_null(False)
    if outcome.short in PRESENT_AT_T0:
        had = had | pl.col(PRESENT_AT_T0[outcome.short]).fill_null(False)
    joined = validation_frame.select("patient_id").with_columns(pl.Series("predicted", predicted)).join(
        truth.select("patient_id", true_need_horizon(outcome.short).alias("need"), had.alias("had")),
        on="patient_id", how="left")
    true_risk = joined["need"].fill_null(0.0).to_numpy()
    true_event = joined["had"].fill_null(False).to_numpy()
    figures = validate(true_event, predicted)
    return {
        "truth_auroc_true_events": figures.auroc,
        "truth_spearman_true_risk": float(spearmanr(predicted, true_risk).statistic),
        "truth_mean_abs_error": float(np.abs(predicted - true_risk).mean()),
        "truth_predicted_over_true_risk": float(predicted.mean() / true_risk.mean()) if true_risk.mean() > 0 else float("nan"),
        "truth_recorded_over_true_events": float(validation_frame["recorded_outcome"].sum() / max(1, true_event.sum())),
    }


@dataclass(frozen=True)
class ModelVersion:
    """One outcome's registered model version, fixed once and handed on as data (as the
    population is, models/population.py): the audit and scoring load exactly this version and
    never ask an alias again, because another run sharing the MLflow store may move
    ``candidate`` or ``champion`` between this run's registration and its audit or scoring."""
    outcome: str
    name: str
    version: str
    run_id: str  # the MLflow run that logged the model
    training_run_id: str  # its parent: the training run whose validation predictions go with it
    alias: str  # the role it is used in: 'candidate' (not yet accepted by the gate) or 'champion'
    source: str  # how the run came by it, recorded with the audit and the scores

    def described(self) -> str:
        return f"{self.name} v{self.version} ({self.source})"


REGISTERED_BY_THIS_RUN = "registered by this run's training"


@dataclass
class TrainingLog:
    location: TrackingLocation
    experiment_id: str
    parent_run_id: str
    candidates: list[ModelVersion] = field(default_factory=list)
    comparison: list[dict] = field(default_factory=list)
    not_trained: tuple[str, ...] = ()  # comparison variants left out (TrainingConfig.compare_variants off)


def versions_by_alias(client, icb_code: str, aliases: tuple[str, ...]) -> list[ModelVersion]:
    """For a command run on its own (phm audit --db, phm score): each outcome's version that the
    first of ``aliases`` found points to, resolved once, at the start, into explicit versions."""
    import datetime as dt

    from mlflow.exceptions import MlflowException

    resolved_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    versions = []
    for outcome in OUTCOMES:
        name = registered_model_name(icb_code, outcome)
        for alias in aliases:
            try:
                version = client.get_model_version_by_alias(name, alias)
            except MlflowException:
                continue
            parent = client.get_run(version.run_id).data.tags.get("mlflow.parentRunId", version.run_id)
            versions.append(ModelVersion(outcome.short, name, str(version.version), version.run_id, parent, alias,
                                         f"alias '{alias}' resolved at {resolved_at}"))
            break
        else:
            wanted = " or ".join(f"'{a}'" for a in aliases)
            raise ConfigError(f"no registered model {name} with alias {wanted}: run phm train first")
    return versions


def check_versions(versions: list[ModelVersion], icb_code: str) -> dict[str, ModelVersion]:
    """Versions given to the audit or scoring: one per outcome, each of this ICB's models."""
    by_outcome = {v.outcome: v for v in versions}
    for outcome in OUTCOMES:
        given = by_outcome.get(outcome.short)
        if given is None:
            raise ConfigError(f"no model version given for {outcome.short}")
        if given.name != registered_model_name(icb_code, outcome):
            raise ConfigError(f"{given.name} v{given.version} is not ICB {icb_code}'s {outcome.short} model "
                              f"({registered_model_name(icb_code, outcome)})")
    return by_outcome


def comparison_rows(result: TrainingResult) -> list[dict]:
    """Each model and its validated comparator on the same validation patients."""
    rows = []
    for outcome_result in result.outcomes:
        entries = [(f"{m.kind} ({m.variant}){' *' if m is outcome_result.candidate else ''}", m.validation)
                   for m in outcome_result.models]
        if outcome_result.comparator is not None:
            name = COMPARATOR_NAMES[outcome_result.outcome.comparator]
            entries.append((f"{name} (10y converted to {result.config.horizon_years}y)", outcome_result.comparator))
        for label, v in entries:
            rows.append({"outcome": outcome_result.outcome.short, "model": label,
                         "patients": show(v.n), "events": show(v.events),
                         **{k: None if rests_on_few(v) else round(float(x), 4)
                            for k, x in v.as_dict().items() if k not in ("n", "events")}})
    return rows


def not_trained_note(variants: tuple[str, ...]) -> str:
    """What the comparison says when a comparison variant was not trained (so a reviewer does
    not read its absence as a model that lost)."""
    return (f"Not trained in this run: the {', '.join(variants)} models (a comparison only; never a candidate). "
            "Train them with `phm train --compare-variants` or `[run] compare_variants = true`.")


def comparison_markdown(rows: list[dict], not_trained: tuple[str, ...] = ()) -> str:
    lines = ["| outcome | model | patients | events | AUROC (95% CI) | Brier | cal. slope | cal. intercept | O/E (95% CI) |",
             "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        if r["auroc"] is None:  # resting on 1-7 outcomes (rests_on_few)
            lines.append(f"| {r['outcome']} | {r['model']} | {r['patients']} | {r['events']} | {WITHHELD} | | | | |")
            continue
        lines.append(
            f"| {r['outcome']} | {r['model']} | {r['patients']} | {r['events']} | "
            f"{r['auroc']:.3f} ({r['auroc_ci_low']:.3f}-{r['auroc_ci_high']:.3f}) | {r['brier']:.4f} | "
            f"{r['calibration_slope']:.2f} | {r['calibration_intercept']:.2f} | "
            f"{r['observed_expected']:.2f} ({r['observed_expected_ci_low']:.2f}-{r['observed_expected_ci_high']:.2f}) |")
    lines.append("\n`*` the candidate. Counts: 1-7 suppressed, others rounded to 5. Validation practices only.")
    if not_trained:
        lines.append(not_trained_note(not_trained))
    return "\n".join(lines) + "\n"


def log_training(result: TrainingResult, location: TrackingLocation, truth: pl.DataFrame | None = None,
                 progress=None, on_parent_run=None) -> TrainingLog:
    """The training run and a child run per model in MLflow; the candidates registered.
    ``on_parent_run`` is called with the training run's id as soon as it exists (the caller
    stores the validation predictions, which carry it, meanwhile)."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(location.tracking_uri)
    client = MlflowClient(location.tracking_uri)
    experiment_id = ensure_experiment(client, result.icb_code, location.artifact_root)
    config, data = result.config, result.data
    digest = data_digest(data.frame)
    common = {"icb_code": result.icb_code, "index_date": data.index_date.isoformat(),
              "horizon_years": data.horizon_years, "validation_share": config.validation_share,
              "seed": config.seed,
              "candidate_variant": config.candidate_variant, "training_data_digest": digest,
              "validation_split": "by practice"}
    variants_trained = {"variants_trained": ", ".join(config.variants)}
    rows = comparison_rows(result)
    requirements = pinned_requirements()
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train {data.index_date} +{data.horizon_years}y",
                          description=(
                              f"Training of ICB {result.icb_code}'s risk models: features at {data.index_date}, "
                              f"outcomes over the {data.horizon_years} years after; validated on held-out practices. "
                              "A child run per outcome and model; the candidates are registered with the alias "
                              "'candidate' and wait for the fairness audit (a later run) before any list uses "
                              "them. Comparison of the models: Artifacts, `comparison/comparison.md`.")) as parent:
        mlflow.log_params({**common, **variants_trained})
        mlflow.set_tags({"phm.kind": "training", "phm.icb_code": result.icb_code})
        log = TrainingLog(location, experiment_id, parent.info.run_id, comparison=rows, not_trained=config.not_fitted)
        if on_parent_run is not None:
            on_parent_run(parent.info.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "comparison.md").write_text(comparison_markdown(rows, log.not_trained))
            (folder / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
            mlflow.log_artifacts(str(folder), artifact_path="comparison")
        for outcome_result in result.outcomes:
            outcome = outcome_result.outcome
            y = outcome_result.validation_frame["recorded_outcome"].cast(pl.Int8).to_numpy()
            comparator_metrics = {}
            if outcome_result.comparator is not None:
                comparator_name = COMPARATOR_NAMES[outcome.comparator].lower()
                comparator_metrics = validation_metrics(comparator_name, outcome_result.comparator)
            for model in outcome_result.models:
                is_candidate = model is outcome_result.candidate
                if progress:
                    progress(f"MLflow: logging {outcome.short} {model.kind} ({model.variant})")
                with mlflow.start_run(experiment_id=experiment_id, nested=True,
                                      run_name=f"{outcome.short} {model.kind} {model.variant}") as child:
                    mlflow.log_params({
                        **common, "outcome": outcome.short, "outcome_definition": outcome.description,
                        "model_kind": model.kind, "variant": model.variant,
                        "ethnicity_and_deprivation_inputs": model.variant == "with_equity",
                        "population": "aged 25-84 at the index date, free of the outcome then",
                        "training_patients": show(model.training_rows), "training_events": show(model.training_events),
                        "validation_patients": show(model.validation.n), "validation_events": show(model.validation.events),
                        "calibration": _calibration_method(model.estimator),
                    })
                    metrics = {**validation_metrics("val", model.validation), **comparator_metrics,
                               "fit_seconds": model.fit_seconds}
                    if truth is not None:
                        metrics.update(truth_metrics(outcome_result.validation_frame, model.predictions, truth, outcome))
                    mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
                    mlflow.set_tags({"phm.outcome": outcome.short, "phm.model_kind": model.kind,
                                     "phm.variant": model.variant, "phm.candidate": str(is_candidate).lower(),
                                     "phm.training_data_digest": digest})
                    with tempfile.TemporaryDirectory() as tmp:
                        folder = Path(tmp)
                        equity = [*EQUITY_NUMERIC, *EQUITY_FLAGS, *EQUITY_CATEGORICAL]
                        (folder / "features.json").write_text(json.dumps({
                            "variant": model.variant, "features": model.features,
                            "ethnicity_and_deprivation": [f for f in model.features if f in equity]}, indent=2) + "\n")
                        curves = {f"{model.kind} ({model.variant})": (y, model.predictions)}
                        if "comparator_risk" in outcome_result.validation_frame.columns:
                            risk = outcome_result.validation_frame["comparator_risk"].to_numpy()
                            scored = ~np.isnan(risk)
                            curves[f"{COMPARATOR_NAMES[outcome.comparator]} (where it applies)"] = (y[scored], risk[scored])
                        _plots(folder, f"{outcome.short}, {model.kind} ({model.variant})", curves)
                        mlflow.log_artifacts(str(folder), artifact_path="validation")
                    sample = signature_frame(model)
                    info = mlflow.sklearn.log_model(
                        model.estimator, name="model", pip_requirements=requirements,
                        signature=infer_signature(sample, np.zeros(1)), pyfunc_predict_fn="predict_proba",
                        skops_trusted_types=list(SKOPS_TRUSTED_TYPES))
                    if is_candidate:
                        log.candidates.append(_register(client, result.icb_code, outcome, model,
                                                        info.model_uri, child.info.run_id, digest, data,
                                                        parent.info.run_id))
    return log


def signature_frame(model):
    """A one-row frame of the model's input types, filled with NaN / 'Not known': the
    signature needs the columns and their types, never a patient's values."""
    import pandas as pd

    columns = {name: pd.Series([np.nan], dtype="float64") for name in model.features}
    for name in EQUITY_CATEGORICAL:
        if name in columns:
            columns[name] = pd.Series(["Not known"], dtype="object")
    return pd.DataFrame(columns)[model.features]


def _calibration_method(estimator) -> str:
    comparator = getattr(estimator, "comparator", None)
    if comparator:
        return (f"update of {COMPARATOR_NAMES[comparator]}: its log hazard as offset, recalibrated and "
                "extended on censored follow-up (Poisson)")
    return "hazard fitted on censored follow-up (Poisson)"


def _register(client, icb_code: str, outcome: Outcome, model, model_uri: str, run_id: str,
              digest: str, data, training_run_id: str) -> ModelVersion:
    import mlflow

    name = registered_model_name(icb_code, outcome)
    version = mlflow.register_model(model_uri, name, tags={
        "phm.outcome": outcome.short, "phm.model_kind": model.kind, "phm.variant": model.variant,
        "phm.horizon_years": str(data.horizon_years), "phm.index_date": data.index_date.isoformat(),
        "phm.training_data_digest": digest, "phm.val_auroc": f"{model.validation.auroc:.4f}",
        "phm.fairness_gate": NOT_AUDITED}).version
    client.update_registered_model(name, description=(
        f"{outcome.description} within the horizon, for patients aged 25-84 free of it at the index date "
        f"(ICB {icb_code}). Versions get the alias 'candidate'; only the fairness gate moves 'champion'."))
    client.set_registered_model_alias(name, CANDIDATE, version)
    return ModelVersion(outcome.short, name, str(version), run_id, training_run_id, CANDIDATE, REGISTERED_BY_THIS_RUN)
