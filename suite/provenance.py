"""Where a run comes from and what it is about: MLflow's context tags (source, commit,
user) and the descriptions (`mlflow.note.content`) of experiments. Plain strings; the
tracking module (suite/tracking.py) writes them."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
NOTE_TAG = "mlflow.note.content"  # the description MLflow's UI shows on a run or an experiment
SOURCE_NAME = "hummuss-suite"


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def context_tags() -> dict[str, str]:
    """MLflow's standard context tags: `mlflow.source.name` (the command), `mlflow.source.type`,
    `mlflow.source.git.commit` (in a git checkout) and `mlflow.user`."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (some containers)
        user = "unknown"
    tags = {"mlflow.source.name": SOURCE_NAME, "mlflow.source.type": "LOCAL", "mlflow.user": user}
    commit = git_commit()
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def experiment_tags(study: str) -> dict[str, str]:
    """The kind tag (model training in the MLflow 3 UI) and the study's description: its
    question and where the paper reports it (from the study's declaration)."""
    tags = {EXPERIMENT_KIND_TAG: "custom_model_development", "study": study}
    try:
        from suite.registry import get_study

        decl = get_study(study)
    except Exception:  # noqa: BLE001 - an experiment of a study this checkout does not declare
        return tags
    paper = decl.paper
    tags[NOTE_TAG] = (f"**{decl.name}**: {decl.question}\n\nPaper: {paper.table}. {paper.caption}"
                      + (f"\n\n{paper.note}" if paper.note else ""))
    return tags
