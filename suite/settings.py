"""Tracking settings (mlflow.yaml), store URIs and secrets kept out of what is logged.
No MLflow here: suite/tracking.py connects with these settings."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[1]


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable, misconfigured)."""


@dataclass(frozen=True)
class TrackingSettings:
    tracking_uri: str
    artifact_location: str  # absolute folder or URI; experiments get <artifact_location>/<study>
    experiment_prefix: str = "hummuss"
    checkpoint_dir: str = "checkpoints"  # absolute
    log_checkpoints: bool = False
    system_metrics: bool = False
    claim_ttl_s: float = 300.0  # a RUNNING run without a heartbeat this long is taken over
    source: str = ""  # the file these came from


def _absolute(value: str, base: Path) -> str:
    return str(Path(value).expanduser() if Path(value).expanduser().is_absolute() else (base / value).resolve())


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def postgres_driver(uri: str) -> str:
    """`postgresql://` with the driver that is installed (SQLAlchemy 2.1 defaults to
    psycopg 3; the suite's cluster extra installs psycopg2)."""
    import importlib.util

    scheme, _, rest = uri.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return uri


def resolve_uri(uri: str, base: Path) -> str:
    """Relative sqlite paths (and bare paths) become absolute against `base`; a bare
    `postgresql://` gets the installed driver."""
    uri = postgres_driver(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return sqlite_uri(base / uri[len("sqlite:///"):])
    if "://" not in uri and ":" not in uri[:3]:
        return sqlite_uri(base / uri)
    return uri


def config_path() -> Path:
    """HUMMUSS_MLFLOW_CONFIG, else ./mlflow.yaml, else the project's mlflow.yaml."""
    env = os.environ.get("HUMMUSS_MLFLOW_CONFIG")
    if env:
        return Path(env)
    here = Path.cwd() / "mlflow.yaml"
    return here if here.exists() else PROJECT_DIR / "mlflow.yaml"


def load_settings(path: str | Path | None = None) -> TrackingSettings:
    """Settings from mlflow.yaml, paths resolved against its folder; env overrides the URI."""
    path = Path(path) if path else config_path()
    if not path.exists():
        raise TrackingError(f"tracking settings file {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    known = {f for f in TrackingSettings.__dataclass_fields__ if f != "source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TrackingError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    base = path.resolve().parent
    uri = os.environ.get("MLFLOW_TRACKING_URI") or raw.get("tracking_uri", "sqlite:///mlruns.db")
    artifacts = str(raw.get("artifact_location", "mlartifacts"))
    if "://" not in artifacts:
        artifacts = _absolute(artifacts, base)
    return TrackingSettings(
        tracking_uri=resolve_uri(uri, base),
        artifact_location=artifacts,
        experiment_prefix=str(raw.get("experiment_prefix", "hummuss")),
        checkpoint_dir=_absolute(str(raw.get("checkpoint_dir", "checkpoints")), base),
        log_checkpoints=bool(raw.get("log_checkpoints", False)),
        system_metrics=bool(raw.get("system_metrics", False)),
        claim_ttl_s=float(raw.get("claim_ttl_s", 300)),
        source=str(path),
    )


# -- secrets --------------------------------------------------------------------------
_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|api[_-]?key|credential)", re.I)


def redact(text: str) -> str:
    """Hide passwords in URIs (user:***@host) and secret query parameters."""
    text = re.sub(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", r"\g<scheme>\g<user>:***@", text)
    return re.sub(r"(?i)((?:password|token|secret|api_key)=)[^&\s]+", r"\1***", text)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEYS.search(key))


GPU_EXTRA = "nvidia-ml-py"  # the `gpu` extra of pyproject.toml: its module pynvml is what MLflow reads GPUs with


def gpu_metrics_missing() -> str | None:
    """With `system_metrics: true`: what is missing for `system/gpu_*`, where an NVIDIA GPU is
    present and `pynvml` (from nvidia-ml-py) cannot be imported; None otherwise."""
    import importlib.util

    import torch

    if not torch.cuda.is_available() or torch.version.cuda is None:  # no GPU, or an AMD one (ROCm)
        return None
    try:
        if importlib.util.find_spec("pynvml") is not None:
            return None
    except ValueError:  # a module object without a spec
        return None
    return (f"system_metrics: true logs no GPU metrics: MLflow reads NVIDIA GPUs with pynvml; install "
            f"{GPU_EXTRA} (pip install -e '.[gpu]' in this checkout, or pip install {GPU_EXTRA})")
