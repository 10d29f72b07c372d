"""MLflow metric names of the suite: each carries its role and, where it has one, its unit
(the table in README's "Tracking" section). suite/tracking.py writes them."""

from __future__ import annotations

import re

# MLflow metric names: unit and role in the name (README, "Tracking")
VAL_MPJPE = "val/mpjpe_mm"  # per epoch: validation MPJPE, millimetres
TRAIN_LOSS = "train/loss/total"  # per epoch: the training loss (unitless); its terms train/loss/<term>
BEST_VAL_MPJPE = "best/val/mpjpe_mm"  # the best epoch's validation MPJPE (a sweep's parent: the best trial's)
BEST_EPOCH = "best/epoch"
_EPOCH_NAMES = {"val/mpjpe": VAL_MPJPE, "train/loss": TRAIN_LOSS, "lr": "train/lr"}


def epoch_metric_names(metrics: dict[str, float]) -> dict[str, float]:
    """The trainer's per-epoch metrics under their MLflow names: `val/mpjpe` -> `val/mpjpe_mm`,
    `train/loss` -> `train/loss/total`, a loss term `train/<term>` -> `train/loss/<term>`,
    `lr` -> `train/lr`; others (`time/epoch_s`) as they are."""
    out = {}
    for key, value in metrics.items():
        name = _EPOCH_NAMES.get(key)
        if name is None:
            name = f"train/loss/{key[len('train/'):]}" if key.startswith("train/") else key
        out[name] = value
    return out


def metric_name(metric: str, condition: str) -> str:
    """`test/<metric>/<condition>` with characters MLflow refuses replaced."""
    return re.sub(r"[^A-Za-z0-9_\-./: ]", "_", f"test/{metric}/{condition}")
