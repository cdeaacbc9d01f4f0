"""Experiment trackers: Ray Tune's own logger callbacks, fed flat parameter names.

A study spec names its trackers under `tracking:`, as a list or as a mapping
of tracker to options (`wsss study run --track NAME` adds more)::

    tracking: [mlflow, tensorboard]
    tracking:
      wandb: {project: wsss, tags: [fig3], entity: vision-lab, mode: offline, dir: /scratch/wandb}
      mlflow: {experiment: fig3, tags: [fig3], tracking_uri: "http://mlflow.lab:5000"}
      tensorboard: {}
      comet: {project: wsss, workspace: vision-lab, tags: [fig3], mode: offline, dir: /scratch/comet}

Each tracker is the Ray Tune integration of that name
(ray.air.integrations.wandb.WandbLoggerCallback, ...mlflow.MLflowLoggerCallback,
...comet.CometLoggerCallback, ray.tune.logger.TBXLoggerCallback), running in
the driver. It sees every trial with flat names: its parameters are the
trial's flattened pipeline config (`cam.lam`, `cam.pooling`, `runtime.seed`,
...; TensorBoard's HParams view: the swept keys and the seed), its name is
`<study>/<trial id>` and its group the trial's point without the seed, so the
seed repeats of one point group together. Metrics are what the trial reports
(study.trainable): per stage `miou`, `contour_f`, `<stage>_miou`, ..., per
training epoch `train/<stage>/<loss part>`, `train/<stage>/lr`, ...

Secrets (WANDB_API_KEY, COMET_API_KEY, MLFLOW_TRACKING_PASSWORD or
MLFLOW_TRACKING_TOKEN, ...) are read by each tracker's library from the
environment; no option takes one, and a tracking URI holding a password is
refused, so none reaches study.json, the results or the logs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from study.spec import SEED_KEY, SpecError

if TYPE_CHECKING:
    from study.spec import StudySpec

TRACKERS = ("wandb", "mlflow", "tensorboard", "comet")
MODES = {"wandb": ("online", "offline", "disabled"), "comet": ("online", "offline")}
OPTIONS: dict[str, dict[str, str]] = {
    "wandb": {"project": "W&B project (default: the study name)", "tags": "a list of strings",
              "entity": "W&B team or user", "mode": "online, offline or disabled", "dir": "folder of the run folders"},
    "mlflow": {"experiment": "MLflow experiment name (default: the study name)", "tags": "a list of strings",
               "tracking_uri": "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else <study>/mlflow.db)"},
    "tensorboard": {},
    "comet": {"project": "Comet project (default: the study name)", "tags": "a list of strings",
              "workspace": "Comet workspace", "mode": "online or offline", "dir": "folder of offline archives"},
}
"""Each tracker's options and what they mean (docs/tracking.md)."""
PACKAGES = {"wandb": "wandb", "mlflow": "mlflow", "tensorboard": "tensorboardX", "comet": "comet_ml"}
"""The package each tracker's Ray integration imports (pip install 'wsss-study[tracking]')."""
GROUP_MAX = 128
"""W&B's longest group name; a longer point is named by its hash."""


@dataclass(frozen=True)
class Tracker:
    """One tracker of a study: its name (one of TRACKERS) and validated options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


def parse_tracking(raw: Any) -> tuple[Tracker, ...]:
    """The spec's `tracking` entry (None, a list of names or a mapping of name to options) validated."""
    if raw is None:
        return ()
    if isinstance(raw, list) and all(isinstance(name, str) for name in raw):
        raw = {name: {} for name in raw}
    if not isinstance(raw, dict):
        raise SpecError(f"tracking={raw!r} is invalid; allowed: a list of {', '.join(TRACKERS)} "
                        "or a mapping of those to options")
    return tuple(_parse_tracker(name, options) for name, options in raw.items())


def tracking_dict(trackers: tuple[Tracker, ...]) -> dict[str, dict[str, Any]]:
    """Plain data that `parse_tracking` turns back into `trackers` (study.json)."""
    return {tracker.name: {k: list(v) if isinstance(v, tuple) else v for k, v in tracker.options.items()}
            for tracker in trackers}


def with_trackers(spec: StudySpec, names: list[str]) -> StudySpec:
    """The spec with the trackers named by `--track` values ("wandb" or "wandb,mlflow")
    added with default options; those the spec names keep their options."""
    wanted = [name.strip() for value in names for name in value.split(",") if name.strip()]
    for name in wanted:
        if name not in TRACKERS:
            raise SpecError(f"--track={name!r} is invalid; allowed: {', '.join(TRACKERS)}")
    known = {tracker.name for tracker in spec.tracking}
    added = tuple(Tracker(name) for name in dict.fromkeys(wanted) if name not in known)
    return dataclasses.replace(spec, tracking=spec.tracking + added)


def check_trackers(spec: StudySpec) -> None:
    """SpecError naming the first tracker whose package is not installed here (the driver)."""
    for tracker in spec.tracking:
        if importlib.util.find_spec(PACKAGES[tracker.name]) is None:
            raise SpecError(f"tracking.{tracker.name} needs the {PACKAGES[tracker.name]} package, which is not "
                            "installed; allowed: install it (pip install 'wsss-study[tracking]') or drop the tracker")


def _parse_tracker(name: Any, options: Any) -> Tracker:
    if name not in TRACKERS:
        raise SpecError(f"tracking.{name} is invalid; allowed: {', '.join(TRACKERS)}")
    options = {} if options is None else options
    allowed = OPTIONS[name]
    if not isinstance(options, dict):
        raise SpecError(f"tracking.{name}={options!r} is invalid; allowed: a mapping with keys "
                        f"{', '.join(allowed) or '(none)'}")
    checked: dict[str, Any] = {}
    for key, value in options.items():
        where = f"tracking.{name}.{key}"
        if key not in allowed:
            raise SpecError(f"unknown key {where}; allowed: {', '.join(allowed) or '(none)'} "
                            "(secrets such as API keys come from the environment only, see docs/tracking.md)")
        if key == "tags":
            if not isinstance(value, list) or not all(isinstance(tag, str) and tag for tag in value):
                raise SpecError(f"{where}={value!r} is invalid; allowed: a list of non-empty strings")
            checked[key] = tuple(value)
            continue
        if not isinstance(value, str) or not value:
            raise SpecError(f"{where}={value!r} is invalid; allowed: a non-empty string ({allowed[key]})")
        if key == "mode" and value not in MODES[name]:
            raise SpecError(f"{where}={value!r} is invalid; allowed: {', '.join(MODES[name])}")
        if key == "tracking_uri" and urlsplit(value).password:
            raise SpecError(f"{where} holds a password; allowed: a URI without one (set MLFLOW_TRACKING_USERNAME "
                            "and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN, in the environment)")
        checked[key] = value
    return Tracker(name, checked)


def trial_group(study: str, point: dict[str, Any]) -> str:
    """The tracker group of a trial: the study and its point without the seed
    (axis order), so the seed repeats of one point share it."""
    text = ", ".join(f"{key}={value}" for key, value in point.items() if key != SEED_KEY) or "base"
    group = f"{study}: {text}"
    if len(group) > GROUP_MAX:
        group = f"{study}: point {hashlib.sha1(text.encode()).hexdigest()[:12]}"
    return group


def tracking_callbacks(spec: StudySpec, study: str, study_uri: str) -> list[Any]:
    """One Ray Tune callback per tracker of the spec (none without `tracking`)."""
    if not spec.tracking:
        return []
    from study.trackers import build_tracker

    return [build_tracker(tracker, study, study_uri, spec) for tracker in spec.tracking]
