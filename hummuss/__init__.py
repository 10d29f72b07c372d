"""hummuss: the model library of hummuss-suite.

HumMUSS (dual-stream gated diagonal state-space network), its building blocks, a
faithful MotionBERT (DSTformer) baseline, data sources, metrics, losses and the trainer.
Nothing in this package imports MLflow or Optuna.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "HumMUSS": "hummuss.model",
    "HumMUSSConfig": "hummuss.model",
    "MotionBERT": "hummuss.baselines.motionbert",
    "MotionBERTConfig": "hummuss.baselines.motionbert",
    "build_model": "hummuss.zoo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):  # lazy, so `import hummuss` stays cheap
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hummuss' has no attribute {name!r}")
