"""The fairness gate's operating characteristics, measured against the generator's truth.

Over seeds x 2 ethnicity profiles (england, diverse_urban) x 3 scenarios (no bias; outcomes of
Black patients recorded at 60, 70 or 80% by seed; a measurement-access gap for Black patients),
each extract goes through ingest, features, validated scores, training and the audit
(models/fairness/truth.py). For each outcome of each run the truth says whether a group is
harmed (models/fairness/truth.py: the model does not track its true risk relative to White
within 25%, or at the same score it is truly sicker by more than 1.25 times, or its outcomes are
recorded worse than White's by more than 1.25 times). Where the scenario lowered a group's
recording but the group has too few true cases for the truth to measure it (Black patients' CVD
events in a 20,000-patient ``england`` extract), and no other rule shows harm, the outcome-run is
counted apart ("truth cannot judge"), in neither rate. Then:

- sensitivity: of the outcome-runs where the truth shows harm, the share the gate FAILs;
- false alarms: of the outcome-runs where it does not, the share the gate FAILs;
- sensitivity on the harms the data can see: those at least the smallest effect the gate stated
  it could detect for the group with the check that looks for them (``ScenarioRun.visible``);
- both per check (the rule of a FAIL finding) and overall; and, for the under-recording
  scenario, the share of runs that FAIL naming the Black group and the label-choice check.

Prints the table and writes JSON (benchmarks/results/gate_error_rates.json), rewritten after
every run so a long study can be stopped and still reported. Goal (issue 22): sensitivity at
least 90%, false alarms at most 5%.

    uv run python benchmarks/bench_gate_error_rates.py --seeds 20 --patients 30000

A study run with ``--keep FOLDER`` can be judged again on any answer key (``answer_key``), its gate
verdicts as run: ``--summarise STUDY.json --judge-again FOLDER --key expected|need|onset --out
AGAIN.json``; and a change to the audit or the gate judged on the same trained models, the audit run
again on a copy of each kept run with the code as it is now: ``--summarise STUDY.json
--replay-audit FOLDER --out REPLAYED.json`` (with the code the study ran, a replay gives its gate
records bit for bit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.fairness._gate import CHECKS, POOLED_CHECK  # noqa: E402
from models.fairness.truth import (  # noqa: E402
    RECORDING_SCALE,
    SCENARIOS,
    TRACKING_NEED,
    ScenarioRun,
    Tracking,
    ratio_tracking,
    scenario_run,
)

PROFILES = ("england", "diverse_urban")
# what a run judged on each answer key records as its need (from_json then notes the runs not on the
# truth's key now): the onset key's runs before 2026-12-02 04:00 recorded nothing
ONSET_ONLY = "the risk of a new onset alone (judged again with --key onset)"
REALISED_NEED = "present and undiagnosed counts as had, at T0 and at the extract date (T2D, hypertension)"
KEY_NEEDS = {"expected": TRACKING_NEED, "need": REALISED_NEED, "onset": ONSET_ONLY}
RESULTS = Path(__file__).parent / "results" / "gate_error_rates.json"


def knobs_for(scenario: str, seed: int) -> dict:
    if scenario == "outcome under-recording":
        return {"outcome_recording": {"Black": (0.6, 0.7, 0.8)[seed % 3]}}
    return SCENARIOS[scenario]


def rates(runs: list[ScenarioRun]) -> dict:
    def share(hits: int, total: int) -> dict:
        return {"share": round(hits / total, 3) if total else None, "of": total, "hits": hits}

    rows = [(r, outcome, bool(r.harmed(outcome))) for r in runs for outcome in r.gates]
    harmed = [(r, o) for r, o, h in rows if h]
    # under-recording planted on a group with too few true cases for the truth to measure it: a
    # FAIL naming the group may be right, a pass may be a miss; counted apart, in neither rate
    unjudged = [(r, o) for r, o, h in rows if not h and r.truth_cannot_judge(o)]
    fair = [(r, o) for r, o, h in rows if not h and not r.truth_cannot_judge(o)]
    out = {"outcome-runs": len(rows), "harm shown by the truth": len(harmed),
           "truth cannot judge (recording planted, too few true cases)": {
               "outcome-runs": len(unjudged),
               "FAIL naming the planted group": sum(any(r.failed(o, group=g) for g in r.truth_cannot_judge(o))
                                                    for r, o in unjudged),
               "any FAIL": sum(r.failed(o) for r, o in unjudged)},
           "sensitivity": share(sum(r.failed(o) for r, o in harmed), len(harmed)),
           # stricter: the FAIL names a group the truth shows harmed (a FAIL naming another group
           # still stops the list, which is what "sensitivity" counts, but points the reviewer
           # at the wrong group)
           "sensitivity, naming a harmed group": share(
               sum(any(r.failed(o, group=g) for g in r.harmed(o)) for r, o in harmed), len(harmed)),
           # the promise's own words: no list leaves when the model under-serves a group "that the
           # data can see": harms at least the smallest effect the gate stated it could detect for
           # the group with its check (ScenarioRun.visible); the others are reported, not excused
           "sensitivity, harms the data can see": share(
               sum(r.failed(o) for r, o in harmed if r.visible(o)), sum(bool(r.visible(o)) for r, o in harmed)),
           "false alarms": share(sum(r.failed(o) for r, o in fair), len(fair)),
           # do no harm: where the trained model was worse than QRISK3/QDiabetes, the validated score
           # ranks the list instead: the harm is stopped without a FAIL
           "stopped (FAIL, or the validated score ranks the list)": share(
               sum(r.failed(o) or r.gates[o].get("ranks_list", "model") != "model" for r, o in harmed), len(harmed)),
           "model replaced where no harm": share(
               sum(r.gates[o].get("ranks_list", "model") != "model" for r, o in fair), len(fair)),
           "by check": {check: {"sensitivity": share(sum(r.failed(o, check) for r, o in harmed), len(harmed)),
                                "false alarms": share(sum(r.failed(o, check) for r, o in fair), len(fair))}
                        for check in (*CHECKS, POOLED_CHECK)}}
    under = [r for r in runs if r.scenario == "outcome under-recording"]
    out["under-recording runs failing Black on label choice"] = share(
        sum(any(r.failed(o, "label choice", "Black") for o in r.gates) for r in under), len(under))
    out["by scenario"] = {s: {"runs": sum(r.scenario == s for r in runs),
                              "any FAIL": share(sum(any(r.failed(o) for o in r.gates) for r in runs if r.scenario == s),
                                                sum(r.scenario == s for r in runs))} for s in SCENARIOS}
    out["by profile and scenario"] = {
        f"{p} / {s}": {"sensitivity": share(sum(r.failed(o) for r, o in harmed if r.profile == p and r.scenario == s),
                                            sum(r.profile == p and r.scenario == s for r, o in harmed)),
                       "false alarms": share(sum(r.failed(o) for r, o in fair if r.profile == p and r.scenario == s),
                                             sum(r.profile == p and r.scenario == s for r, o in fair))}
        for p in PROFILES for s in SCENARIOS}
    return out


def table(summary: dict) -> str:
    lines = ["| check | sensitivity (FAIL when the truth shows harm) | false alarms (FAIL when it does not) |",
             "|---|---:|---:|"]

    def fmt(x: dict) -> str:
        return "n/a" if x["share"] is None else f"{x['share']:.0%} ({x['hits']}/{x['of']})"
    lines.append(f"| any check (the gate) | {fmt(summary['sensitivity'])} | {fmt(summary['false alarms'])} |")
    lines.append(f"| any check, the FAIL naming a harmed group | {fmt(summary['sensitivity, naming a harmed group'])} | |")
    if "sensitivity, harms the data can see" in summary:
        lines.append(f"| any check, harms at least the smallest effect the gate stated it could detect | "
                     f"{fmt(summary['sensitivity, harms the data can see'])} | |")
    lines.append(f"| FAIL, or the validated score ranks the list (do no harm) | "
                 f"{fmt(summary['stopped (FAIL, or the validated score ranks the list)'])} | "
                 f"{fmt(summary['model replaced where no harm'])} (model replaced) |")
    for check, r in summary["by check"].items():
        lines.append(f"| {check} | {fmt(r['sensitivity'])} | {fmt(r['false alarms'])} |")
    unjudged = summary["truth cannot judge (recording planted, too few true cases)"]
    lines.append(f"\nOutcome-runs the truth cannot judge (recording planted, too few true cases), in neither rate: "
                 f"{unjudged['outcome-runs']}; FAIL naming the planted group in {unjudged['FAIL naming the planted group']}, "
                 f"any FAIL in {unjudged['any FAIL']}.")
    return "\n".join(lines)


def from_json(*paths: Path) -> list[ScenarioRun]:
    """The runs of saved studies (one or several parts run side by side), judged by the current
    truth definition (models/fairness/truth.py)."""
    def number(value) -> float:
        return float("nan") if value is None else value

    runs = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        older = [r for r in data["runs_detail"] if r.get("recording_scale") != RECORDING_SCALE and r["knobs"].get("outcome_recording")]
        if older:
            print(f"note: {path}: {len(older)} runs saved before the truth's recording scale was "
                  f"{RECORDING_SCALE!r}: their CVD recording is judged on the older scale (White's share "
                  "coded over the group's; docs/fairness.md)", file=sys.stderr)
        for key, need in KEY_NEEDS.items():
            other = [r for r in data["runs_detail"] if r.get("tracking_need", ONSET_ONLY) == need]
            if other and need != TRACKING_NEED:
                print(f"note: {path}: {len(other)} runs judged on the {key} key ({need}), not the truth's "
                      f"now ({TRACKING_NEED}); --judge-again on a --keep folder judges them again "
                      "(docs/fairness.md)", file=sys.stderr)
        runs += [ScenarioRun(r["seed"], r["profile"], r["scenario"], r["knobs"], r["gates"],
                             [Tracking(t["outcome"], t["group"], t["patients"], t["model_ratio"], t["true_ratio"],
                                       number(t.get("true_risk_at_same_score")), number(t.get("true_under_recording")))
                              for t in r["tracking"]], r["seconds"], r.get("published", []),
                             r.get("standard_at_same_score", [])) for r in data["runs_detail"]]
    return runs


ANSWER_KEYS = tuple(KEY_NEEDS)


@contextlib.contextmanager
def answer_key(key: str) -> Iterator[None]:
    """The truth's need read as ``key``:
    - "expected" (as the truth now reads it): type 2 diabetes at T0 as its chance given the
      patient's state, hypertension present and undiagnosed at T0 as had; at the extract date
      both conditions present count as had;
    - "need" (the key of 2026-12-02 04:00-13:00): as "expected", but type 2 diabetes drawn at T0
      counts as 1, the draw rather than its chance;
    - "onset" (the key before 2026-12-02 04:00): the risk of a new onset alone.
    Meanwhile the expected, present-at-T0 and present-now columns of models/fairness/truth.py are
    set aside as the key needs, and restored after."""
    import models.fairness.truth as truth

    if key not in ANSWER_KEYS:
        raise ValueError(f"answer key {key!r}: {', '.join(ANSWER_KEYS[:-1])} or {ANSWER_KEYS[-1]}")
    kept = truth.EXPECTED_AT_T0, truth.PRESENT_AT_T0, truth.PRESENT_NOW
    if key in ("need", "onset"):
        truth.EXPECTED_AT_T0 = {}
    if key == "onset":
        truth.PRESENT_AT_T0, truth.PRESENT_NOW = {}, {}
    try:
        yield
    finally:
        truth.EXPECTED_AT_T0, truth.PRESENT_AT_T0, truth.PRESENT_NOW = kept


def kept_folder(keep: Path, seed: int, profile: str, scenario: str) -> Path:
    """Where ``--keep`` keeps one run."""
    return Path(keep) / f"{seed}-{profile}-{scenario.replace(' ', '_')}"


def replayed(runs: list[ScenarioRun], keep: Path) -> list[ScenarioRun]:
    """The runs of a saved study with the audit and gate run again on each kept run (the code as
    it is now, on a copy of its database and MLflow store: models.fairness.truth.replay_audit),
    their truth as saved: a change to the audit or the gate judged on the same trained models.
    Prints, per run, whether its FAIL findings changed."""
    import dataclasses

    from models.fairness.truth import replay_audit

    def fails(gate: dict) -> list[tuple[str, str]]:
        return sorted((f["rule"], f["group"]) for f in gate["fails"])

    out = []
    with tempfile.TemporaryDirectory(prefix="phm-replay-") as scratch:
        for r in runs:
            folder = kept_folder(keep, r.seed, r.profile, r.scenario)
            started = time.perf_counter()
            gates = replay_audit(folder, Path(scratch) / folder.name)
            changed = {o: [f"{rule}/{group}" for rule, group in fails(g)] for o, g in gates.items()
                       if fails(g) != fails(r.gates.get(o, {"fails": []}))}
            print(f"replayed {folder.name} ({time.perf_counter() - started:.0f} s): "
                  + (f"FAIL findings now {changed}" if changed else "the FAIL findings as run"), flush=True)
            out.append(dataclasses.replace(r, gates=gates))
    return out


def judged_again(runs: list[ScenarioRun], keep: Path, key: str, min_patients: int = 200) -> list[ScenarioRun]:
    """The runs of a saved study, their truth recomputed from the runs ``--keep`` kept (database,
    MLflow store, the extract's truth) on the answer key ``key``; the gate's verdicts as run. A
    truth written before the generator stated a column the key reads is made again from the
    extract's settings (``truth_with_columns``)."""
    from models.fairness.truth import EXPECTED_AT_T0
    from models.tracking import tracking_location

    judged = []
    needs = list(EXPECTED_AT_T0.values()) if key == "expected" else []
    with answer_key(key), tempfile.TemporaryDirectory(prefix="phm-judge-") as scratch:
        for r in runs:
            folder = kept_folder(keep, r.seed, r.profile, r.scenario)
            truth_dir = truth_with_columns(folder / "extract", needs, Path(scratch) / folder.name)
            published: list[dict] = []
            standard: list[dict] = []
            tracking = ratio_tracking(folder / "phm.duckdb", truth_dir, min_patients,
                                      tracking_location(folder, None).tracking_uri, published, standard)
            judged.append(ScenarioRun(r.seed, r.profile, r.scenario, r.knobs, r.gates, tracking, r.seconds,
                                      published, standard))
    return judged


def truth_with_columns(extract: Path, columns: list[str], scratch: Path) -> Path:
    """The truth folder of ``extract`` if its patients hold ``columns``; else the extract made again
    from its own settings (truth/planted.json) in ``scratch``, whose truth must then equal the kept
    one in every column they share (the same generator up to the columns added since), or this
    raises."""
    import polars as pl

    from phm.synth import SynthConfig, generate

    kept = Path(extract) / "truth"
    if set(columns) <= set(pl.read_parquet_schema(kept / "patients.parquet")):
        return kept
    generate(SynthConfig.planted_in(extract), scratch)
    old = pl.read_parquet(kept / "patients.parquet")
    new = pl.read_parquet(scratch / "truth" / "patients.parquet")
    if not new.select(old.columns).equals(old):
        raise RuntimeError(f"{extract}: the generator no longer makes the same truth from its settings; "
                           f"the columns {columns} cannot be added to it")
    return scratch / "truth"


def same_score_offsets(runs: list[ScenarioRun]) -> str:
    """The truth's statistic at the same score averaged over the runs with no recording planted
    (no bias, measurement gap), per outcome, profile and recorded group: for the published model
    and, where the study recorded it, for the validated score ranking the same patients. A mean
    away from 1 is an offset the ranking carries on every extract; chance in small groups then
    decides in which runs it passes the harm margin (1.25)."""
    cells: dict[tuple, dict[str, list[float]]] = {}
    for r in runs:
        if r.scenario == "outcome under-recording":
            continue
        for t in r.tracking:
            if t.true_at_same_score == t.true_at_same_score:
                cells.setdefault((t.outcome, r.profile, t.group), {"model": [], "standard": []})["model"].append(
                    t.true_at_same_score)
        for row in r.standard_at_same_score:
            key = (row["outcome"], r.profile, row["group"])
            cells.setdefault(key, {"model": [], "standard": []})["standard"].append(row["true_risk_at_same_score"])
    lines = ["| outcome | profile | group | runs | model: mean | over 1.25 | validated score: mean | over 1.25 |",
             "|---|---|---|---:|---:|---:|---:|---:|"]

    def mean(values: list[float]) -> str:
        return f"{sum(values) / len(values):.3f}" if values else "-"

    for (outcome, profile, group), v in sorted(cells.items()):
        lines.append(f"| {outcome} | {profile} | {group} | {len(v['model'])} | {mean(v['model'])} | "
                     f"{sum(x > 1.25 for x in v['model'])} | {mean(v['standard'])} | "
                     f"{sum(x > 1.25 for x in v['standard']) if v['standard'] else '-'} |")
    return "\n".join(lines)


HARM_SIZES = ((1.0, 1.1), (1.1, 1.2), (1.2, 1.5), (1.5, float("inf")))


def by_harm_size(runs: list[ScenarioRun]) -> list[dict]:
    """Sensitivity by how far past its line the truth's harm is (``ScenarioRun.harm_size``): the
    gate's tests put their null at the line, so a harm just past it is near their false-alarm
    rate by design, and a harm well past it is what they must not miss."""
    harmed = [(r.harm_size(o), r.failed(o)) for r in runs for o in r.gates if r.harmed(o)]
    return [{"past the line": [low, high], "harmed": sum(low <= size < high for size, _ in harmed),
             "failed": sum(low <= size < high and failed for size, failed in harmed)} for low, high in HARM_SIZES]


def harm_size_table(rows: list[dict]) -> str:
    lines = ["| the truth's harm, past its line | harmed outcome-runs | the gate FAILs | sensitivity |",
             "|---|---:|---:|---:|"]
    for row in rows:
        low, high = row["past the line"]
        band = f"{low:.1f}-{high:.1f}x" if high != float("inf") else f"{low:.1f}x or more"
        share = f"{100 * row['failed'] / row['harmed']:.0f}%" if row["harmed"] else "-"
        lines.append(f"| {band} | {row['harmed']} | {row['failed']} | {share} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--patients", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS),
                        help="only these scenarios (default: all three)")
    parser.add_argument("--summarise", type=Path, nargs="+",
                        help="only print the table of a saved study (JSON; several parts are added up)")
    parser.add_argument("--keep", type=Path, metavar="FOLDER",
                        help="keep each run's extract, truth, database and MLflow store in FOLDER/<seed>-<profile>-"
                             "<scenario> (about 30 MB a run at 20,000 patients), to judge the same runs again "
                             "offline; default: removed after each run")
    parser.add_argument("--judge-again", type=Path, metavar="FOLDER",
                        help="with --summarise: recompute the truth of each run from the runs a --keep FOLDER "
                             "holds (the gate's verdicts as run), on --key's answer key, and write them to --out")
    parser.add_argument("--replay-audit", type=Path, metavar="FOLDER",
                        help="with --summarise: run the audit and gate again, with the code as it is now, on a copy "
                             "of each run a --keep FOLDER holds (about 25 s a run at 20,000 patients), and judge "
                             "their verdicts on the saved truth (or on --judge-again's); written to --out")
    parser.add_argument("--key", choices=ANSWER_KEYS, default="expected",
                        help="the answer key for --judge-again: expected (the truth's now: type 2 diabetes at T0 "
                             "as its chance), need (diabetes drawn at T0 counted as 1; 2026-12-02 04:00-13:00) or "
                             "onset (the risk of a new onset alone, before 2026-12-02 04:00)")
    args = parser.parse_args()
    if (args.judge_again or args.replay_audit) and not args.summarise:
        parser.error("--judge-again and --replay-audit need --summarise (the saved study whose runs FOLDER kept)")
    if args.summarise:
        runs = from_json(*args.summarise)
        if args.replay_audit:
            runs = replayed(runs, args.replay_audit)
        if args.judge_again:
            runs = judged_again(runs, args.judge_again, args.key)
        if args.judge_again or args.replay_audit:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({
                **({"answer_key": args.key, "judged_again_from": str(args.judge_again)} if args.judge_again else {}),
                **({"audit_replayed_from": str(args.replay_audit)} if args.replay_audit else {}),
                "runs": len(runs), "summary": rates(runs),
                "runs_detail": [{**r.as_dict(), **({"tracking_need": KEY_NEEDS[args.key]} if args.judge_again else {})}
                                for r in runs]}, indent=1) + "\n")
            print(f"{'judged again on the ' + args.key + ' key' if args.judge_again else 'audit replayed'}; "
                  f"wrote {args.out}")
        print(f"{len(runs)} runs, seeds {sorted({r.seed for r in runs})}")
        print(table(rates(runs)))
        print("\nThe truth's statistic at the same score, runs with no recording planted:")
        print(same_score_offsets(runs))
        print("\nSensitivity by how far past its line the truth's harm is:")
        print(harm_size_table(by_harm_size(runs)))
        print(json.dumps(rates(runs), indent=1))
        return
    runs: list[ScenarioRun] = []
    started = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for profile in PROFILES:
            for scenario in args.scenarios:
                if args.keep:
                    folder = kept_folder(args.keep, seed, profile, scenario)
                    shutil.rmtree(folder, ignore_errors=True)  # a run from an earlier, stopped study
                    folder.mkdir(parents=True)
                else:
                    folder = Path(tempfile.mkdtemp(prefix="phm-gate-"))
                try:
                    run = scenario_run(folder, seed, profile, scenario, args.patients, knobs_for(scenario, seed))
                finally:
                    if not args.keep:
                        shutil.rmtree(folder, ignore_errors=True)
                runs.append(run)
                fails = {o: [f"{f['rule']}/{f['group']}" for f in g["fails"]] for o, g in run.gates.items()}
                harmed = {o: run.harmed(o) for o in run.gates}
                print(f"seed {seed} {profile:<13} {scenario:<24} {run.seconds:5.0f} s  FAIL {fails}  harm {harmed}",
                      flush=True)
                summary = rates(runs)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({
                    "patients": args.patients, "seeds_done": sorted({r.seed for r in runs}),
                    "runs": len(runs), "seconds": round(time.perf_counter() - started),
                    "summary": summary, "runs_detail": [r.as_dict() for r in runs]}, indent=1) + "\n")
    print(table(rates(runs)))
    print(json.dumps(rates(runs), indent=1))


if __name__ == "__main__":
    main()
