"""Claims judged from intervals: each study's judge on a fake store (runs as `load_runs`
returns them: three seeds per cell, both floor runs), moving the numbers until the verdict
flips between held, did not hold and undecided; a model no better than the linear lift
makes its claim undecided. Intervals are checked by hand (t = 4.303 for 3 seeds) or by scipy.
"""

import statistics

import pandas as pd
import pytest
from scipy import stats as sps

from suite.registry import get_study
from suite.report.runs import select_runs
from suite.report.tables import model_rows, ours_text, study_table
from suite.tracking import metric_name

T_2DF = 4.302652729749462
HELD, NOT_HELD, UNDECIDED = "held", "did not hold", "undecided at this scale"


def runs_frame(study_name, cells, floors=None, data="synthetic"):
    """cells: variant -> condition -> {seed: value} (or a list: seeds 0, 1, 2);
    floors: floor -> value at every condition of the table (or condition -> value)."""
    study, rows, clock = get_study(study_name), [], 0
    for variant, conditions in cells.items():
        conditions = {c: dict(enumerate(v)) if isinstance(v, list) else v for c, v in conditions.items()}
        for seed in sorted({s for v in conditions.values() for s in v}):
            clock += 1
            row = {"run_id": f"{variant}-{seed}", "study": study_name, "status": "FINISHED", "start_time": clock,
                   "end_time": clock, "tags.variant": variant, "tags.seed": str(seed), "tags.scale": "cpu",
                   "tags.kind": None, "tags.floor": None, "params.data.spec": data}
            row.update({f"metrics.{metric_name('mpjpe', c)}": v[seed] for c, v in conditions.items() if seed in v})
            rows.append(row)
    every = {study.table.cell(r, c)[1] for r, _ in study.table.rows for c, _ in study.table.columns}
    for name, value in (floors or {}).items():
        clock += 1
        values = value if isinstance(value, dict) else dict.fromkeys(every, value)
        rows.append({"run_id": f"floor-{name}", "study": study_name, "status": "FINISHED", "start_time": clock,
                     "end_time": clock, "tags.variant": None, "tags.seed": None, "tags.scale": "cpu",
                     "tags.kind": "floor", "tags.floor": name, "params.data.spec": data,
                     **{f"metrics.{metric_name('mpjpe', c)}": v for c, v in values.items()}})
    return pd.DataFrame(rows)


FLOORS = {"mean-pose": 150.0, "linear-lift": 70.0}


def judge(study_name, cells, floors=FLOORS):
    study = get_study(study_name)
    frame = study_table(select_runs(runs_frame(study_name, cells, floors), study))
    return study.claims(model_rows(frame), study), frame  # as render_report calls it


def hand(values):
    mean, half = statistics.mean(values), T_2DF * statistics.stdev(values) / 3 ** 0.5
    return f"{mean:+.1f} mm [{mean - half:+.1f}, {mean + half:+.1f}]"


# -- context length: F_243 − F_27 against 10% of F_27 -------------------------------------------
F27 = [30.0, 30.5, 29.5]  # tolerance 3.0 mm


@pytest.mark.parametrize("deltas,verdict", [
    ([1.0, 1.2, 0.8], HELD),  # [+0.5, +1.5] wholly below +3.0
    ([5.0, 5.2, 4.8], NOT_HELD),  # [+4.5, +5.5] wholly above
    ([1.0, 5.0, 3.0], UNDECIDED),  # [-2.0, +8.0] straddles it
])
def test_context_length_flips_with_the_paired_difference(deltas, verdict):
    check, _ = judge("context-length", {"hummuss": {"F_27": F27, "F_243": [a + d for a, d in zip(F27, deltas)]}})
    assert check.verdict == verdict
    assert check.decided_by == f"HumMUSS F=243 − F=27 = {hand(deltas)} (paired, n=3), held when < +3.0 mm " \
                               "(10% of F=27; paper: +4.4%)"
    assert "Floors: mean pose 150.0, linear lift 70.0 mm." in check.text


def test_context_length_above_the_linear_lift_is_undecided():
    check, _ = judge("context-length", {"hummuss": {"F_27": F27, "F_243": [a + 1 for a in F27]}},
                     {"linear-lift": 25.0})
    assert check.verdict == UNDECIDED  # the differences alone would say held
    assert check.decided_by.startswith("model HumMUSS is no better than the linear lift (F=27: lower bound ")
    assert check.decided_by.endswith("> 25.0 mm)")


def test_cells_with_other_seeds_are_compared_unpaired():
    f27, f243 = {0: 30.0, 1: 30.5, 2: 29.5}, {1: 31.0, 2: 30.9, 3: 31.6}  # seed 0's F=243, seed 3's F=27 absent
    check, _ = judge("context-length", {"hummuss": {"F_27": f27, "F_243": f243}})
    ci = sps.ttest_ind(list(f243.values()), list(f27.values()), equal_var=False).confidence_interval()
    mean = statistics.mean(f243.values()) - statistics.mean(f27.values())
    assert f"= {mean:+.1f} mm [{ci.low:+.1f}, {ci.high:+.1f}] (unpaired, n=3)" in check.decided_by


def test_fewer_than_three_seeds_are_flagged_and_one_seed_decides_nothing():
    check, frame = judge("context-length", {"hummuss": {"F_27": {0: 30.0, 1: 30.4}, "F_243": {0: 30.5, 1: 31.0}}})
    first = frame[(frame["row"] == "hummuss") & (frame["column"] == "F_27")].iloc[0]
    assert ours_text(first).endswith("(n=2 < 3 seeds)")
    check, _ = judge("context-length", {"hummuss": {"F_27": [30.0], "F_243": [30.5]}})
    assert check.verdict == UNDECIDED and "(paired, n=1, no interval)" in check.decided_by


# -- ablations: other − the paper's choice > 0 in every column ---------------------------------------
def ablation(gate, learned, mean):
    cells = {}
    for name, per_kind in (("gate", gate), ("learned", learned), ("mean", mean)):
        for kind, values in zip(("causal", "bidirectional"), per_kind):
            cells[f"{name}-{kind}"] = {"as_trained": values}
    return cells


GATE = ([40.0, 40.5, 39.5], [35.0, 35.6, 34.4])


def shifted(base, by, noise=(0.0, 0.2, -0.2)):
    return ([v + by + e for v, e in zip(base[0], noise)], [v + by + e for v, e in zip(base[1], noise)])


@pytest.mark.parametrize("learned_by,mean_by,noise,verdict", [
    (1.0, 2.0, (0.0, 0.2, -0.2), HELD),
    (1.0, -1.5, (0.0, 0.2, -0.2), NOT_HELD),  # mean pooling beats gating in both columns
    (1.0, 2.0, (0.0, 4.0, -4.0), UNDECIDED),  # the seeds disagree too much to tell
])
def test_ablation_flips_with_the_differences_to_the_papers_choice(learned_by, mean_by, noise, verdict):
    check, _ = judge("gdssm-aggregation", ablation(GATE, shifted(GATE, learned_by, noise), shifted(GATE, mean_by, noise)))
    assert check.verdict == verdict and check.claim == "Multiplicative gating (the paper's choice) is best"
    learned_causal = [v - g for v, g in zip(shifted(GATE, learned_by, noise)[0], GATE[0])]
    assert f"Causal: Pooling with learnable weights − Multiplicative gating = {hand(learned_causal)} (paired" in check.line()


def test_ablation_with_a_model_above_the_linear_lift_is_undecided():
    check, frame = judge("gdssm-aggregation", ablation(GATE, shifted(GATE, 1.0), shifted(GATE, 2.0)),
                         {"mean-pose": 150.0, "linear-lift": 38.0})
    assert check.verdict == UNDECIDED
    assert "model Multiplicative gating, causal" not in check.decided_by  # rows are named by the table
    assert check.decided_by.startswith("model Multiplicative gating is no better than the linear lift (Causal:")
    floor = frame[frame["row"] == "floor:linear-lift"]
    assert floor["mean"].tolist() == [38.0, 38.0] and floor["n"].tolist() == [1, 1]
    assert (model_rows(frame)["floor_linear_lift"] == 38.0).all()  # each cell knows its floor


# -- frame rate: fixed − rescaled > 0 at x2, x4, x8 ---------------------------------------------------
def frame_rate(x8_fixed_by, as_trained=(30.0, 30.4, 29.6)):
    dt = {f"fps_{k}_dt": [v + 1 for v in as_trained] for k in ("x2", "x4", "x8")}
    fixed = {f"fps_{k}": [v + 3 for v in as_trained] for k in ("x2", "x4")}
    fixed["fps_x8"] = [v + 1 + by for v, by in zip(as_trained, x8_fixed_by)]
    return {"hummuss": {"as_trained": list(as_trained), **dt, **fixed},
            "motionbert-lite": {"as_trained": [50.0, 50.5, 49.5], "fps_x8": [90.0, 91.0, 89.0]}}


@pytest.mark.parametrize("x8_fixed_by,verdict", [
    ([45.0, 46.0, 44.0], HELD),  # x8 fixed far worse than rescaled (and above the linear lift there)
    ([-2.0, -2.2, -1.8], NOT_HELD),  # rescaling hurt at x8
    ([0.0, 3.0, -2.0], UNDECIDED),
])
def test_frame_rate_flips_with_fixed_minus_rescaled(x8_fixed_by, verdict):
    check, _ = judge("frame-rate", frame_rate(x8_fixed_by))
    assert check.verdict == verdict
    assert f"x8 sub: step fixed − rescaled = {hand(x8_fixed_by)} (paired, n=3)" in check.line()
    if verdict == HELD:  # a failure at a test condition is a result, not a model that did not learn
        assert "At the test conditions: model HumMUSS, step fixed is above the linear lift (x8 sub:" in check.text


def test_frame_rate_with_hummuss_above_the_linear_lift_when_trained_is_undecided():
    check, _ = judge("frame-rate", frame_rate([45.0, 46.0, 44.0], as_trained=(80.0, 80.4, 79.6)))
    assert check.verdict == UNDECIDED
    assert check.decided_by.startswith("model HumMUSS, step rescaled is no better than the linear lift (x1:")


# -- init schemes: every scheme − S4D-Lin within ±5% of S4D-Lin ----------------------------------
LIN = [40.0, 40.4, 39.6]  # band ±2.0 mm


@pytest.mark.parametrize("real_by,verdict", [
    ([0.5, 0.7, 0.3], HELD),
    ([4.0, 4.2, 3.8], NOT_HELD),  # S4D-Real 10% worse
    ([1.0, 3.0, -1.0], UNDECIDED),  # reaches past the band
])
def test_init_schemes_flip_with_the_band(real_by, verdict):
    cells = {name: {"as_trained": [v + 0.2 * i for v in LIN]} for i, name in enumerate(("lin", "inv", "legs", "rand"))}
    cells["real"] = {"as_trained": [v + d for v, d in zip(LIN, real_by)]}
    check, _ = judge("init-schemes", cells)
    assert check.verdict == verdict
    assert f"S4D-Real − S4D-Lin = {hand(real_by)} (paired, n=3), held when within ±2.0 mm (5% of S4D-Lin)" in check.line()


def test_without_floor_runs_the_floor_rows_are_missing_and_the_claim_says_so():
    check, frame = judge("context-length", {"hummuss": {"F_27": F27, "F_243": [a + 1 for a in F27]}}, floors={})
    assert check.verdict == HELD and "No floor runs: not checked against the floors." in check.text
    floors = frame[frame["kind"] == "floor"]
    assert len(floors) == 6 and (floors["n"] == 0).all()
