"""The study registry: the six paper studies plus the pre-training stage, validated."""

import dataclasses

import pytest

from suite.registry import (
    PaperRef,
    Study,
    Table,
    Variant,
    frozen,
    get_study,
    paper_studies,
    registry,
    validate,
)
from suite.runspec import expand

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
                 variants=(Variant("a"), Variant("b", config=frozen(state_size=16))),
                 table=Table(rows=(("a", "A"), ("b", "B")), columns=(("as_trained", "MPJPE"),)))
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("changes, message", [
    (dict(variants=(Variant("a"), Variant("a"))), "duplicate variant name.s. a"),
    (dict(variants=(Variant("a", config=frozen(widht=3)), Variant("b"))), "unknown key.s. widht"),
    (dict(variants=(Variant("a", train=frozen(lrr=3)), Variant("b"))), "unknown key.s. lrr"),
    (dict(variants=(Variant("a", model="gpt"), Variant("b"))), "unknown model 'gpt'"),
    (dict(eval=frozen(rates=("x3",))), "unknown frame-rate condition 'x3'"),
    (dict(paper=PaperRef("T", "c", numbers=frozen({("z", "as_trained"): 1.0}))), "not a cell of its table"),
    (dict(table=Table(rows=(("a", "A"),), columns=(("fps_x3", "x3"),))),
     r"table cell \('a', 'fps_x3'\) reads condition 'fps_x3', which evaluation never produces for variant "
     r"'a' at scale 'smoke'; known: F_27, as_trained"),
    (dict(eval=frozen(rates=("x2",)), variants=(Variant("a", model="motionbert"), Variant("b")),
          table=Table(rows=(("a", "A"),), columns=(("fps_x2_dt", "x2"),))),
     r"reads condition 'fps_x2_dt'.*known: F_27, fps_x2, as_trained"),
])
def test_validation_names_the_mistake(changes, message):
    with pytest.raises(ValueError, match=message):
        validate(_study(**changes))


def test_expansion_resolves_configs_per_scale():
    specs = expand("gdssm-aggregation", "paper")
    assert len(specs) == 6 * 3  # variants x seeds
    by_name = {(s.variant, s.seed): s for s in specs}
    causal = by_name[("gate-causal", 0)]
    assert causal.model_config["expand"] == 3.0 and causal.model_config["causal"] is True
    bi = by_name[("mean-bidirectional", 1)]
    assert bi.model_config["expand"] == 2.5 and bi.model_config["gdssm_aggregation"] == "mean"
    assert bi.train_config["seed"] == 1 and bi.frames == 243 and bi.stride == 81
    assert len({s.config_hash for s in specs}) == len(specs)


def test_identical_trainings_share_a_train_hash_across_studies():
    gate = expand("gdssm-aggregation", "cpu", variants=("gate-bidirectional",))[0]
    learned = expand("stream-aggregation", "cpu", variants=("learned-bidirectional",))[0]
    lin = expand("init-schemes", "cpu", variants=("lin",))[0]
    assert gate.train_hash == learned.train_hash == lin.train_hash
    assert gate.config_hash != learned.config_hash


def test_sets_override_and_unknown_keys_list_valid_ones():
    spec = expand("init-schemes", "smoke", sets={"lr": "0.01", "model.state_size": "4"}, variants=("lin",))[0]
    assert spec.train_config["lr"] == 0.01 and spec.model_config["state_size"] == 4
    with pytest.raises(ValueError, match=r"unknown --set key 'lrate'; valid: .*train\.lr"):
        expand("init-schemes", "smoke", sets={"lrate": "1"})
    with pytest.raises(ValueError, match="TrainConfig.lr expects a float, got 'fast'"):
        expand("init-schemes", "smoke", sets={"lr": "fast"})


def test_context_length_trains_at_27_frames_and_evaluates_longer():
    hummuss, mb = expand("context-length", "cpu")
    assert hummuss.frames == mb.frames == 27
    assert tuple(hummuss.eval_config["lengths"]) == (27, 81, 243)
    assert tuple(mb.eval_config["model_windows"]) == (27,)


def test_pretrain_is_a_stage_at_the_paper_scale():
    study = get_study("pretrain")
    assert all(v.train["lr"] == 3e-4 and v.train["corruption"] for v in study.variants)
    paper = expand("context-length", "paper", seeds=(0,), variants=("hummuss",))[0]
    assert paper.init_from is not None and paper.init_from.study == "pretrain"
    assert paper.init_from.train_config["lr"] == 3e-4 and paper.init_from.frames == 243
    assert paper.train_hash != expand("context-length", "paper", seeds=(1,), variants=("hummuss",))[0].train_hash
    assert expand("context-length", "cpu", variants=("hummuss",))[0].init_from is None


@pytest.mark.parametrize("name", sorted(registry()))
def test_every_table_cell_reads_a_condition_evaluate_produces(name):
    """Each registered study's cells, at each scale, against `evaluate`'s own list of names."""
    study = registry()[name]
    for row, _ in study.table.rows:
        for col, _ in study.table.columns:
            variant, condition = study.table.cell(row, col)
            for scale in study.scales:
                assert condition in study.conditions(study.variant(variant), scale), (row, col, scale)


def test_condition_names_are_the_conditions_evaluate_produces():
    """`condition_names` and `evaluate` agree on a small HumMUSS and a small MotionBERT."""
    import torch

    from hummuss.data import open_source
    from hummuss.evaluate import EvalConfig, condition_names, evaluate
    from hummuss.zoo import build_model

    source = open_source("synthetic:scale=smoke")
    cfg = EvalConfig(lengths=(9, 18), model_windows=(9,), rates=("x2", "up2"), drops=(0.2,), rate_length=9,
                     stream=True, max_sequences=1, flip=False)
    for family, overrides, continuous, causal in (("hummuss", {"causal": True}, True, True),
                                                  ("motionbert", {}, False, False)):
        torch.manual_seed(0)
        table = evaluate(build_model(family, "smoke", **overrides), source, cfg)
        expected = condition_names(cfg, continuous=continuous, causal=causal)
        assert tuple(dict.fromkeys(table["condition"])) == expected
    assert condition_names(cfg, continuous=False, trained_frames=18)[-1] == "as_trained"
    assert "as_trained" not in condition_names(cfg, continuous=False, trained_frames=27)
