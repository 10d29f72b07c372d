"""BVH joint names -> the 17 H36M joints: naming styles, detection, user mappings, units.

Every H36M joint is a fixed linear combination of BVH joint positions (a joint, a
midpoint, an extrapolation), so a mapping is a weight matrix W (17, J) and
`h36m = W @ bvh_positions`. A BVH joint's position is the *start* of the bone of
that name (femur joint = hip, tibia joint = knee, foot joint = ankle).

Names are matched case-insensitively after dropping a namespace prefix
(`mixamorig:Hips` -> `hips`). Styles, tried in this order (the first whose names
are all present wins):

| style | H36M hips / knees / ankles | shoulders / elbows / wrists | thorax | nose | head top | units |
|---|---|---|---|---|---|---|
| `cgspeed-motionbuilder` (CMU 01_01) | *UpLeg / *Leg / *Foot | *Arm / *ForeArm / *Hand | Neck1 | Head | Head End Site | CMU units (56.444 mm) |
| `daz` (cgspeed Daz/Poser) | *Thigh / *Shin / *Foot | *Shldr / *ForeArm / *Hand | neck | head | head + 0.9 (head - neck) | cm |
| `mixamo` | *UpLeg / *Leg / *Foot | *Arm / *ForeArm / *Hand | Neck | Head | HeadTop_End or Head End Site | inferred |
| `3dsmax` (cgspeed 3dsMax, Biovision) | *Hip / *Knee / *Ankle | *Shoulder / *Elbow / *Wrist | Neck | Head | Head End Site or extrapolated | inferred |
| `cmu-asf` (amc2bvh) | *femur / *tibia / *foot | *humerus / *radius / *wrist | upperneck | head | head End Site or extrapolated | inferred |

In every style pelvis = midpoint of the two hips and spine = midpoint of pelvis and
thorax (H36M's spine is halfway up the torso). The first two rows follow
../shared/reference/mocap-bvh.md and are checked on real files; the others follow
the naming conventions of those tools and are not checked against real files.

A user mapping is a dict from H36M joint name (`hummuss.data.skeleton.H36M_JOINTS`
or the reference's names: Hip, RHip, ..., Thorax, Nose, Head, ...) to a BVH joint
name, a list of names (their mean) or a dict {name: weight}. It overrides or
completes the closest style joint by joint; pelvis, spine and head default as above
when absent (head = nose + 0.9 (nose - thorax)). Only a style that matches in full
fixes the units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hummuss.data.skeleton import H36M_JOINTS, NUM_JOINTS

CMU_UNIT_MM = 1000.0 * 2.54 / 100.0 / 0.45  # 56.444 mm: (1.0/0.45)*2.54/100 m
# candidate units (mm per file unit) for files whose style does not fix them
UNITS_MM: dict[str, float] = {"mm": 1.0, "cm": 10.0, "inch": 25.4, "cmu": CMU_UNIT_MM, "m": 1000.0}
TYPICAL_LEG_MM = 820.0  # hip-to-ankle length of an adult, to infer units
HEAD_EXTRAPOLATION = 0.9  # head top = nose + 0.9 (nose - thorax) when the file has no head top

Combo = dict[str, float]  # BVH joint name -> weight

# the reference's names (mocap-bvh.md section 7) as aliases of ours
_ALIASES = {
    "hip": "pelvis", "root": "pelvis", "rhip": "r_hip", "rknee": "r_knee", "rfoot": "r_ankle",
    "lhip": "l_hip", "lknee": "l_knee", "lfoot": "l_ankle", "spine": "spine", "thorax": "thorax",
    "neck": "thorax", "neck/nose": "nose", "nose": "nose", "head": "head", "lshoulder": "l_shoulder",
    "lelbow": "l_elbow", "lwrist": "l_wrist", "rshoulder": "r_shoulder", "relbow": "r_elbow",
    "rwrist": "r_wrist",
}


def canonical_joint(name: str) -> str:
    """An H36M joint name (ours or the reference's alias, any case) -> ours."""
    key = str(name).strip().lower()
    if key in H36M_JOINTS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(
        f"unknown H36M joint {name!r} in the BVH mapping; known: {', '.join(H36M_JOINTS)} "
        f"(or {', '.join(sorted(_ALIASES))})")


def normalise_name(name: str) -> str:
    """BVH joint name as matched: namespace prefix dropped, lower case."""
    return name.rsplit(":", 1)[-1].strip().lower()


def _mid(a: str, b: str) -> Combo:
    return {a: 0.5, b: 0.5}


def _extrapolate(a: str, b: str, f: float = HEAD_EXTRAPOLATION) -> Combo:
    """a + f (a - b)."""
    return {a: 1.0 + f, b: -f}


@dataclass(frozen=True)
class NamingStyle:
    """The 14 directly named H36M joints of one BVH naming style (lower-case names).

    joints: H36M name -> tuple of alternatives, each a Combo; the first alternative
    whose names all exist is used. pelvis and spine are always derived; head may be.
    """

    name: str
    joints: dict[str, tuple[Combo, ...]]
    unit_mm: float | None  # None: infer from the leg length


def _limbs(hip, knee, ankle, shoulder, elbow, wrist) -> dict[str, tuple[Combo, ...]]:
    """Left/right limb joints from name templates with `{s}` for the side word."""
    out = {}
    for side, words in (("l", ("l", "left")), ("r", ("r", "right"))):
        for ours, tmpl in (("hip", hip), ("knee", knee), ("ankle", ankle),
                           ("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist)):
            w = words[1] if "{side}" in tmpl else words[0]
            out[f"{side}_{ours}"] = ({tmpl.format(side=w, s=w): 1.0},)
    return out


STYLES: tuple[NamingStyle, ...] = (
    NamingStyle("cgspeed-motionbuilder", {
        **_limbs("{side}upleg", "{side}leg", "{side}foot", "{side}arm", "{side}forearm", "{side}hand"),
        "thorax": ({"neck1": 1.0},), "nose": ({"head": 1.0},), "head": ({"head_end": 1.0},),
    }, CMU_UNIT_MM),
    NamingStyle("daz", {
        **_limbs("{s}thigh", "{s}shin", "{s}foot", "{s}shldr", "{s}forearm", "{s}hand"),
        "thorax": ({"neck": 1.0},), "nose": ({"head": 1.0},),
        "head": (_extrapolate("head", "neck"),),
    }, 10.0),
    NamingStyle("mixamo", {
        **_limbs("{side}upleg", "{side}leg", "{side}foot", "{side}arm", "{side}forearm", "{side}hand"),
        "thorax": ({"neck": 1.0},), "nose": ({"head": 1.0},),
        "head": ({"headtop_end": 1.0}, {"head_end": 1.0}),
    }, None),
    NamingStyle("3dsmax", {
        **_limbs("{side}hip", "{side}knee", "{side}ankle", "{side}shoulder", "{side}elbow",
                 "{side}wrist"),
        "thorax": ({"neck": 1.0},), "nose": ({"head": 1.0},),
        "head": ({"head_end": 1.0}, _extrapolate("head", "neck")),
    }, None),
    NamingStyle("cmu-asf", {
        **_limbs("{s}femur", "{s}tibia", "{s}foot", "{s}humerus", "{s}radius", "{s}wrist"),
        "thorax": ({"upperneck": 1.0},), "nose": ({"head": 1.0},),
        "head": ({"head_end": 1.0}, _extrapolate("head", "upperneck")),
    }, None),
)
STYLE_NAMES = tuple(s.name for s in STYLES)


@dataclass
class JointMapping:
    """How one BVH skeleton becomes H36M-17."""

    style: str  # a STYLES name, "user" or "<style>+user"
    weights: np.ndarray  # (17, J) float64, rows sum to 1
    combos: dict[str, Combo]  # H36M name -> {BVH name (as in the file): weight}
    unit_mm: float | None = None  # mm per file unit if the style fixes it (full match only)

    def apply(self, positions: np.ndarray) -> np.ndarray:
        """BVH positions (..., J, 3) -> H36M joints (..., 17, 3)."""
        return np.einsum("kj,...jc->...kc", self.weights, positions)


def _resolve(style: NamingStyle, present: set[str]) -> tuple[dict[str, Combo], list[str]]:
    """Combos of the style's joints that exist, and the H36M joints it cannot place."""
    combos, missing = {}, []
    for joint, alternatives in style.joints.items():
        found = next((c for c in alternatives if all(n in present for n in c)), None)
        if found is None:
            missing.append(joint)
        else:
            combos[joint] = found
    return combos, sorted(missing, key=H36M_JOINTS.index)


def _derive(combos: dict[str, Combo]) -> dict[str, Combo]:
    """Fill pelvis, spine and head (top) from the other joints where absent."""
    out = dict(combos)

    def lin(*terms):  # sum of weight * combo
        acc: Combo = {}
        for w, combo in terms:
            for n, v in combo.items():
                acc[n] = acc.get(n, 0.0) + w * v
        return acc

    if "pelvis" not in out and {"l_hip", "r_hip"} <= out.keys():
        out["pelvis"] = lin((0.5, out["l_hip"]), (0.5, out["r_hip"]))
    if "spine" not in out and {"pelvis", "thorax"} <= out.keys():
        out["spine"] = lin((0.5, out["pelvis"]), (0.5, out["thorax"]))
    if "head" not in out and {"nose", "thorax"} <= out.keys():
        f = HEAD_EXTRAPOLATION
        out["head"] = lin((1.0 + f, out["nose"]), (-f, out["thorax"]))
    return out


def _user_combos(user: dict, by_norm: dict[str, str], path: str) -> dict[str, Combo]:
    """Validate a user mapping: H36M name -> name | [names] | {name: weight} (normalised names)."""
    out = {}
    for key, value in user.items():
        joint = canonical_joint(key)
        if isinstance(value, str):
            combo = {value: 1.0}
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            combo = {v: 1.0 / len(value) for v in value}
        elif isinstance(value, dict) and value:
            combo = {str(k): float(v) for k, v in value.items()}
        else:
            raise ValueError(
                f"BVH mapping for {key!r}: expected a joint name, a list of names or a dict "
                f"{{name: weight}}, got {value!r}")
        unknown = [n for n in combo if normalise_name(n) not in by_norm]
        if unknown:
            raise ValueError(
                f"{path}: BVH mapping for {key!r} names joint(s) {', '.join(map(repr, unknown))} "
                f"that the file does not have; joints found: {', '.join(by_norm.values())}")
        if abs(sum(combo.values()) - 1.0) > 1e-6:
            raise ValueError(f"BVH mapping for {key!r}: weights must sum to 1, got {sum(combo.values()):g}")
        out[joint] = {normalise_name(n): w for n, w in combo.items()}
    return out


def build_mapping(names: list[str], user: dict | None = None, path: str = "<bvh>") -> JointMapping:
    """Map a BVH skeleton with joint `names` (End Sites as `<parent>_End`) to H36M-17.

    Uses the naming style that places the most joints (see the module docstring);
    `user` overrides or completes it joint by joint. Raises ValueError naming the
    H36M joints that cannot be placed and the joint names found.
    """
    by_norm: dict[str, str] = {}
    for n in names:
        by_norm.setdefault(normalise_name(n), n)
    present = set(by_norm)
    resolved = [(style, *_resolve(style, present)) for style in STYLES]
    best, base, best_missing = min(resolved, key=lambda r: len(r[2]))  # first on ties
    user_combos = _user_combos(user, by_norm, path) if user else {}
    combos = _derive({**base, **user_combos})
    missing = [j for j in H36M_JOINTS if j not in combos]
    if missing:
        hint = "add them to the mapping" if user else "pass a mapping"
        raise ValueError(
            f"{path}: cannot map the BVH skeleton to H36M-17: missing {', '.join(missing)} "
            f"(closest naming style {best.name!r} lacks {', '.join(best_missing) or 'nothing'}; "
            f"known styles: {', '.join(STYLE_NAMES)}); {hint}. Joints found: {', '.join(names)}")
    index = {normalise_name(n): i for i, n in reversed(list(enumerate(names)))}
    weights = np.zeros((NUM_JOINTS, len(names)))
    for k, joint in enumerate(H36M_JOINTS):
        for n, w in combos[joint].items():
            weights[k, index[n]] += w
    if not user:
        style_name = best.name
    else:
        style_name = f"{best.name}+user" if base else "user"
    combos_out = {j: {by_norm[n]: w for n, w in combos[j].items()} for j in H36M_JOINTS}
    return JointMapping(style=style_name, weights=weights, combos=combos_out,
                        unit_mm=None if best_missing else best.unit_mm)


def infer_unit_mm(rest_h36m: np.ndarray) -> tuple[str, float]:
    """Pick the unit (name, mm per unit) that makes the rest-pose leg closest to adult size.

    rest_h36m: (17, 3) H36M joints of the rest pose in file units. The leg is
    hip -> knee -> ankle, averaged over both sides.
    """
    p = np.asarray(rest_h36m, dtype=np.float64)
    leg = 0.5 * sum(np.linalg.norm(p[a] - p[b]) + np.linalg.norm(p[b] - p[c])
                    for a, b, c in ((1, 2, 3), (4, 5, 6)))
    if not leg > 0:
        raise ValueError("cannot infer BVH units: the rest pose has zero-length legs; pass units")
    name = min(UNITS_MM, key=lambda u: abs(np.log(leg * UNITS_MM[u] / TYPICAL_LEG_MM)))
    return name, UNITS_MM[name]


def parse_units(units) -> float:
    """A unit name (mm, cm, inch, cmu, m) or a number of mm per file unit -> mm per unit."""
    if isinstance(units, str) and units.strip().lower() in UNITS_MM:
        return UNITS_MM[units.strip().lower()]
    try:
        value = float(units)
    except (TypeError, ValueError):
        raise ValueError(
            f"unknown BVH units {units!r}; expected one of {', '.join(UNITS_MM)} or mm per unit") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"BVH units must be a positive number of mm per unit, got {units!r}")
    return value
