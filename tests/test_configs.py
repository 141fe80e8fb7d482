"""Every YAML in gan_lab/conf/ composes and instantiates, so a new option is tested for free."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from gan_lab.build import build_datamodule, build_module
from gan_lab.config import CONF_DIR

PART_GROUPS = [
    "loss",
    "prior",
    "regularizer",
    "instance_noise",
    "optimizer@optimizer.g",
    "model",
]


def _options(group: str) -> list[str]:
    folder = CONF_DIR / group.split("@")[0]
    return sorted(p.stem for p in folder.glob("*.yaml"))


def test_experiment_values_win_over_root_defaults(make_config):
    cfg = make_config("experiment=ring_mlp", quick=False)
    assert cfg.train.iterations == 5000 and cfg.prior.dim == 2
    assert make_config("experiment=ring_mlp", "train.iterations=7").train.iterations == 7


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes_and_builds(make_config, experiment):
    cfg = make_config(f"experiment={experiment}")
    if cfg.data.get("root") == "???":
        pytest.skip("needs a user folder")
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.sample_shape)
    assert module.generate(4).shape == (4, *datamodule.sample_shape)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in PART_GROUPS for o in _options(g)])
def test_every_part_option_instantiates(make_config, group, option):
    cfg = make_config(f"{group}={option}", "data=digits")
    node = cfg.optimizer.g if group.startswith("optimizer") else cfg[group]
    if group == "model":
        datamodule = build_datamodule(cfg)
        build_module(cfg, datamodule.sample_shape)
    elif node:
        assert instantiate(node) is not None


@pytest.mark.parametrize("option", _options("data"))
def test_every_data_option_composes(make_config, option):
    cfg = make_config(f"data={option}")
    assert "_target_" in cfg.data
