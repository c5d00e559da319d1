"""``phm review`` on an outcome a reviewer blocked ([[audit.block]], docs/fairness.md): a sign-off
does not lift a block, so the command refuses and says how the block is lifted; it changes
nothing in MLflow. A small MLflow store with one audit run stands in for a finished audit."""

from __future__ import annotations

from cli.main import main


def test_a_sign_off_of_a_blocked_outcome_is_refused_and_says_how_to_lift_the_block(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from models.tracking import create_store, experiment_name, tracking_location

    db = tmp_path / "phm.duckdb"
    db.write_bytes(b"")  # phm review finds the MLflow store beside the run's database
    location = tracking_location(tmp_path)
    create_store(location)
    client = MlflowClient(location.tracking_uri)
    experiment = client.create_experiment(experiment_name("QXX"))
    tags = {"phm.kind": "fairness audit", "phm.icb_code": "QXX",
            "phm.fairness_gate.t2d": "WARN (blocked by Dr B, ICS fairness panel)",
            "phm.fairness_gate.t2d.may_publish": "false", "phm.fairness_gate.t2d.model": "1",
            "phm.block.t2d.reviewer": "Dr B, ICS fairness panel", "phm.block.t2d.reason": "held for the panel"}
    run = client.create_run(experiment, tags=tags)
    assert main(["review", "--db", str(db), "--outcome", "t2d", "--reviewer", "Dr A. Reviewer",
                 "--reason", "Reviewed at the panel of 1 May (ref. 14)"]) == 2
    err = capsys.readouterr().err
    assert "t2d: the latest audit" in err and "was blocked by Dr B, ICS fairness panel" in err
    assert "a sign-off does not lift a block; the reviewer who blocked it removes their [[audit.block]]" in err
    after = client.get_run(run.info.run_id).data.tags
    assert not any(key.startswith("phm.signoff.") for key in after)
    assert after["phm.fairness_gate.t2d.may_publish"] == "false"
