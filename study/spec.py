"""Study specs: a base pipeline config + a search space + search settings + seeds.

A spec is YAML (see search_spaces/studies/*.yaml)::

    name: fig3_gap
    base: pipeline_voc.yaml          # path relative to the spec, or an inline mapping
    fixed: {cam.pooling: gap}        # dotted pipeline keys set for every trial
    space:                           # one axis per dotted pipeline key
      cam.lam: {grid: [0.0, 0.5, 1.0]}
      cam.fsl: {grid: [false, true]}
      cam.fsl_sigma_init: {loguniform: [1.0, 20.0], when: {cam.fsl: true}}
    seeds: [0, 1, 2]                 # every point runs once per seed (runtime.seed)
    search: {algorithm: grid, num_samples: 1, metric: miou, mode: max, max_concurrent: 0}
    scheduler: {type: fifo}          # or {type: asha, grace_period: 1, reduction_factor: 2}
    resources: {cpus: 1, gpus: 0.25, custom: {}}
    failure: {max_retries: 1}
    tracking: [mlflow, tensorboard]  # experiment trackers (study.tracking)

Axis kinds: `grid` (every value), `choice` (one value drawn), `uniform` /
`loguniform` ([low, high]), `randint` ([low, high), high exclusive as in numpy
and Ray Tune). `when` makes an axis conditional: it applies only where every
named key has the given value (an earlier axis, a fixed key or the base).

`load_spec` validates everything before a study starts: the spec's own keys,
and the pipeline config of every grid point (and of both ends of every sampled
range) through `wsss_core.pipeline.config.load_config`. Errors are `SpecError`
with one line naming the key and what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsss_core.config_dicts import ConfigError, build_dataclass, flatten_sections, merge_dotted, nest_dotted
from wsss_core.stages import STAGES
from wsss_core.yaml_loader import YAMLSyntaxError, load_yaml

if TYPE_CHECKING:
    from study.tracking import Tracker

AXIS_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
SAMPLED_KINDS = ("choice", "uniform", "loguniform", "randint")
ALGORITHMS = ("grid", "optuna")
SCHEDULERS = ("fifo", "asha")
METRICS = ("miou", "contour_f")
MODES = ("max", "min")
SEED_KEY = "runtime.seed"
DEVICE_KEY = "runtime.device"
PATH_KEYS = ("data.root", "data.label_source", "cam.weights", "affinity.weights", "segmentation.weights")
"""Keys whose relative file paths are resolved when the spec is loaded."""
NAME_CHARS = "-_."
NAME_MAX = 100
TOP_KEYS = ("name", "description", "base", "fixed", "space", "seeds", "search", "scheduler", "resources", "failure",
            "tracking")


class SpecError(ValueError):
    """A bad study spec; the message is one line for the user."""


@dataclass(frozen=True)
class Axis:
    """One searched pipeline key (dotted, e.g. "cam.lam")."""

    key: str
    kind: str
    values: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    when: tuple[tuple[str, Any], ...] = ()

    def active(self, point: dict[str, Any], defaults: dict[str, Any]) -> bool:
        """Whether the axis applies given the point's values (else the defaults)."""
        return all(point.get(key, defaults.get(key)) == value for key, value in self.when)

    def sample(self, rng: np.random.Generator) -> Any:
        """One value drawn from a sampled axis (random search in grid studies)."""
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return int(rng.integers(self.low, self.high))

    def extremes(self) -> tuple[Any, ...]:
        """Values that bound the axis, used to validate the pipeline config."""
        if self.kind in ("grid", "choice"):
            return self.values
        if self.kind == "randint":
            return (int(self.low), int(self.high) - 1)
        return (self.low, self.high)


@dataclass(frozen=True)
class SearchSettings:
    """algorithm: "grid" (grid axes expanded, sampled axes drawn num_samples times
    per grid point, FIFO order) or "optuna" (TPE through Ray Tune's OptunaSearch,
    num_samples points). metric/mode: the val-split metric of the latest stage.
    storage: the Optuna storage that records the trials (study.optuna_storage):
    "" for the study's own journal file, an RDB URL (sqlite:///..., postgresql://...)
    or a journal file path; TPE searches in it, grid studies are recorded into it."""

    algorithm: str = "grid"
    num_samples: int = 1
    metric: str = "miou"
    mode: str = "max"
    max_concurrent: int = 0
    seed: int = 0
    storage: str = ""


@dataclass(frozen=True)
class SchedulerSettings:
    """fifo, or ASHA on the stage index (1..3): grace_period (1..2) stages before a
    trial may be stopped, reduction_factor as in Ray Tune's ASHAScheduler."""

    type: str = "fifo"
    grace_period: int = 1
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class ResourceSettings:
    """Per trial: CPUs, GPUs (fractions share one GPU), custom Ray resources.
    With gpus > 0 the CPUs and GPUs are held by each stage task a trial starts,
    not by the trial (study.stage_tasks); with runtime.device cpu the GPU is
    then a scheduling resource only."""

    cpus: float = 1.0
    gpus: float = 0.0
    custom: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FailureSettings:
    """max_retries: how often a failed trial is restarted from its checkpoint.
    lease_timeout: seconds a stage's compute lease outlives its holder's last
    heartbeat (a trial lost with its node frees the stage after this long)."""

    max_retries: int = 1
    lease_timeout: float = 60.0


@dataclass(frozen=True)
class StudySpec:
    """A validated study. `base` is the nested pipeline config dict (inline, so
    workers on other nodes need no file); `fixed` dotted keys apply to every trial."""

    name: str
    base: dict[str, Any]
    fixed: dict[str, Any]
    axes: tuple[Axis, ...]
    seeds: tuple[int, ...]
    search: SearchSettings
    scheduler: SchedulerSettings
    resources: ResourceSettings
    failure: FailureSettings
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    """The flattened pipeline config of base + fixed (for `when` conditions)."""
    tracking: tuple[Tracker, ...] = ()
    """The experiment trackers (study.tracking)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data that `parse_spec` turns back into this spec (saved beside a study)."""
        from study.tracking import tracking_dict

        space = {}
        for axis in self.axes:
            if axis.kind in ("grid", "choice"):
                entry: dict[str, Any] = {axis.kind: list(axis.values)}
            else:
                entry = {axis.kind: [axis.low, axis.high]}
            if axis.when:
                entry["when"] = dict(axis.when)
            space[axis.key] = entry
        return {
            "name": self.name,
            "description": self.description,
            "base": copy.deepcopy(self.base),
            "fixed": dict(self.fixed),
            "space": space,
            "seeds": list(self.seeds),
            "search": vars(self.search).copy(),
            "scheduler": vars(self.scheduler).copy(),
            "resources": {**vars(self.resources), "custom": dict(self.resources.custom)},
            "failure": vars(self.failure).copy(),
            **({"tracking": tracking_dict(self.tracking)} if self.tracking else {}),
        }

    def overrides(self, point: dict[str, Any]) -> dict[str, Any]:
        """Dotted overrides of one trial: fixed keys, then the point's active axes."""
        active = {}
        for axis in self.axes:
            if axis.key in point and axis.active({**point, **active}, self.defaults):
                active[axis.key] = point[axis.key]
        if SEED_KEY in point:
            active[SEED_KEY] = point[SEED_KEY]
        return {**self.fixed, **active}

    def pipeline_dict(self, point: dict[str, Any]) -> dict[str, Any]:
        """The nested pipeline config dict of one trial (base + overrides)."""
        return merge_dotted(self.base, self.overrides(point))


def absolute_path(value: Any) -> Any:
    """A relative file path made absolute against the driver's cwd, so every
    node reads the same file; other values (e.g. weights "default") unchanged."""
    if not isinstance(value, str) or not value or "://" in value:
        return value
    path = Path(value).expanduser()
    if path.is_absolute() or not ("/" in value or value.startswith("~") or path.exists()):
        return str(path) if value.startswith("~") else value
    return str(path.resolve())


def _pipeline_sections() -> tuple[str, ...]:
    from wsss_core.pipeline.config import SECTIONS

    return tuple(SECTIONS)


def load_spec(path: str | Path, *, sets: Sequence[str] = (), grids: Sequence[str] = ()) -> StudySpec:
    """Read and validate a spec file; `base` paths resolve relative to it.
    `sets` / `grids`: `--set` / `--grid` items applied first (study.overrides)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        raw = load_yaml(path.read_text(), str(path))
    except YAMLSyntaxError as error:
        raise SpecError(str(error)) from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    raw.setdefault("name", path.stem)
    if sets or grids:
        from study.overrides import apply_overrides

        raw = apply_overrides(raw, sets, grids)
    return parse_spec(raw, base_dir=path.parent)


def parse_spec(raw: dict[str, Any], *, base_dir: str | Path = ".") -> StudySpec:
    """Validate a spec mapping (as in the YAML) into a StudySpec."""
    from study.tracking import parse_tracking

    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown and set(unknown) <= set(_pipeline_sections()):
        raise SpecError(f"this file is a pipeline config, not a study spec (it has section {unknown[0]!r}); run it "
                        "with `wsss pipeline run`, or name it as `base:` of a study spec")
    if unknown:
        raise SpecError(f"unknown spec key {unknown[0]!r}; allowed: {', '.join(TOP_KEYS)}")
    name = check_study_name(raw.get("name"), "name")
    base = _load_base(raw.get("base", {}), Path(base_dir))
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict) or not all(isinstance(k, str) and "." in k for k in fixed):
        raise SpecError(f"fixed={fixed!r} is invalid; allowed: a mapping of dotted pipeline keys (section.key) to values")
    seeds = _parse_seeds(raw.get("seeds", [0]))
    if SEED_KEY in fixed:
        raise SpecError(f"fixed.{SEED_KEY} is invalid; allowed: set seeds with the top-level `seeds` list")
    axes = _parse_axes(raw.get("space") or {}, fixed)
    spec = StudySpec(
        name=name,
        description=str(raw.get("description", "")),
        base=merge_dotted(base, {k: absolute_path(v) for k, v in flatten_sections(base).items() if k in PATH_KEYS}),
        fixed={k: absolute_path(v) if k in PATH_KEYS else v for k, v in fixed.items()},
        axes=tuple(dataclasses.replace(a, values=tuple(map(absolute_path, a.values))) if a.key in PATH_KEYS else a
                   for a in axes),
        seeds=seeds,
        search=_section(SearchSettings, "search", raw.get("search")),
        scheduler=_section(SchedulerSettings, "scheduler", raw.get("scheduler")),
        resources=_section(ResourceSettings, "resources", raw.get("resources")),
        failure=_section(FailureSettings, "failure", raw.get("failure")),
        tracking=parse_tracking(raw.get("tracking")),
    )
    _validate_settings(spec)
    spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, storage=_checked_storage(spec.search.storage)))
    defaults = _check_pipeline(merge_dotted(spec.base, spec.fixed), "base")
    spec = StudySpec(**{**spec.__dict__, "defaults": defaults})
    _validate_device(spec)
    _validate_points(spec)
    return spec


def check_study_name(name: Any, key: str = "name") -> str:
    """`name` if it is one path component (letters, digits, '-', '_', '.', not
    starting with '.' or '_', which storage listings skip); else SpecError naming `key`."""
    valid = (
        isinstance(name, str) and 0 < len(name) <= NAME_MAX and name[0] not in "._"
        and all(c.isascii() and (c.isalnum() or c in NAME_CHARS) for c in name)
    )
    if not valid:
        raise SpecError(
            f"{key}={name!r} is invalid; allowed: 1-{NAME_MAX} letters, digits, '-', '_', '.' "
            "(one folder name, not starting with '.' or '_')"
        )
    return name


def expand_grid(spec: StudySpec) -> list[dict[str, Any]]:
    """Every trial point of a grid study, point-major and seed-minor: grid axes in
    spec order (a conditional axis expands only where its `when` holds), sampled
    axes drawn `search.num_samples` times per grid point (seeded by search.seed),
    then one copy per seed under "runtime.seed". Each point has a stable "key"
    ("p0000", ...) that names the trial across resumes."""
    points: list[dict[str, Any]] = [{}]
    for axis in (a for a in spec.axes if a.kind == "grid"):
        grown = []
        for point in points:
            if axis.active(point, spec.defaults):
                grown.extend({**point, axis.key: value} for value in axis.values)
            else:
                grown.append(point)
        points = grown
    sampled = [a for a in spec.axes if a.kind in SAMPLED_KINDS]
    if sampled:
        rng = np.random.default_rng(spec.search.seed)
        drawn = []
        for point, _ in itertools.product(points, range(spec.search.num_samples)):
            draw = dict(point)
            for axis in sampled:
                if axis.active(draw, spec.defaults):
                    draw[axis.key] = axis.sample(rng)
            drawn.append(draw)
        points = drawn
    trials = [{**point, SEED_KEY: seed} for point in points for seed in spec.seeds]
    return [{"key": f"p{index:04d}", **trial} for index, trial in enumerate(trials)]


def optuna_space(trial: Any, axes: tuple[Axis, ...], defaults: dict[str, Any]) -> None:
    """Optuna define-by-run space: suggests only the axes whose `when` holds
    (conditional keys), grid axes as categorical. Bind axes/defaults with
    functools.partial so the space pickles for Tuner.restore."""
    point: dict[str, Any] = {}
    for axis in axes:
        if not axis.active(point, defaults):
            continue
        if axis.kind in ("grid", "choice"):
            point[axis.key] = trial.suggest_categorical(axis.key, list(axis.values))
        elif axis.kind == "randint":
            point[axis.key] = trial.suggest_int(axis.key, int(axis.low), int(axis.high) - 1)
        else:
            point[axis.key] = trial.suggest_float(axis.key, axis.low, axis.high, log=axis.kind == "loguniform")


def num_trials(spec: StudySpec) -> int:
    """How many trials the study runs in all (seeds included)."""
    if spec.search.algorithm == "grid":
        return len(expand_grid(spec))
    return spec.search.num_samples * len(spec.seeds)


def _load_base(base: Any, base_dir: Path) -> dict[str, Any]:
    if isinstance(base, str):
        path = base_dir / base
        if not path.is_file():
            raise SpecError(f"base={base!r} is invalid; allowed: a pipeline config path relative to the spec ({path} not found)")
        try:
            base = load_yaml(path.read_text(), f"base {path}") or {}
        except YAMLSyntaxError as error:
            raise SpecError(str(error)) from None
    if not isinstance(base, dict):
        raise SpecError(f"base={base!r} is invalid; allowed: a pipeline config path or an inline mapping of sections")
    try:
        return nest_dotted(base)
    except ConfigError as error:
        raise SpecError(f"base: {error}") from None


def _parse_seeds(seeds: Any) -> tuple[int, ...]:
    if (
        not isinstance(seeds, list) or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise SpecError(f"seeds={seeds!r} is invalid; allowed: a non-empty list of distinct integers >= 0")
    return tuple(seeds)


def _parse_axes(space: Any, fixed: dict[str, Any]) -> tuple[Axis, ...]:
    if not isinstance(space, dict):
        raise SpecError(f"space={space!r} is invalid; allowed: a mapping of dotted pipeline keys to axes")
    axes: list[Axis] = []
    for key, entry in space.items():
        where = f"space.{key}"
        if not isinstance(key, str) or "." not in key:
            raise SpecError(f"{where} is invalid; allowed: a dotted pipeline key such as cam.lam")
        if key == SEED_KEY:
            raise SpecError(f"{where} is invalid; allowed: set seeds with the top-level `seeds` list")
        if key in fixed:
            raise SpecError(f"{where} is also in fixed; allowed: a key either fixed or searched")
        if not isinstance(entry, dict):
            raise SpecError(f"{where}={entry!r} is invalid; allowed: a mapping like {{grid: [...]}} or {{uniform: [lo, hi]}}")
        kinds = [k for k in entry if k != "when"]
        if len(kinds) != 1 or kinds[0] not in AXIS_KINDS:
            raise SpecError(f"{where} has keys {sorted(entry)}; allowed: exactly one of {', '.join(AXIS_KINDS)} plus optional when")
        kind = kinds[0]
        when = entry.get("when") or {}
        if not isinstance(when, dict) or not all(isinstance(k, str) and "." in k for k in when):
            raise SpecError(f"{where}.when={when!r} is invalid; allowed: a mapping of dotted keys to values")
        for condition in when:
            later = [a.key for a in axes]
            if condition in space and condition not in later:
                raise SpecError(f"{where}.when names {condition!r}; allowed: keys of earlier axes, fixed keys or base keys")
        axes.append(_parse_axis(where, key, kind, entry[kind], tuple(when.items())))
    return tuple(axes)


def _parse_axis(where: str, key: str, kind: str, value: Any, when: tuple[tuple[str, Any], ...]) -> Axis:
    if kind in ("grid", "choice"):
        if not isinstance(value, list) or not value:
            raise SpecError(f"{where}.{kind}={value!r} is invalid; allowed: a non-empty list of values")
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
            raise SpecError(f"{where}.{kind}={value!r} is invalid; allowed: a list of numbers, strings, booleans or null")
        if len({repr(v) for v in value}) != len(value):
            raise SpecError(f"{where}.{kind}={value!r} is invalid; allowed: distinct values")
        return Axis(key, kind, values=tuple(value), when=when)
    numeric = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if not numeric or not value[0] < value[1]:
        raise SpecError(f"{where}.{kind}={value!r} is invalid; allowed: [low, high] numbers with low < high")
    if kind == "loguniform" and value[0] <= 0:
        raise SpecError(f"{where}.loguniform={value!r} is invalid; allowed: [low, high] with 0 < low < high")
    if kind == "randint" and not all(isinstance(v, int) for v in value):
        raise SpecError(f"{where}.randint={value!r} is invalid; allowed: [low, high) integers with low < high")
    return Axis(key, kind, low=value[0], high=value[1], when=when)


def _section(cls: type, name: str, values: Any) -> Any:
    try:
        return build_dataclass(cls, {} if values is None else values, name)
    except ConfigError as error:
        raise SpecError(str(error)) from None


def _validate_settings(spec: StudySpec) -> None:
    search, scheduler, resources = spec.search, spec.scheduler, spec.resources
    checks = [
        (search.algorithm in ALGORITHMS, "search.algorithm", search.algorithm, ", ".join(ALGORITHMS)),
        (search.num_samples >= 1, "search.num_samples", search.num_samples, "an integer >= 1"),
        (search.metric in METRICS, "search.metric", search.metric, ", ".join(METRICS)),
        (search.mode in MODES, "search.mode", search.mode, ", ".join(MODES)),
        (search.max_concurrent >= 0, "search.max_concurrent", search.max_concurrent, "an integer >= 0 (0: as resources allow)"),
        (scheduler.type in SCHEDULERS, "scheduler.type", scheduler.type, ", ".join(SCHEDULERS)),
        (1 <= scheduler.grace_period < len(STAGES), "scheduler.grace_period", scheduler.grace_period,
         f"an integer stage count in 1..{len(STAGES) - 1} (ASHA stops trials only before the last stage)"),
        (scheduler.reduction_factor > 1, "scheduler.reduction_factor", scheduler.reduction_factor, "a number > 1"),
        (resources.cpus > 0, "resources.cpus", resources.cpus, "a number > 0"),
        (0 <= resources.gpus <= 1, "resources.gpus", resources.gpus,
         "a number in [0, 1] (a trial trains on one device; fractions share a GPU)"),
        (all(isinstance(v, (int, float)) and v > 0 for v in resources.custom.values()),
         "resources.custom", resources.custom, "a mapping of resource names to numbers > 0"),
        (spec.failure.max_retries >= 0, "failure.max_retries", spec.failure.max_retries, "an integer >= 0"),
        (spec.failure.lease_timeout >= 1, "failure.lease_timeout", spec.failure.lease_timeout, "seconds >= 1"),
    ]
    for ok, key, value, allowed in checks:
        if not ok:
            raise SpecError(f"{key}={value!r} is invalid; allowed: {allowed}")
    if search.algorithm == "optuna" and not spec.axes:
        raise SpecError("space is empty; allowed for search.algorithm=optuna: at least one axis")
    if search.algorithm == "optuna" and len(spec.seeds) > 1 and scheduler.type != "fifo":
        raise SpecError(f"scheduler.type={scheduler.type!r} is invalid with search.algorithm=optuna and "
                        f"{len(spec.seeds)} seeds; allowed: fifo (a point's seeds are averaged, none may stop early)")


def _checked_storage(storage: str) -> str:
    """search.storage validated and made absolute (study.optuna_storage)."""
    if not storage:
        return storage
    from study.optuna_storage import StorageError, check_storage

    try:
        return check_storage(storage)
    except StorageError as error:
        raise SpecError(str(error)) from None


def _validate_device(spec: StudySpec) -> None:
    """runtime.device=cuda (fixed, in the base or searched) needs resources.gpus > 0."""
    devices = {spec.defaults.get(DEVICE_KEY)}
    devices.update(v for axis in spec.axes if axis.key == DEVICE_KEY for v in axis.values)
    if "cuda" in devices and spec.resources.gpus == 0:
        raise SpecError("resources.gpus=0 is invalid with runtime.device=cuda; allowed: gpus in (0, 1], "
                        "or runtime.device auto/cpu")


def _validate_points(spec: StudySpec) -> None:
    """Every grid point, and each sampled axis at its extremes, must make a valid pipeline config."""
    if spec.search.algorithm == "grid":
        grid = [a for a in spec.axes if a.kind == "grid"]
        base_points = expand_grid(StudySpec(**{**spec.__dict__, "axes": tuple(grid), "seeds": (spec.seeds[0],)}))
        for point in base_points:
            _check_pipeline(spec.pipeline_dict(point), f"grid point {_describe(point)}")
    for axis in spec.axes:
        if axis.kind == "grid" and spec.search.algorithm == "grid":
            continue
        for value in axis.extremes():
            point = {**dict(axis.when), axis.key: value}
            _check_pipeline(merge_dotted(spec.base, {**spec.fixed, **point}), f"space.{axis.key}")
    for seed in spec.seeds:
        _check_pipeline(merge_dotted(spec.base, {**spec.fixed, SEED_KEY: seed}), "seeds")


def _check_pipeline(nested: dict[str, Any], where: str) -> dict[str, Any]:
    from wsss_core.pipeline.config import ConfigError, flatten_config, load_config

    try:
        return flatten_config(load_config(nested))
    except ConfigError as error:
        raise SpecError(f"{where}: {error}") from None


def _describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in point.items() if k != "key") or "(base)"
