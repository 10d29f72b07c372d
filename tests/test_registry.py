"""The study registry: the six paper studies plus the pre-training stage, validated; each
study's claim judge and figures declared in its own file and called by the report."""

import dataclasses
import importlib
import sys

import pandas as pd
import pytest

from suite.registry import (
    Figure,
    PaperRef,
    Study,
    Table,
    Variant,
    get_study,
    paper_studies,
    readonly,
    registry,
    validate,
    validate_all,
)
from suite.runspec import expand_runs

PAPER_STUDIES = {"context-length", "gdssm-aggregation", "stream-aggregation", "frame-rate", "init-schemes",
                 "motionbert-baseline"}


def test_the_six_paper_studies_and_the_stage_are_registered():
    assert {s.name for s in paper_studies()} == PAPER_STUDIES
    assert registry()["pretrain"].stage


def test_paper_numbers_are_declared():
    table1 = get_study("context-length").paper.numbers
    assert [table1[("hummuss", f"F_{f}")] for f in (27, 81, 243)] == [25.1, 25.8, 26.2]
    table2 = get_study("gdssm-aggregation").paper.numbers
    assert table2[("gate", "causal")] == 24.6 and table2[("mean", "bidirectional")] == 20.5
    table3 = get_study("stream-aggregation").paper.numbers
    assert table3[("learned", "bidirectional")] == 18.7 and table3[("gate", "causal")] == 26.6


def test_unknown_study_lists_known_ones():
    with pytest.raises(ValueError, match="unknown study 'ctx-len'; known: context-length"):
        get_study("ctx-len")


def _study(**changes):
    base = Study(name="t", question="q", paper=PaperRef("T", "c"),
                 variants=(Variant("a"), Variant("b", config=readonly(state_size=16))),
                 table=Table(rows=(("a", "A"), ("b", "B")), columns=(("as_trained", "MPJPE"),)))
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("changes, message", [
    (dict(variants=(Variant("a"), Variant("a"))), "duplicate variant name.s. a"),
    (dict(variants=(Variant("a", config=readonly(widht=3)), Variant("b"))), "unknown key.s. widht"),
    (dict(variants=(Variant("a", train=readonly(lrr=3)), Variant("b"))), "unknown key.s. lrr"),
    (dict(variants=(Variant("a", model="gpt"), Variant("b"))), "unknown model 'gpt'"),
    (dict(eval=readonly(rates=("x3",))), "unknown frame-rate condition 'x3'"),
    (dict(paper=PaperRef("T", "c", numbers=readonly({("z", "as_trained"): 1.0}))), "not a cell of its table"),
    (dict(table=Table(rows=(("a", "A"),), columns=(("fps_x3", "x3"),))),
     r"table cell \('a', 'fps_x3'\) reads condition 'fps_x3', which evaluation never produces for variant "
     r"'a' at scale 'smoke'; known: F_27, as_trained"),
    (dict(eval=readonly(rates=("x2",)), variants=(Variant("a", model="motionbert"), Variant("b")),
          table=Table(rows=(("a", "A"),), columns=(("fps_x2_dt", "x2"),))),
     r"reads condition 'fps_x2_dt'.*known: F_27, fps_x2, as_trained"),
])
def test_validation_names_the_mistake(changes, message):
    with pytest.raises(ValueError, match=message):
        validate(_study(**changes))


def test_expansion_resolves_configs_per_scale():
    specs = expand_runs("gdssm-aggregation", "paper")
    assert len(specs) == 6 * 3  # variants x seeds
    by_name = {(s.variant, s.seed): s for s in specs}
    causal = by_name[("gate-causal", 0)]
    assert causal.model_config["expand"] == 3.0 and causal.model_config["causal"] is True
    bi = by_name[("mean-bidirectional", 1)]
    assert bi.model_config["expand"] == 2.5 and bi.model_config["gdssm_aggregation"] == "mean"
    assert bi.train_config["seed"] == 1 and bi.frames == 243 and bi.stride == 81
    assert len({s.config_hash for s in specs}) == len(specs)


def test_identical_trainings_share_a_train_hash_across_studies():
    gate = expand_runs("gdssm-aggregation", "cpu", variants=("gate-bidirectional",))[0]
    learned = expand_runs("stream-aggregation", "cpu", variants=("learned-bidirectional",))[0]
    lin = expand_runs("init-schemes", "cpu", variants=("lin",))[0]
    assert gate.train_hash == learned.train_hash == lin.train_hash
    assert gate.config_hash != learned.config_hash


def test_sets_override_and_unknown_keys_list_valid_ones():
    spec = expand_runs("init-schemes", "smoke", sets={"lr": "0.01", "model.state_size": "4"}, variants=("lin",))[0]
    assert spec.train_config["lr"] == 0.01 and spec.model_config["state_size"] == 4
    with pytest.raises(ValueError, match=r"unknown --set key 'lrate'; valid: .*train\.lr"):
        expand_runs("init-schemes", "smoke", sets={"lrate": "1"})
    with pytest.raises(ValueError, match="TrainConfig.lr expects a float, got 'fast'"):
        expand_runs("init-schemes", "smoke", sets={"lr": "fast"})


def test_context_length_trains_at_27_frames_and_evaluates_longer():
    hummuss, mb = expand_runs("context-length", "cpu", seeds=(0,))
    assert hummuss.frames == mb.frames == 27
    assert tuple(hummuss.eval_config["lengths"]) == (27, 81, 243)
    assert tuple(mb.eval_config["model_windows"]) == (27,)


def test_pretrain_is_a_stage_at_the_paper_scale():
    study = get_study("pretrain")
    assert all(v.train["lr"] == 3e-4 and v.train["corruption"] for v in study.variants)
    paper = expand_runs("context-length", "paper", seeds=(0,), variants=("hummuss",))[0]
    assert paper.init_from is not None and paper.init_from.study == "pretrain"
    assert paper.init_from.train_config["lr"] == 3e-4 and paper.init_from.frames == 243
    assert paper.train_hash != expand_runs("context-length", "paper", seeds=(1,), variants=("hummuss",))[0].train_hash
    assert expand_runs("context-length", "cpu", variants=("hummuss",))[0].init_from is None


@pytest.mark.parametrize("name", sorted(registry()))
def test_every_table_cell_reads_a_condition_evaluate_produces(name):
    """Each registered study's cells, at each scale, against `evaluate`'s own list of names."""
    study = registry()[name]
    for row, _ in study.table.rows:
        for col, _ in study.table.columns:
            if (row, col) in study.table.blank:
                continue
            variant, condition = study.table.cell(row, col)
            for scale in study.scales:
                assert condition in study.conditions(study.variant(variant), scale), (row, col, scale)


def test_condition_names_are_the_conditions_evaluate_produces():
    """`condition_names` and `evaluate` agree on a small causal and bidirectional HumMUSS and a
    small MotionBERT."""
    import torch

    from hummuss.data import open_source
    from hummuss.evaluate import EvalConfig, condition_names, evaluate
    from hummuss.zoo import build_model

    source = open_source("synthetic:scale=smoke")
    cfg = EvalConfig(lengths=(9, 18), model_windows=(9,), rates=("x2", "up2"), drops=(0.2,),
                     schedules=("segments", "walk"), rate_length=9, stream=True, max_sequences=1, flip=False)
    for family, overrides, continuous, causal in (("hummuss", {"causal": True}, True, True),
                                                  ("hummuss", {}, True, False),
                                                  ("motionbert", {}, False, False)):
        torch.manual_seed(0)
        table = evaluate(build_model(family, "smoke", **overrides), source, cfg)
        expected = condition_names(cfg, continuous=continuous, causal=causal)
        assert tuple(dict.fromkeys(table["condition"])) == expected
    assert condition_names(cfg, continuous=False, trained_frames=18)[-1] == "as_trained"
    assert "as_trained" not in condition_names(cfg, continuous=False, trained_frames=27)


# -- a study's own behaviour: its claim judge and its figures -------------------------------------
def _draw(ctx):
    return ctx.path


@pytest.mark.parametrize("changes, message", [
    (dict(claims="held"), "claims must be a function"),
    (dict(figures=(Figure("f", "f.svg", "F", _draw),)), "file must be a PNG file name"),
    (dict(figures=(Figure("f", "f.png", "F", _draw), Figure("f", "g.png", "G", _draw))), "two figures are named 'f'"),
    (dict(figures=(Figure("f", "f.png", "F", "draw"),)), "draw must be a function"),
    (dict(figures=(Figure("f", "f.png", "F", _draw, studies=("t",)),)), "names the study that declares it"),
])
def test_validation_names_a_bad_judge_or_figure(changes, message):
    with pytest.raises(ValueError, match=message):
        validate(_study(**changes))


def test_a_figure_needing_an_unknown_study_fails_at_registry_time():
    found = dict(registry())
    found["t"] = _study(figures=(Figure("f", "f.png", "F", _draw, studies=("stream-agg",)),))
    with pytest.raises(ValueError, match="study 't' figure 'f' needs study 'stream-agg', which is not registered; "
                                         "known: context-length, "):
        validate_all(found)
    found["t"] = _study(figures=(Figure("skeletons", "fig9.png", "F", _draw),))
    with pytest.raises(ValueError, match="study 'frame-rate' declares a figure of that name too"):
        validate_all(found)


@pytest.mark.parametrize("name", sorted(s.name for s in paper_studies()))
def test_every_paper_study_judges_its_claim_from_its_own_table(name):
    """Each paper study declares its judge, which says 'not judged' (or states no paper
    claim) on a table without runs rather than failing."""
    from suite.report import ClaimCheck, Selection, study_table

    study = get_study(name)
    no_runs = pd.DataFrame(columns=["run_id", "tags.variant", "tags.seed", "seed"])
    frame = study_table(Selection(study, None, "no finished runs", {}, no_runs, no_runs, 0))
    check = study.claims(frame, study)
    assert isinstance(check, ClaimCheck) and check.study == name
    assert check.verdict in ("not judged", "no paper claim"), check.text


PROBE = """
from suite.registry import Figure, PaperRef, Study, Table, Variant
from suite.report import ClaimCheck

CALLS = []


def judge(frame, study):
    CALLS.append(("judge", study.name, list(frame["n"])))
    return ClaimCheck(study.name, "held", "the probe's own judge")


def draw(ctx):
    CALLS.append(("draw", ctx.study.name, sorted(ctx.frames)))
    ctx.path.write_bytes(b"not really a png")
    return ctx.path


STUDY = Study(name="probe", question="Is a study's behaviour its own?", paper=PaperRef("T", "c"),
              variants=(Variant("a"),), table=Table(rows=(("a", "A"),), columns=(("as_trained", "MPJPE"),)),
              claims=judge, figures=(Figure("probe", "fig9_probe.png", "The probe's figure", draw,
                                            studies=("motionbert-baseline",)),))
"""


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A study added the usual way, one file in (a second folder of) the `studies` package."""
    import studies

    folder = tmp_path / "more_studies"
    folder.mkdir()
    (folder / "probe.py").write_text(PROBE)
    monkeypatch.setattr(studies, "__path__", [*studies.__path__, str(folder)])
    registry.cache_clear()
    yield importlib.import_module("studies.probe")
    monkeypatch.undo()
    sys.modules.pop("studies.probe", None)
    registry.cache_clear()


def test_the_report_calls_the_judge_and_figures_a_study_declares(probe, suite_store):
    from suite.report import render_report
    from suite.report.drawing import study_figure
    from suite.report.figures import FigureSkipped
    from suite.tracking import Tracker, load_settings, metric_name

    tracker = Tracker(load_settings())
    for spec in expand_runs("probe", "smoke", (0, 1)) + expand_runs("motionbert-baseline", "smoke", (0,)):
        run = tracker.create_run(tracker.experiment_id(spec.study), spec.name, spec.tags())
        tracker.log_metrics(run, {metric_name("mpjpe", "as_trained"): 40.0 + spec.seed})
        tracker.set_status(run, "FINISHED")
    result = render_report(tracker, ["probe", "motionbert-baseline"], suite_store / "results")
    assert probe.CALLS == [("judge", "probe", [2]), ("draw", "probe", ["motionbert-baseline", "probe"])]
    assert [(c.study, c.verdict) for c in result.claims] == [("probe", "held"), ("motionbert-baseline", "no paper claim")]
    assert result.figures["probe"] == suite_store / "results" / "figures" / "fig9_probe.png"
    assert "### The probe's figure" in result.readme.read_text()
    assert "study context-length is not in this report" in result.skipped["context-length"]
    probe.CALLS.clear()  # a figure is drawn with those of its studies that are in the report
    result = render_report(tracker, ["motionbert-baseline"], suite_store / "other", figures=True)
    assert probe.CALLS == [("draw", "probe", ["motionbert-baseline"])] and "probe" in result.figures
    fig, study = probe.STUDY.figures[0], probe.STUDY
    with pytest.raises(FigureSkipped, match="study probe is not in this report"):
        study_figure(fig, study, {}, {}, suite_store / "x.png", tracker)
    frame = result.frames["motionbert-baseline"].assign(n=0)
    with pytest.raises(FigureSkipped, match="no finished runs of motionbert-baseline"):
        study_figure(fig, study, {"motionbert-baseline": frame}, result.selections, suite_store / "x.png", tracker)


def test_the_cpu_scale_has_three_seeds_and_a_recipe_per_family():
    hummuss = expand_runs("context-length", "cpu", variants=("hummuss",))
    mb = expand_runs("context-length", "cpu", variants=("motionbert-lite",))
    assert [s.seed for s in hummuss] == [0, 1, 2] and hummuss[0].eval_config["max_sequences"] == 0
    assert hummuss[0].train_config["lr"] == 3e-3 and mb[0].train_config["lr"] == 1e-3
    assert hummuss[0].train_config["schedule"] == mb[0].train_config["schedule"] == "cosine"
    assert mb[0].model_config["init"] == "small-data"
    assert not get_study("context-length").scale("quick").converged
