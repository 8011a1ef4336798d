"""Layered config: defaults <- profile <- params file <- overrides; typos fail loudly."""
import pytest
import yaml

from ifer.core.config import ConfigError, load_config, parse_override, save_resolved


def test_profiles_resolve_and_differ():
    tiny, paper = load_config("tiny"), load_config("paper")
    assert tiny.profile == "tiny" and paper.profile == "paper"
    assert tiny.asit.model == "asit_tiny" and paper.asit.model == "asit_base"
    assert paper.fer_methods.ifer.train.epochs == 320 and paper.fer_methods.ifer.train.lr == pytest.approx(1e-4)
    # the published loss weights are the defaults and survive the paper profile untouched
    assert paper.asit.lambdas.to_dict() == {"l2": 1.0, "lpips": 0.8, "id": 0.1, "adv": 1e-4, "dist": 0.01}


def test_layer_order_params_then_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profile": "paper", "asit": {"train": {"steps": 7}}}))
    cfg = load_config(files=[params], overrides=["asit.train.steps=9", "seeds=[1, 2]", "asit.train.lr=1e-3"])
    assert cfg.asit.train.lr == 1e-3
    assert cfg.profile == "paper"            # the params file names its profile
    assert cfg.asit.train.steps == 9          # CLI override wins over the file
    assert cfg.seeds == [1, 2]
    assert load_config(files=[params]).asit.train.steps == 7


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'asit.trian'"):
        load_config("tiny", overrides=["asit.trian.steps=3"])
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config("huge")
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("nonsense")
    bad = tmp_path / "bad.yaml"
    bad.write_text("asit: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(files=[bad])


def test_save_resolved_roundtrip(tmp_path):
    cfg = load_config("tiny", overrides=["fer_methods.ifer.train.epochs=3"])
    path = save_resolved(cfg, tmp_path / "config.yaml")
    again = load_config(files=[path])
    assert again.to_dict() == cfg.to_dict()
