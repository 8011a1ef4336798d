"""The CLI explains itself: grouped verbs, help on every argument, examples per verb, positionals in the usage line,
``--version``, a torch-free (fast) ``--help``, and ``ifer weights``::

    .venv/bin/python -m pytest tests/test_cli_help.py -q
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ifer import cli

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "pandas")
PAPER_KEYS = ("asit.stylegan_weights", "asit.lpips_backbone", "asit.id_weights", "eval.id_weights",
              "eval.inception_weights", "fer_methods.fer_resnet18.kwargs.pretrained_path",
              "fer_methods.ke2nt.kwargs.pretrained_path", "fer_methods.disentangled.kwargs.pretrained_path",
              "fer_methods.ke2nt.kwargs.text_encoder_kwargs.weights_path")


def _verbs() -> dict[str, argparse.ArgumentParser]:
    ap = cli.build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_groups_the_verbs(capsys):
    out = _help(["--help"], capsys)
    user, pipeline = out.split("user commands:")[1].split("pipeline stages")
    for verb in ("config", "weights", "predict", "eval-checkpoint", "invert --folder", "compare", "readme"):
        assert f"\n  {verb} " in user, verb
    for verb in ("data", "train-asit", "finetune-asit", "fer-init", "train-fer", "eval-fer", "report"):
        assert f"\n  {verb} " in pipeline and f"\n  {verb} " not in user, verb
    assert set(_verbs()) <= set(cli.USER_VERBS) | set(cli.PIPELINE_VERBS)  # no verb left out of the listing
    assert "--version" in out


@pytest.mark.parametrize("verb", sorted(_verbs()))
def test_every_verb_has_help_and_examples(verb, capsys):
    out = _help([verb, "--help"], capsys)
    usage = out.split("\n\n")[0]
    assert usage.startswith(f"usage: ifer {verb}")
    assert "examples:\n  ifer " in out or "examples:\n  torchrun " in out
    positionals = {"predict": "FOLDER", "eval-checkpoint": "CHECKPOINT", "compare": "RESULTS_A RESULTS_B",
                   "verify": "[DATASET ...]"}
    if verb in positionals:
        assert positionals[verb] in usage, usage


def test_every_argument_has_help():
    parsers = {"ifer": cli.build_parser(), **{f"ifer {v}": p for v, p in _verbs().items()}}
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in parsers.items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing


def test_the_positional_is_split_from_overrides_in_any_order():
    ap = cli.build_parser()
    for argv in (["predict", "photos", "seed=1", "--checkpoint", "c.pt"], ["predict", "seed=1", "photos", "--checkpoint",
                                                                           "c.pt"]):
        args = ap.parse_args(argv)
        cli._split_positional(ap, args)
        assert (args.folder, args.overrides, args.checkpoint) == ("photos", ["seed=1"], "c.pt")


def test_version(capsys):
    out = _help(["--version"], capsys)
    assert out.strip() == f"ifer {importlib.metadata.version('ifer')}"


def test_help_imports_no_torch():
    """Building the parser and every verb's help, and `python -m ifer.cli --help`, import neither torch nor numpy."""
    script = ("import sys, ifer.cli as c; ap = c.build_parser(); ap.format_help()\n"
              "[p.format_help() for a in ap._actions if hasattr(a, 'choices') and isinstance(a.choices, dict)"
              " for p in a.choices.values()]\n"
              f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    for flag in ("--help", "--version"):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ifer.cli", flag], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        assert not {m for m in imported if m.split(".")[0] in HEAVY}, flag


def test_help_is_fast():
    """Acceptance: `ifer --help` in under a second (median of 3) on an idle 2-core machine."""
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ifer.cli", "--help"], cwd=ROOT, capture_output=True, check=True,
                       timeout=60)
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 1.0, times


def test_weights_paper_lists_every_file_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the paper profile's relative weights/ paths: none exist here
    assert cli.main(["weights", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    assert f"{len(PAPER_KEYS)} weight files, 0 present, {len(PAPER_KEYS)} missing" in out  # one row per config key
    for key in PAPER_KEYS:
        assert any(line.startswith("MISSING") and f" {key} " in line for line in out.splitlines()), key
    for source in ("rosinality/stylegan2-pytorch", "download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                   "HuangYG123/CurricularFace", "torch-fidelity", "OpenAI CLIP ViT-B/16"):
        assert source in out
    assert cli.main(["weights", "--profile", "paper", "--strict"]) == 2


def test_weights_shows_a_present_file_and_checks_hashes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    stylegan = tmp_path / "my_stylegan.pt"
    stylegan.write_bytes(b"a stand-in")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "alexnet-owt-7be5be79.pth").write_bytes(b"not torchvision's AlexNet")
    argv = ["weights", "--profile", "paper", f"asit.stylegan_weights={stylegan}"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("present") and "asit.stylegan_weights" in ln and str(stylegan) in ln for ln in lines)
    assert any(ln.startswith("present") and "asit.lpips_backbone" in ln for ln in lines)

    assert cli.main([*argv, "--check"]) == 0  # informational: a mismatch is reported, not fatal
    out = capsys.readouterr().out
    assert f"no published hash; sha256 {hashlib.sha256(b'a stand-in').hexdigest()}" in out
    assert "MISMATCH" in out and "published 7be5be79" in out
    assert cli.main([*argv, "--check", "--strict"]) == 2


def test_weights_follow_the_config():
    """The same keys fingerprint-inputs tracks (stages._used_weights), plus the FER methods' files."""
    from ifer.core.config import load_config

    rows = {r["key"]: r for r in cli.weight_files(load_config("paper"))}
    assert set(rows) == set(PAPER_KEYS)
    assert rows["eval.id_weights"]["asset"] == "curricularface_ir101"
    assert rows["fer_methods.ke2nt.kwargs.text_encoder_kwargs.weights_path"]["asset"] == "clip_vit_b16"
    assert rows["fer_methods.disentangled.kwargs.pretrained_path"]["asset"] == "torchvision_resnet18_imagenet"
    assert "eval.inception_weights" not in {r["key"] for r in cli.weight_files(
        load_config("paper", overrides=["eval.inversion_metrics=[mse]"]))}
