"""User-fixable errors reach the shell as one line naming what is missing (exit 2), not a traceback::

    .venv/bin/python -m pytest tests/test_cli_errors.py -q
"""
import pytest

from ifer.cli import main


def test_missing_weights_is_one_line(tmp_path, capsys):
    rc = main(["train-asit", "--profile", "paper", f"paths.runs={tmp_path}/runs", f"paths.results={tmp_path}/res"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith("ifer train-asit: error: MissingWeightsError:") and "stylegan2_ffhq_256_rosinality" in err


def test_missing_dataset_is_one_line(tmp_path, capsys):
    rc = main(["train-fer", "--profile", "paper", f"paths.datasets={tmp_path}/none", f"paths.runs={tmp_path}/runs"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("ifer train-fer: error: DatasetNotFoundError: [rafdb] dataset root not found")


def test_unknown_config_key_is_one_line(capsys):
    assert main(["config", "--profile", "tiny", "asit.no_such_key=1"]) == 2
    assert "ConfigError" in capsys.readouterr().err


def test_traceback_on_request(monkeypatch, tmp_path):
    monkeypatch.setenv("IFER_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError):
        main(["train-asit", "--profile", "paper", f"paths.runs={tmp_path}/runs"])


def test_weights_with_the_wrong_hash_are_a_one_line_user_error(tmp_path):
    """A random file named like torchvision's AlexNet fails its published sha256 prefix with an error the CLI
    prints as one line (it used to be a bare ValueError, i.e. a traceback)."""
    from ifer.cli import _user_errors
    from ifer.core.weights import WeightsHashError, resolve_weights

    bad = tmp_path / "alexnet-owt-7be5be79.pth"
    bad.write_bytes(b"not the published file")
    with pytest.raises(WeightsHashError, match="alexnet-owt-7be5be79.pth: sha256 .* does not match .*7be5be79"):
        resolve_weights("torchvision_alexnet", bad)
    assert issubclass(WeightsHashError, _user_errors())
