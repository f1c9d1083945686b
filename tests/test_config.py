from __future__ import annotations

from pathlib import Path

import pytest

from contrastkit.config import parse_overrides
from contrastkit.errors import UserError
from contrastkit.recipes import config_from_dict, load_config, recipe_names


def test_shipped_recipes_load_and_validate() -> None:
    names = recipe_names()
    assert {"digits-simclr", "fashion-mnist-simclr", "cifar10-simclr"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name


def test_default_recipe_is_digits_quickstart() -> None:
    cfg = load_config(None)
    assert cfg.data.name == "digits" and cfg.method.name == "simclr"


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config("digits-simclr", ["train.epochs=3", "method.temperature=0.5", "optim.grad_clip=1"])
    assert cfg.train.epochs == 3 and cfg.method.temperature == 0.5 and cfg.optim.grad_clip == 1.0
    assert parse_overrides(["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["train.epoch=3"], "did you mean 'epochs'"),
        (["trian.epochs=3"], "did you mean 'train'"),
        (["train.epochs=many"], "expected an integer"),
        (["train.channels_last=maybe"], "expected true or false"),
        (["method.temperature=0"], "method.temperature must be > 0"),
        (["method.temperature=-1"], "must be > 0, got -1"),
        (["train.batch_size=1"], "train.batch_size must be >= 2"),
        (["optim.name=adam"], "did you mean 'adamw'"),
        (["data.name=fashion_mnist"], "did you mean 'fashion-mnist'"),
        (["model.encoder=resnet19"], "unknown model.encoder 'resnet19'"),
        (["train.device=tpu"], "train.device 'tpu'"),
        (["novalue"], "--set expects key=value"),
    ],
)
def test_bad_values_name_the_value_and_what_is_allowed(overrides: list[str], fragment: str) -> None:
    with pytest.raises(UserError, match=None) as info:
        load_config("digits-simclr", overrides)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_reach_into_lists_by_position_or_op() -> None:
    cfg = load_config("fashion-mnist-simclr", ["data.augment.color_jitter.brightness=0.8", "data.augment.0.scale=[0.2, 1.0]"])
    jitter = next(a for a in cfg.data.augment if a["op"] == "color_jitter")
    assert jitter == {"op": "color_jitter", "brightness": 0.8, "contrast": 0.4, "p": 0.8}  # the rest kept
    assert cfg.data.augment[0] == {"op": "random_resized_crop", "scale": [0.2, 1.0]} and len(cfg.data.augment) == 4
    for bad in ("data.augment.7.p=1", "data.augment.solarize.p=1"):
        with pytest.raises(UserError, match=r"no single entry .*use a position 0\.\.3 or an op: color_jitter"):
            load_config("fashion-mnist-simclr", [bad])


def test_unknown_recipe_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="did you mean 'digits-simclr'"):
        load_config("digits-simclar")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(str(bad))
    with pytest.raises(UserError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_round_trip_through_dict() -> None:
    cfg = load_config("fashion-mnist-simclr")
    assert config_from_dict(cfg.to_dict()) == cfg
