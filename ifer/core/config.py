"""One layered configuration system: defaults <- profile <- params file <- command-line overrides.

Profiles are short diffs against ``ifer/configs/default.yaml`` (as dinov2's train configs are):
``tiny`` runs on a 2-core CPU in minutes on SynthFER; ``paper`` is the published protocol on the
real datasets. The resolved config is saved next to every output (``save_resolved``). ``with_protocol``
applies one of the ``protocols`` (``clean``, ``released``: ``protocol_overrides.<name>``) over a resolved config.

    python -m ifer.core.config --profile tiny                  # print the resolved tiny config
    python -m ifer.core.config --profile paper asit.train.steps=1000 --out /tmp/cfg.yaml
    python -c "from ifer.core.config import load_config, with_protocol; print(with_protocol(load_config('paper'), 'released').ifer)"
"""
from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("tiny", "paper")


class ConfigError(ValueError):
    """A config file or override is malformed, or names a key that does not exist."""


class Config(dict):
    """A dict with attribute access for nested keys (``cfg.asit.train.lr``); still plain YAML/JSON-able."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}; keys: {sorted(self)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def get_path(self, dotted: str, default: Any = ...) -> Any:
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                if default is ...:
                    raise KeyError(f"config has no key {dotted!r}")
                return default
            node = node[part]
        return node

    def to_dict(self) -> dict:
        return _plain(self)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _wrap(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return Config({k: _wrap(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_wrap(v) for v in obj]
    return obj


def _read_yaml_text(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    return data


def _packaged(name: str) -> dict:
    text = resources.files("ifer.configs").joinpath(name).read_text()
    return _read_yaml_text(text, f"ifer/configs/{name}")


def merge(base: Mapping, update: Mapping, source: str, strict: bool = True, _prefix: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base``. With ``strict`` an unknown key is an error (typos fail loudly)."""
    out = copy.deepcopy(dict(base))
    for k, v in update.items():
        key = f"{_prefix}{k}"
        if strict and k not in out:
            raise ConfigError(f"{source}: unknown config key {key!r}; known here: {sorted(out)}")
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            # a model's ``kwargs`` are its constructor's keyword arguments: free-form, checked by the constructor;
            # ``launch.resources`` is keyed by stage kind, checked by ifer.launch.resources_for
            out[k] = merge(out[k], v, source, strict and k not in ("kwargs", "resources"), _prefix=f"{key}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(item: str) -> dict:
    """``a.b.c=value`` -> nested dict; the value is parsed as YAML (``1e-4``, ``[1, 2]``, ``null``, ``true``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    dotted, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string; a number is what anyone typing it means
            value = float(value)
        except ValueError:
            pass
    node: dict = {}
    cur = node
    parts = dotted.strip().split(".")
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return node


def load_config(profile: str | None = None, files: Iterable[str | Path] = (), overrides: Iterable[str] = ()) -> Config:
    """Resolve defaults <- profile <- each file in ``files`` <- ``overrides``.

    A params file may name its own profile (top-level ``profile:``); an explicit ``profile`` argument wins.
    """
    files = [Path(f) for f in files]
    file_layers = []
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{f}: config file not found")
        file_layers.append((str(f), _read_yaml_text(f.read_text(), str(f))))
    if profile is None:
        named = [layer.get("profile") for _, layer in file_layers if layer.get("profile")]
        profile = named[-1] if named else "tiny"
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    cfg = _packaged("default.yaml")
    cfg.pop("_recipe", None)  # only a YAML anchor for the per-method recipes
    cfg = merge(cfg, _packaged(f"profiles/{profile}.yaml"), f"profile {profile}")
    for source, layer in file_layers:
        cfg = merge(cfg, layer, source)
    for item in overrides:
        cfg = merge(cfg, parse_override(item), f"override {item!r}")
    cfg["profile"] = profile
    _derive_protocol_keys(cfg, file_layers)
    return _wrap(cfg)


def _derive_protocol_keys(cfg: dict, file_layers: list[tuple[str, dict]]) -> None:
    """Check ``protocols`` and derive ``finetune_seeds`` (the fine-tune stage's matrix in dvc.yaml).

    DVC reads ``finetune_seeds`` from params.yaml, so a params file whose value no longer matches its own
    ``protocols``/``asit_seeds`` (edited by hand after ``ifer config``) is refused rather than silently
    running a pipeline without (or with a stale) fine-tune stage."""
    known = sorted(cfg.get("protocol_overrides") or {})
    protocols = cfg.get("protocols") or []
    if not protocols:
        raise ConfigError(f"protocols: empty; expected a list of {known}")
    for name in protocols:
        if name not in known:
            raise ConfigError(f"protocols: unknown protocol {name!r}; known: {known}")
    if len(set(protocols)) != len(protocols):
        raise ConfigError(f"protocols: {protocols} names a protocol twice")
    seeds = [int(s) for s in (cfg.get("asit_seeds") or [cfg.get("seed", 0)])]
    derived = seeds if "released" in protocols else []
    for source, layer in file_layers:
        if "finetune_seeds" in layer and [int(s) for s in layer["finetune_seeds"] or []] != derived:
            raise ConfigError(f"{source}: finetune_seeds {layer['finetune_seeds']} does not match protocols "
                              f"{protocols} and asit_seeds {seeds} (expected {derived}); rewrite it with `ifer config`")
    cfg["finetune_seeds"] = derived


def with_protocol(cfg: Mapping, name: str) -> Config:
    """``cfg`` with ``protocol_overrides.<name>`` deep-merged over it and ``protocol`` set to ``name``.

    >>> released = with_protocol(load_config("paper"), "released")
    >>> released.ifer.mode, released.data.fer.model_selection, released.fer_methods.ifer.train.amp_dtype
    ('as_released', 'test', 'float16')
    """
    overlays = cfg.get("protocol_overrides") or {}
    if name not in overlays:
        raise ConfigError(f"unknown protocol {name!r}; known: {sorted(overlays)}")
    out = merge(_plain(cfg), _plain(overlays[name]), f"protocol_overrides.{name}")
    out["protocol"] = name
    return _wrap(out)


def save_resolved(cfg: Mapping, path: str | Path) -> Path:
    """Write the resolved config as YAML (keys in definition order) and return the path."""
    from ifer.core.io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(_plain(cfg), sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print or save a resolved configuration.")
    ap.add_argument("--profile", choices=PROFILES)
    ap.add_argument("--params", action="append", default=[], help="extra YAML layer(s), e.g. params.yaml")
    ap.add_argument("--out", help="write here instead of stdout")
    ap.add_argument("overrides", nargs="*", help="key.sub=value")
    args = ap.parse_args(argv)
    cfg = load_config(args.profile, args.params, args.overrides)
    if args.out:
        save_resolved(cfg, args.out)
    else:
        sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
