"""The paper scale end to end on small files in the P-STMO MPI-INF-3DHP layout: the
pre-training stage, then fine-tuning from it, both model families, `--set` budgets that
reach the stage run too (before, the stage ignored them and started at batch 32)."""

import numpy as np

from suite.cli import main
from suite.tracking import Tracker, load_settings

# a paper-scale pipeline on a tiny budget: one step of batch 2, small widths, one test sequence
SETS = ["epochs=1", "max_steps_per_epoch=1", "batch_size=2", "max_val_clips=2", "eval_batch_size=2",
        "model.dim=16", "model.dim_rep=16", "model.depth=1", "model.state_size=8", "model.dim_feat=16",
        "model.num_heads=2", "eval.max_sequences=1", "eval.flip=false", "eval.batch_size=2"]


def _poses(rng, n, w=2048, h=2048):
    return {"data_2d": rng.uniform(0, [w, h], size=(n, 17, 2)),
            "data_3d": rng.normal(0, 400, size=(n, 17, 3)) + [0, 0, 4000]}


def write_3dhp(root):
    """data_train_3dhp.npz and data_test_3dhp.npz as P-STMO writes them (as tests/test_mpi3dhp.py)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    train = {"S1 Seq1": [{"0": _poses(rng, 300), "2": _poses(rng, 300)}, 25], "S3 Seq2": [{"8": _poses(rng, 300)}, 50]}
    test = {"TS1": {**_poses(rng, 260), "valid": (np.arange(260) % 3 != 0).astype(float)},
            "TS5": {**_poses(rng, 250, 1920, 1080), "valid": np.ones(250)}}
    np.savez_compressed(root / "data_train_3dhp.npz", data=train)
    np.savez_compressed(root / "data_test_3dhp.npz", data=test)
    return root


def test_paper_pipeline_runs_the_stage_then_fine_tunes_both_families_with_the_overrides(suite_store, monkeypatch,
                                                                                        capsys):
    monkeypatch.setenv("HUMMUSS_CACHE_DIR", str(suite_store / "cache"))
    data = write_3dhp(suite_store / "3dhp")
    code = main(["run", "context-length", "--scale", "paper", "--data", f"mpi3dhp:{data}", "--seeds", "0",
                 "--set", *SETS])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    tracker = Tracker(load_settings())
    (stage,) = [r for r in tracker.all_runs(tracker.experiment_id("pretrain", create=False))
                if r.data.tags.get("kind") not in ("parent", "floor")]
    assert stage.info.status == "FINISHED" and stage.data.tags["variant"] == "bidirectional"
    params = stage.data.params
    assert (params["train.batch_size"], params["train.epochs"], params["train.max_steps_per_epoch"],
            params["model.dim"], params["run.scale"]) == ("2", "1", "1", "16", "paper")
    assert "model.dim_feat" not in params  # a MotionBERT override stays with the MotionBERT runs
    runs = tracker.all_runs(tracker.experiment_id("context-length", create=False))
    assert {r.info.status for r in runs} == {"FINISHED"}
    children = {r.data.tags["variant"]: r for r in runs if r.data.tags.get("kind") not in ("parent", "floor")}
    assert set(children) == {"hummuss", "motionbert-lite"}
    hummuss, lite = children["hummuss"], children["motionbert-lite"]
    assert hummuss.data.params["run.init_from"] == stage.data.tags["train_hash"]
    assert lite.data.params["run.init_from"] == ""
    for run in (hummuss, lite):
        assert run.data.params["train.batch_size"] == "2"
        assert np.isfinite(run.data.metrics["test/mpjpe/F_243"])
    log = suite_store / "checkpoints" / "logs" / "context-length" / "hummuss-seed0.log"
    assert "initialised from pretrain/bidirectional" in log.read_text()
    assert out.index("pretrain/bidirectional/seed0") < out.index("context-length/hummuss/seed0")
