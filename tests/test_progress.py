"""The progress display: plain lines off a terminal (at starts and ends, at most every
`every_s` between), the running runs' epoch and val MPJPE from their status files,
trainings counted by checkpoint, an ETA from what finished; a tqdm bar on a terminal."""

import re
import time

from suite.outcomes import Outcome
from suite.progress import Progress, clock, duration
from suite.runspec import expand_floors, expand_runs
from suite.worker import TRAINED_BY
from suite.worker.status import status_path, write_json


def _plan():
    return expand_runs("motionbert-baseline", "smoke"), expand_floors("motionbert-baseline", "smoke")


def test_durations_read_as_a_person_says_them():
    assert [clock(s) for s in (5, 754, 3723)] == ["0:05", "12:34", "1:02:03"]
    assert [duration(s) for s in (40, 1500, 3900)] == ["40 s", "25 min", "1 h 05 min"]


def test_off_a_terminal_the_runner_gets_plain_lines():
    assert Progress(print).mode == "plain"  # pytest captures stdout: not a terminal
    assert Progress(print, mode="bar").mode == "bar"


def test_plain_lines_at_starts_and_ends_and_every_few_seconds_between(tmp_path):
    (lite, full), floors = _plan()
    assert lite.train_hash == full.train_hash
    said = []
    progress = Progress(said.append, tmp_path, jobs=1, every_s=0.3)
    progress.plan([lite, full, *floors])
    with progress:
        time.sleep(1.5)
        assert said == []  # nothing runs: nothing to say
        progress.started(lite, "r1")
        assert said == ["progress: trainings 0/1, runs 0/2, floors 0/2; 0:01 elapsed, ETA ?; "
                        "running: motionbert-baseline/lite/seed0 (starting)"]
        write_json(status_path(tmp_path, "r1"), {"phase": "training", "epoch": 2, "epochs": 10, "val_mpjpe": 45.26})
        time.sleep(2.5)
        between = said[1:]
        assert 1 <= len(between) <= 3, said  # the tick is a second; every_s only bounds it from below
        assert between[-1].endswith("running: motionbert-baseline/lite/seed0 (epoch 2/10, val 45.3 mm)")

        # lite trained the checkpoint and ended; full starts within the second: one line for both
        write_json(tmp_path / lite.train_hash / TRAINED_BY, {"run_id": "r1", "run": "motionbert-baseline/lite/seed0"})
        progress.finished(Outcome(lite, "FINISHED", "trained and evaluated", "r1", seconds=100.0, trained=True,
                                  trained_by="r1"))
        progress.started(full, "r2")
        write_json(status_path(tmp_path, "r2"), {"phase": "waiting"})
        line = progress.line()
        # ETA: full (an evaluation, 10% of a training until one finished) and 2 floors at that rate
        assert re.fullmatch(r"progress: trainings 1/1, runs 1/2, floors 0/2; 0:0\d elapsed, ETA (29|30) s; "
                            r"running: motionbert-baseline/full/seed0 \(waiting for the run that trains its "
                            r"checkpoint\)", line), line
        count = len(said)
        progress.finished(Outcome(floors[0], "SKIPPED", "already finished", "f1"))
        assert len(said) == count  # a skip says nothing
        progress.finished(Outcome(full, "FINISHED", "evaluated ...", "r2", seconds=5.0, trained_by="r1"))
    assert said[-1].startswith("progress: trainings 1/1, runs 2/2, floors 1/2; ")  # said at the end at the latest


def test_on_a_terminal_a_bar_and_the_runners_lines_above_it(tmp_path, capsys):
    (lite, full), floors = _plan()
    progress = Progress(print, tmp_path, jobs=2, mode="bar")
    progress.plan([lite, full, *floors])
    with progress:
        progress.started(lite, "r1")
        write_json(status_path(tmp_path, "r1"), {"phase": "training", "epoch": 3, "epochs": 10, "val_mpjpe": 51.0})
        progress.write("  lite/seed0: started")
        time.sleep(1.5)
        progress.finished(Outcome(lite, "FINISHED", "trained and evaluated", "r1", seconds=3.0, trained=True))
    out = capsys.readouterr().out
    assert "  lite/seed0: started\n" in out
    assert "trainings 0/1 · runs 0/2 · floors 0/2" in out
    assert "motionbert-baseline/lite/seed0: epoch 3/10, val 51.0 mm" in out
    assert "progress: " not in out  # no plain lines beside the bar
