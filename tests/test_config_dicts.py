"""One dotted-key merger and one dict -> dataclass loader (wsss_core.config_dicts),
read by the pipeline config and the study spec alike."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from study.spec import SpecError, parse_spec
from wsss_core.config_dicts import ConfigError, build_dataclass, merge_dotted, nest_dotted, plain_data
from wsss_core.pipeline.config import load_config

TINY_BASE = {"data": {"synth_num_train": 4}, "cam": {"lam": 0.1, "epochs": 1}}


def test_nest_dotted_sets_dotted_keys_over_their_sections_and_copies() -> None:
    source = {"cam.lam": 0.5, "cam": {"lam": 0.1, "lr": 0.2}, "eval": {"workers": 0}}
    nested = nest_dotted(source)
    assert nested == {"cam": {"lam": 0.5, "lr": 0.2}, "eval": {"workers": 0}}
    nested["cam"]["lr"] = 9.0
    assert source["cam"]["lr"] == 0.2


def test_merge_dotted_splits_at_the_first_dot_and_leaves_the_base_alone() -> None:
    base = {"cam": {"lam": 0.1}}
    merged = merge_dotted(base, {"cam.lam": 0.5, "runtime.seed": 3, "data.a.b": 1})
    assert merged == {"cam": {"lam": 0.5}, "runtime": {"seed": 3}, "data": {"a.b": 1}}
    assert base == {"cam": {"lam": 0.1}}
    with pytest.raises(ConfigError, match=r"^cam=5 is invalid; allowed: a mapping"):
        merge_dotted({"cam": 5}, {"cam.lam": 0.5})


def test_pipeline_config_and_study_spec_merge_alike() -> None:
    """A dotted key wins over its section's mapping whichever comes first, in both readers."""
    source = {"cam.lam": 0.7, **TINY_BASE}
    assert load_config(source).cam.lam == 0.7
    spec = parse_spec({"name": "merge", "base": source})
    assert spec.base["cam"]["lam"] == 0.7
    assert load_config(spec.pipeline_dict({})).cam.lam == 0.7


@dataclass(frozen=True)
class Settings:
    rate: float = 1.0
    count: int = 2
    label: str | None = None
    sizes: tuple[int, int] = (1, 2)
    extra: dict[str, float] = field(default_factory=dict)


def test_build_dataclass_checks_each_value_against_its_annotation() -> None:
    built = build_dataclass(Settings, {"rate": 2, "sizes": [3, 4], "extra": {"gpu_a": 1}}, "s")
    assert built == Settings(rate=2.0, sizes=(3, 4), extra={"gpu_a": 1.0})
    assert isinstance(built.rate, float) and isinstance(built.extra["gpu_a"], float)
    nested = {"sizes": built.sizes, "nested": {"t": (1, (2,))}}
    assert plain_data(nested) == {"sizes": [3, 4], "nested": {"t": [1, [2]]}}
    bad = [
        ({"count": True}, "s.count=True is invalid; allowed: an integer"),
        ({"count": 1.5}, "s.count=1.5 is invalid; allowed: an integer"),
        ({"rate": "x"}, "s.rate='x' is invalid; allowed: a number"),
        ({"sizes": [1]}, "s.sizes=[1] is invalid; allowed: a list of 2 values"),
        ({"extra": {"a": "x"}}, "s.extra.a='x' is invalid; allowed: a number"),
        ({"extra": [1]}, "s.extra=[1] is invalid; allowed: a mapping"),
        ({"colour": 1}, "unknown key s.colour; allowed: count, extra, label, rate, sizes"),
    ]
    for values, message in bad:
        with pytest.raises(ConfigError) as error:
            build_dataclass(Settings, values, "s")
        assert str(error.value) == message
    with pytest.raises(ConfigError, match=r"^s=3 is invalid; allowed: a mapping of s keys$"):
        build_dataclass(Settings, 3, "s")


def test_study_settings_go_through_the_same_loader() -> None:
    """The spec's sections raise SpecError with the loader's words."""
    with pytest.raises(SpecError, match=r"^resources.custom.accel='x' is invalid; allowed: a number$"):
        parse_spec({"name": "s", "base": TINY_BASE, "resources": {"custom": {"accel": "x"}}})
    with pytest.raises(SpecError, match=r"^search.num_samples=True is invalid; allowed: an integer$"):
        parse_spec({"name": "s", "base": TINY_BASE, "search": {"num_samples": True}})
    spec = parse_spec({"name": "s", "base": TINY_BASE, "scheduler": {"type": "asha", "reduction_factor": 3}})
    assert spec.scheduler.reduction_factor == 3.0 and isinstance(spec.scheduler.reduction_factor, float)
