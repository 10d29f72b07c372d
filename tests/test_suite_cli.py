"""`hummuss-suite` end to end on the smoke scale: what lands in MLflow, idempotence,
usage errors, and every registered study."""

import ast
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from suite.cli import main
from suite.registry import registry


def _runs(store, study):
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlruns.db'}")
    return mlflow.search_runs(experiment_names=[f"hummuss/{study}"])


def _model_runs(df):
    return df[~df["tags.kind"].isin(["parent", "floor"])]


def test_list_shows_the_six_studies(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("context-length", "gdssm-aggregation", "stream-aggregation", "frame-rate", "init-schemes",
                 "motionbert-baseline"):
        assert name in out


def test_show_prints_variants_conditions_and_paper_numbers(capsys):
    assert main(["show", "gdssm-aggregation"]) == 0
    out = capsys.readouterr().out
    assert "gate-causal" in out and "learned-bidirectional" in out
    assert "24.6" in out and "18.7" in out and "20.5" in out


def test_run_logs_children_with_tags_params_and_test_metrics(suite_store, capsys):
    assert main(["run", "context-length", "--scale", "smoke"]) == 0
    out = capsys.readouterr().out
    df = _runs(suite_store, "context-length")
    children = _model_runs(df)
    assert len(children) == 2 and set(children["status"]) == {"FINISHED"}
    parent_id = df[df["tags.kind"] == "parent"].run_id.iloc[0]
    assert set(children["tags.mlflow.parentRunId"]) == {parent_id}
    for tag in ("study", "variant", "seed", "scale", "config_hash", "git_commit", "torch", "device", "mkl"):
        assert children[f"tags.{tag}"].notna().all(), tag
    # MLflow's context tags and descriptions, on children and parent
    parent = df[df["tags.kind"] == "parent"].iloc[0]
    for run in [parent, *(row for _, row in children.iterrows())]:
        assert run["tags.mlflow.source.name"] == "hummuss-suite" and run["tags.mlflow.source.type"] == "LOCAL"
        assert run["tags.mlflow.source.git.commit"] == run["tags.git_commit"] and len(run["tags.git_commit"]) == 40
        assert run["tags.mlflow.user"]
    assert parent["tags.mlflow.note.content"].startswith("`hummuss-suite run context-length --scale smoke`")
    assert "scale smoke" in parent["tags.mlflow.note.content"]
    assert all(note.startswith("context-length / ") and "seed 0, scale smoke" in note
               for note in children["tags.mlflow.note.content"])
    assert set(children["tags.variant"]) == {"hummuss", "motionbert-lite"}
    assert (children["params.train.epochs"] == "2").all()
    assert (children["params.data.frames"] == "27").all()
    hummuss = children[children["tags.variant"] == "hummuss"].iloc[0]
    for cond in ("F_27", "F_81", "F_243", "as_trained"):
        assert hummuss[f"metrics.test/mpjpe/{cond}"] > 0
    mb = children[children["tags.variant"] == "motionbert-lite"].iloc[0]
    assert mb["metrics.test/mpjpe/F_81_win27"] > 0
    client = mlflow.MlflowClient()
    steps = [m.step for m in client.get_metric_history(hummuss.run_id, "val/mpjpe_mm")]
    assert steps == [1, 2]  # one value per epoch
    names = {a.path for a in client.list_artifacts(hummuss.run_id)}
    assert {"config.json", "evaluation.csv"} <= names
    exp = client.get_experiment_by_name("hummuss/context-length")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"].startswith("**context-length**: Does a model trained on 27 frames keep")
    assert "Paper: Supplement Table 1." in exp.tags["mlflow.note.content"]
    contexts = sorted(t.value for d in client.get_run(hummuss.run_id).inputs.dataset_inputs
                      for t in d.tags if t.key == "mlflow.data.context")
    assert contexts == ["evaluation", "training"]  # synthetic/train and synthetic/test

    # each trained its own checkpoint (no shared training in this study)
    assert set(children["tags.trained_by"]) == set(children["run_id"])
    assert "2 trainings for 2 runs, 2 floor runs" in out.splitlines()

    # the floors: one run per floor, children of the same parent, scored like the runs
    floors = df[df["tags.kind"] == "floor"]
    assert sorted(floors["tags.mlflow.runName"]) == ["floor/linear-lift", "floor/mean-pose"]
    assert sorted(floors["tags.floor"]) == ["linear-lift", "mean-pose"]
    assert set(floors["status"]) == {"FINISHED"} and set(floors["tags.mlflow.parentRunId"]) == {parent_id}
    for tag in ("study", "scale", "config_hash", "git_commit"):
        assert floors[f"tags.{tag}"].notna().all(), tag
    assert set(floors["tags.scale"]) == {"smoke"} and floors["tags.variant"].isna().all()
    assert (floors["params.data.spec"] == "synthetic:scale=smoke").all()
    assert (floors["params.eval.lengths"] == "(27, 81, 243)").all()
    for cond in ("F_27", "F_81", "F_243", "F_81_win27", "as_trained"):
        assert (floors[f"metrics.test/mpjpe/{cond}"] > 0).all(), cond
    lift = floors[floors["tags.floor"] == "linear-lift"].iloc[0]
    mean = floors[floors["tags.floor"] == "mean-pose"].iloc[0]
    assert lift["metrics.test/mpjpe/as_trained"] < mean["metrics.test/mpjpe/as_trained"]
    assert lift["metrics.test/mpjpe/as_trained"] == lift["metrics.test/mpjpe/F_27"]
    assert any(line.startswith("context-length/floor/linear-lift") and "FINISHED" in line and
               "floor: as_trained MPJPE" in line for line in out.splitlines())
    # output that is not a terminal gets plain progress lines at each run's start and end
    progress = [line for line in out.splitlines() if line.startswith("progress: ")]
    assert progress[0].startswith("progress: trainings 0/2, runs 0/2, floors 0/2; 0:0")
    assert "running: context-length/hummuss/seed0 (" in progress[0]
    assert progress[-1].startswith("progress: trainings 2/2, runs 2/2, floors 2/2; ")

    # running it again adds no child run and no floor run
    assert main(["run", "context-length", "--scale", "smoke"]) == 0
    out = capsys.readouterr().out
    again = _runs(suite_store, "context-length")
    assert len(_model_runs(again)) == 2 and len(again[again["tags.kind"] == "floor"]) == 2
    assert "0 trainings for 0 runs, 0 floor runs; skipped 2 runs and 2 floor runs" in out.splitlines()
    assert not [line for line in out.splitlines() if line.startswith("progress: ")]


def test_reproduce_trains_a_shared_training_once_and_says_how_many_runs_it_filled(suite_store, capsys, monkeypatch):
    """Two studies that share trainings (MotionBERT-Lite's is in both): each training runs
    once, the other runs evaluate its checkpoint and name the run that trained it."""
    import suite.reproduce
    from suite.registry import get_study
    from suite.runspec import expand_runs

    studies = [get_study("context-length"), get_study("motionbert-baseline")]
    monkeypatch.setattr(suite.reproduce, "paper_studies", lambda: studies)
    assert main(["reproduce", "--scale", "smoke", "--no-report", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    specs = [s for study in studies for s in expand_runs(study, "smoke")]
    trainings = len({s.train_hash for s in specs})
    assert (trainings, len(specs)) == (2, 4)
    assert "reproduce: 2 studies at scale smoke: context-length, motionbert-baseline; 4 runs of 2 training " \
           "configs, 4 floor runs" in out
    assert "reproduce: 2 trainings for 4 runs (2 runs evaluated a shared checkpoint), 4 floor runs; runs done in " \
           in out
    runs = pd.concat([_model_runs(_runs(suite_store, study.name)) for study in studies])
    assert len(runs) == 4 and (runs["status"] == "FINISHED").all()
    for _, group in runs.groupby("tags.train_hash"):  # one trainer per training, which trained itself
        (trainer,) = set(group["tags.trained_by"])
        assert runs.set_index("run_id").loc[trainer, "tags.trained_by"] == trainer
    lite = runs[runs["tags.variant"] == "motionbert-lite"].iloc[0]
    for variant in ("lite", "full"):
        assert runs[runs["tags.variant"] == variant].iloc[0]["tags.trained_by"] == lite.run_id
        line = next(line for line in out.splitlines() if line.startswith(f"motionbert-baseline/{variant}/seed0 "))
        assert line.endswith(f"evaluated (trained by context-length/motionbert-lite/seed0, run {lite.run_id})")


@pytest.mark.parametrize("argv, message", [
    (["run", "ctx"], "unknown study 'ctx'; known: context-length"),
    (["run", "context-length", "--scale", "huge"], "unknown scale 'huge'; known: smoke, "),
    (["run", "context-length", "--variant", "gpt"], "unknown variant 'gpt' of study 'context-length'"),
    (["run", "context-length", "--set", "lrate=1"], "unknown --set key 'lrate'; valid:"),
    (["run", "context-length", "--set", "lr"], "bad --set 'lr'; expected key=value"),
    (["run", "context-length", "--data", "imagenet"], "unknown data source 'imagenet'"),
    (["info", "--preset", "huge"], "unknown HumMUSSConfig preset 'huge'"),
    (["show", "nope"], "unknown study 'nope'"),
])
def test_usage_errors_exit_2_and_log_nothing(suite_store, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (suite_store / "mlruns.db").exists()


def test_info_prints_parameters_and_macs(capsys):
    assert main(["info", "--model", "hummuss", "--preset", "paper-causal", "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 16_030_221 and info["macs_per_frame"] > 0
    assert main(["info", "--model", "motionbert", "--preset", "lite"]) == 0
    assert "16,001,549" in capsys.readouterr().out


@pytest.mark.parametrize("study", sorted(registry()))
def test_every_registered_study_runs_at_smoke_scale(suite_store, study):
    assert main(["run", study, "--scale", "smoke"]) == 0
    df = _runs(suite_store, study)
    children = _model_runs(df)
    assert len(children) == len(registry()[study].variants)
    assert (children["status"] == "FINISHED").all()
    assert children["metrics.test/mpjpe/as_trained"].notna().all()
    assert children["tags.trained_by"].isin(children["run_id"]).all()  # shared within the study, or its own
    floors = df[df["tags.kind"] == "floor"]
    assert sorted(floors["tags.floor"]) == ["linear-lift", "mean-pose"]
    assert (floors["status"] == "FINISHED").all() and floors["metrics.test/mpjpe/as_trained"].notna().all()


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_parsers_live_in_the_cli_and_optuna_in_the_sweeps():
    """argparse only in suite/cli/, which only the entry points (`python -m` and
    suite/entry.py, `hummuss-suite`) import from outside; Optuna only in suite/sweep/."""
    root = Path(__file__).resolve().parents[1]
    wrong = []
    for path in sorted((root / "suite").rglob("*.py")):
        rel, names = path.relative_to(root).as_posix(), _imports(path)
        in_cli, entry = rel.startswith("suite/cli/"), path.name == "__main__.py" or rel == "suite/entry.py"
        if "argparse" in names and not in_cli:
            wrong.append(f"{rel} imports argparse")
        if any(n == "suite.cli" or n.startswith("suite.cli.") for n in names) and not (in_cli or entry):
            wrong.append(f"{rel} imports suite.cli")
        if any(n.split(".")[0] == "optuna" for n in names) and not rel.startswith("suite/sweep/"):
            wrong.append(f"{rel} imports optuna")
    assert wrong == []
