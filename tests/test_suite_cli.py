"""`hummuss-suite` end to end on the smoke scale: what lands in MLflow, idempotence,
usage errors, and every registered study."""

import ast
from pathlib import Path

import mlflow
import pytest

from suite.cli import main
from suite.registry import registry


def _runs(store, study):
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlruns.db'}")
    return mlflow.search_runs(experiment_names=[f"hummuss/{study}"])


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


def test_run_logs_children_with_tags_params_and_test_metrics(suite_store):
    assert main(["run", "context-length", "--scale", "smoke"]) == 0
    df = _runs(suite_store, "context-length")
    children = df[df["tags.kind"] != "parent"]
    assert len(children) == 2 and set(children["status"]) == {"FINISHED"}
    parent_id = df[df["tags.kind"] == "parent"].run_id.iloc[0]
    assert set(children["tags.mlflow.parentRunId"]) == {parent_id}
    for tag in ("study", "variant", "seed", "scale", "config_hash", "git_commit", "torch", "device"):
        assert children[f"tags.{tag}"].notna().all(), tag
    assert set(children["tags.variant"]) == {"hummuss", "motionbert-lite"}
    assert (children["params.train.epochs"] == "2").all()
    assert (children["params.data.frames"] == "27").all()
    hummuss = children[children["tags.variant"] == "hummuss"].iloc[0]
    for cond in ("F_27", "F_81", "F_243", "as_trained"):
        assert hummuss[f"metrics.test/mpjpe/{cond}"] > 0
    mb = children[children["tags.variant"] == "motionbert-lite"].iloc[0]
    assert mb["metrics.test/mpjpe/F_81_win27"] > 0
    client = mlflow.MlflowClient()
    steps = [m.step for m in client.get_metric_history(hummuss.run_id, "val/mpjpe")]
    assert steps == [1, 2]  # one value per epoch
    names = {a.path for a in client.list_artifacts(hummuss.run_id)}
    assert {"config.json", "evaluation.csv"} <= names
    exp = client.get_experiment_by_name("hummuss/context-length")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert len(client.get_run(hummuss.run_id).inputs.dataset_inputs) == 1

    # running it again adds no child run
    assert main(["run", "context-length", "--scale", "smoke"]) == 0
    again = _runs(suite_store, "context-length")
    assert len(again[again["tags.kind"] != "parent"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["run", "ctx"], "unknown study 'ctx'; known: context-length"),
    (["run", "context-length", "--scale", "huge"], "unknown scale 'huge'; known: smoke, cpu, paper"),
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
    children = df[df["tags.kind"] != "parent"]
    assert len(children) == len(registry()[study].variants)
    assert (children["status"] == "FINISHED").all()
    assert children["metrics.test/mpjpe/as_trained"].notna().all()


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_parsers_live_in_the_cli_and_optuna_in_the_sweeps():
    """argparse only in suite/cli/, which only the `python -m` entry points import from
    outside; Optuna only in suite/sweep/."""
    root = Path(__file__).resolve().parents[1]
    wrong = []
    for path in sorted((root / "suite").rglob("*.py")):
        rel, names = path.relative_to(root).as_posix(), _imports(path)
        in_cli, entry = rel.startswith("suite/cli/"), path.name == "__main__.py"
        if "argparse" in names and not in_cli:
            wrong.append(f"{rel} imports argparse")
        if any(n == "suite.cli" or n.startswith("suite.cli.") for n in names) and not (in_cli or entry):
            wrong.append(f"{rel} imports suite.cli")
        if any(n.split(".")[0] == "optuna" for n in names) and not rel.startswith("suite/sweep/"):
            wrong.append(f"{rel} imports optuna")
    assert wrong == []
