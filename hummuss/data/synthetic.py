"""`synthetic`: the embedded default data set, generated in continuous time.

Subjects (random bone lengths) x actions (each blended with a second one, with a
moving root) x virtual cameras, rendered with simulated detections and
MotionBERT's normalisation. Everything is a function of (seed, subject, action,
camera) and time, so any frame rate or timestamps give exact samples, and two
sources with one seed are identical. Train and test split by subject: the last
`test_subjects` subjects are the test set.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

import numpy as np

from hummuss.data.camera import VirtualCamera, camera_ring
from hummuss.data.clips import Sequence
from hummuss.data.motion import ACTIONS, Body, Motion, random_body
from hummuss.data.render import render_sequence
from hummuss.data.source import MotionSource, check_rate

# stream ids for np.random.SeedSequence, so each part has its own random numbers
_BODY, _MOTION, _CAMERAS, _NOISE, _LENGTH = 1, 2, 3, 4, 5


@dataclass
class SyntheticConfig:
    """Size and seed of a generated data set; `SyntheticConfig.preset(name, **overrides)`."""

    seed: int = 0
    subjects: int = 7
    test_subjects: int = 2  # the last ones
    actions: tuple[str, ...] = ACTIONS
    cameras: int = 2
    seconds: tuple[float, float] = (8.0, 24.0)  # each sequence's length, drawn per (subject, action)
    fps: float = 60.0  # native rate
    camera_distance_mm: float = 5500.0
    camera_height_mm: float = 1500.0
    scale: str = field(default="cpu", compare=False)  # the preset it came from (informative)

    PRESETS: typing.ClassVar[dict[str, dict]] = {
        "smoke": dict(subjects=3, test_subjects=1, actions=("walking", "squatting", "waving"),
                      cameras=1, seconds=(5.0, 5.0)),
        "cpu": {},
    }

    def __post_init__(self):
        if isinstance(self.actions, str):
            self.actions = tuple(a for a in self.actions.replace("+", " ").split() if a)
        self.actions = tuple(self.actions)
        unknown = [a for a in self.actions if a not in ACTIONS]
        if unknown or not self.actions:
            raise ValueError(f"unknown actions {unknown or self.actions!r}; known: {', '.join(ACTIONS)}")
        if isinstance(self.seconds, (int, float)):
            self.seconds = (float(self.seconds), float(self.seconds))
        self.seconds = (float(self.seconds[0]), float(self.seconds[1]))
        if not 0 < self.seconds[0] <= self.seconds[1]:
            raise ValueError(f"seconds must be a positive (min, max) range, got {self.seconds}")
        if self.subjects < 2 or not 1 <= self.test_subjects < self.subjects:
            raise ValueError(f"need >= 2 subjects and 1 <= test_subjects < subjects; got subjects="
                             f"{self.subjects}, test_subjects={self.test_subjects}")
        if self.cameras < 1:
            raise ValueError(f"cameras must be >= 1, got {self.cameras}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")

    @classmethod
    def preset(cls, name: str = "cpu", **overrides) -> SyntheticConfig:
        if name not in cls.PRESETS:
            raise ValueError(f"unknown synthetic scale {name!r}; known: {', '.join(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides, "scale": name})

    @classmethod
    def from_options(cls, options: dict[str, str]) -> SyntheticConfig:
        """From spec options (strings): scale, seed, subjects, test_subjects, actions
        (joined by '+'), cameras, seconds (one number or min-max), fps, camera_distance_mm,
        camera_height_mm."""
        options = dict(options)
        scale = options.pop("scale", "cpu")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        overrides: dict = {}
        for key, raw in options.items():
            if key not in types or key == "scale":
                known = ", ".join(k for k in types if k != "scale")
                raise ValueError(f"unknown synthetic option {key!r}; known: scale, {known}")
            try:
                if key == "seconds":
                    lo, _, hi = raw.partition("-")
                    overrides[key] = (float(lo), float(hi or lo))
                elif key == "actions":
                    overrides[key] = raw
                elif key in ("seed", "subjects", "test_subjects", "cameras"):
                    overrides[key] = int(raw)
                else:
                    overrides[key] = float(raw)
            except ValueError as err:
                raise ValueError(f"synthetic option {key}={raw!r}: expected a number ({err})") from None
        return cls.preset(scale, **overrides)


class SyntheticSource(MotionSource):
    """Generated motion; see the module docstring. Sequences are built lazily and
    memoised per (split, rate)."""

    name = "synthetic"

    def __init__(self, config: SyntheticConfig | None = None, **overrides):
        if config is None:
            config = SyntheticConfig.preset(overrides.pop("scale", "cpu"), **overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.native_fps = config.fps
        self.spec = "synthetic"
        self._memo: dict[tuple[str, float], list[Sequence]] = {}
        c = config
        self.subject_names = tuple(f"S{i + 1}" for i in range(c.subjects))
        self.bodies = tuple(random_body(self._rng(_BODY, i), name)
                            for i, name in enumerate(self.subject_names))
        self.cameras: tuple[VirtualCamera, ...] = tuple(camera_ring(
            c.cameras, c.camera_distance_mm, c.camera_height_mm, rng=self._rng(_CAMERAS)))

    @classmethod
    def from_options(cls, options: dict[str, str]) -> SyntheticSource:
        return cls(SyntheticConfig.from_options(options))

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.config.seed, *key]))

    def subjects(self, split: str) -> tuple[str, ...]:
        n_test = self.config.test_subjects
        names = self.subject_names
        return names[:-n_test] if self.check_split(split) == "train" else names[-n_test:]

    def body(self, subject: str) -> Body:
        return self.bodies[self._subject_index(subject)]

    def _subject_index(self, subject: str) -> int:
        if subject not in self.subject_names:
            raise ValueError(f"unknown subject {subject!r}; known: {', '.join(self.subject_names)}")
        return self.subject_names.index(subject)

    def _action_index(self, action: str) -> int:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        return ACTIONS.index(action)

    def motion(self, subject: str, action: str) -> Motion:
        """The continuous-time motion of (subject, action): call it with times in seconds."""
        s, a = self._subject_index(subject), self._action_index(action)
        return Motion(self.bodies[s], action, self._rng(_MOTION, s, a))

    def duration(self, subject: str, action: str) -> float:
        """Length in seconds of the (subject, action) sequence (whole milliseconds)."""
        s, a = self._subject_index(subject), self._action_index(action)
        lo, hi = self.config.seconds
        return round(float(self._rng(_LENGTH, s, a).uniform(lo, hi)), 3)

    def render(self, subject: str, action: str, camera: int, times: np.ndarray,
               fps: float | None = None) -> Sequence:
        """The sequence of (subject, action, camera index) sampled at `times` (T,) seconds.

        Deterministic: the same time always gives the same frame, whatever the other times.
        """
        s, a = self._subject_index(subject), self._action_index(action)
        if not 0 <= camera < len(self.cameras):
            raise ValueError(f"camera index {camera} out of range; this source has {len(self.cameras)}")
        motion = self.motion(subject, action)
        cam = self.cameras[camera]
        times = np.asarray(times, dtype=np.float64)
        meta = {"subject": subject, "action": action, "camera": cam.name,
                "source": f"{subject}_{action}_{cam.name}", "secondary": motion.secondary,
                "height_mm": round(self.body(subject).height_mm, 1)}
        return render_sequence(motion(times), times, fps or self.config.fps, cam,
                               self._rng(_NOISE, s, a, camera), meta)

    def frame_times(self, subject: str, action: str, fps: float) -> np.ndarray:
        """i / fps for every i with i / fps < duration (so lower rates are exact subsets)."""
        n = int(np.ceil(self.duration(subject, action) * fps - 1e-9))
        return np.arange(n) / fps

    def sequences(self, split: str, rate: float = 1.0) -> list[Sequence]:
        key = (self.check_split(split), check_rate(rate))
        if key not in self._memo:
            fps = self.config.fps * key[1]
            self._memo[key] = [
                self.render(subject, action, c, self.frame_times(subject, action, fps), fps)
                for subject in self.subjects(split)
                for action in self.config.actions
                for c in range(len(self.cameras))
            ]
        return self._memo[key]
