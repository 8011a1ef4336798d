"""Training infrastructure: deterministic sampling, RNG checkpointing, NaN stop, checkpoint records and refusals,
prev.pt fallback, log rewind on resume, the non-finite-gradient guard and the shared optimizer factory::

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/test_train_infra.py -q
"""
import random

import numpy as np
import pytest
import torch

from ifer.train.checkpoint import (
    NonFiniteLossError,
    check_finite,
    load_training_state,
    rng_state,
    save_training_state,
    set_rng_state,
)
from ifer.train.logging import read_log
from ifer.train.seeding import ResumableSampler, SeededDataset, derive_seed


def test_sampler_resumes_mid_epoch_and_shards_without_overlap():
    s = ResumableSampler(10, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_index=4)
    assert list(s) == full[4:]
    shards = []
    for rank in range(2):
        r = ResumableSampler(10, seed=3, rank=rank, world_size=2)
        r.set_epoch(2)
        shards.append(list(r))
    assert sorted(shards[0] + shards[1]) == sorted(full)
    s.set_epoch(3)
    assert list(s) != full  # a new permutation each epoch


def test_seeded_dataset_is_independent_of_access_order():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(1).item() + random.random() + np.random.rand()

    ds = SeededDataset(Noisy(), seed=1)
    a = [ds[i] for i in range(4)]
    b = [ds[i] for i in reversed(range(4))][::-1]
    assert a == b
    ds.set_epoch(1)
    assert [ds[i] for i in range(4)] != a
    assert derive_seed(1, "x") == derive_seed(1, "x") != derive_seed(2, "x")


def test_rng_state_roundtrip_through_weights_only_checkpoint(tmp_path):
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    path = save_training_state(tmp_path / "last.pt", {"rng": rng_state(), "step": 5})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_training_state(path)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_nan_loss_message_names_step_and_checkpoint(tmp_path):
    kept = tmp_path / "last.pt"
    kept.write_bytes(b"x")
    with pytest.raises(NonFiniteLossError, match=r"step 12.*last.pt is kept"):
        check_finite({"loss": float("nan"), "l2": 0.1}, 12, kept)
    check_finite({"loss": 1.0}, 1, kept)  # finite: no error


# ---------------------------------------------------------------------------------------------- resume (issue 12)
def _fer(run_dir, recipe=None, model=None, **kw):
    from ifer.train.fer import train_fer
    from tests.test_train_fer import RECIPE, _data
    from tests.toy import ToyFER

    torch.manual_seed(0)
    return train_fer(model or ToyFER(), *_data(), recipe or RECIPE, run_dir, seed=3, progress=False, **kw)


def test_checkpoint_records_model_mode_config_hash_and_versions(tmp_path):
    _fer(tmp_path, stop_after_epochs=1)
    rec = load_training_state(tmp_path / "last.pt")["record"]
    assert rec["model"] == "ToyFER" and rec["mode"] == "as_described" and len(rec["config_hash"]) == 64
    assert rec["config"]["train.lr"] == 3e-3 and "train.log_interval" not in rec["config"]  # logging never blocks
    assert {"torch", "timm", "numpy", "python", "ifer"} <= set(rec["versions"])


def test_resume_with_changed_config_or_model_is_refused_naming_the_keys(tmp_path):
    """Issue 12: a changed config was silently overridden by the saved optimizer/scheduler state."""
    from ifer.core.config import Config
    from ifer.train.checkpoint import ResumeMismatchError
    from tests.test_train_fer import RECIPE

    _fer(tmp_path, stop_after_epochs=1)
    changed = Config({**RECIPE, "lr": 1e-2, "clip_grad": 1.0})
    with pytest.raises(ResumeMismatchError, match=r"train\.clip_grad 5\.0 -> 1\.0; train\.lr 0\.003 -> 0\.01\); pass "
                                                  r"--no-resume to start over, or --resume-override") as e:
        _fer(tmp_path, changed)
    assert "\n" not in str(e.value) and "last.pt" in str(e.value)
    with pytest.raises(ResumeMismatchError, match="model 'ToyFER' -> 'OtherNet'"):
        _fer(tmp_path, model_name="OtherNet")
    with pytest.raises(ResumeMismatchError, match="mode 'as_described' -> 'as_released'"):
        _fer(tmp_path, quirks="as_released")
    run = _fer(tmp_path, changed, resume_override=True)  # explicit override: continues from epoch 1
    kinds = [r["kind"] for r in read_log(tmp_path / "log.jsonl")]
    assert run is not None and kinds.count("resume") == 1 and kinds.count("epoch") == 4
    fresh = _fer(tmp_path, changed, resume=False)  # --no-resume: starts over, the old log goes
    assert fresh.history[0]["epoch"] == 0 and "resume" not in [r["kind"] for r in read_log(tmp_path / "log.jsonl")]


def test_truncated_last_falls_back_to_prev_with_a_warning_naming_both(tmp_path, caplog):
    full = _fer(tmp_path / "full")
    _fer(tmp_path / "cut", stop_after_epochs=2)
    last, prev = tmp_path / "cut" / "last.pt", tmp_path / "cut" / "prev.pt"
    assert load_training_state(prev)["epoch"] == 0 and load_training_state(last)["epoch"] == 1
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a truncated copy / half-written file
    with caplog.at_level("WARNING", logger="ifer"):
        resumed = _fer(tmp_path / "cut")
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(last) in m and str(prev) in m for m in warning), warning
    assert read_log(tmp_path / "cut" / "log.jsonl", "resume")[-1]["path"] == str(prev)
    assert resumed.test == full.test and resumed.history == full.history  # one epoch retrained, same result


def test_unreadable_last_without_prev_fails_with_one_line(tmp_path):
    from ifer.core.loading import CheckpointError

    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="last.pt: cannot read training checkpoint.*no previous checkpoint "
                                              "prev.pt to fall back to") as e:
        _fer(tmp_path)
    assert "\n" not in str(e.value)


def test_resume_into_another_architecture_is_a_one_line_checkpoint_error(tmp_path):
    """Issue 12: the resume paths used a raw load_state_dict (a traceback for an incompatible last.pt)."""
    from ifer.core.loading import CheckpointError
    from tests.toy import ToyFER

    _fer(tmp_path, stop_after_epochs=1)
    with pytest.raises(CheckpointError, match=r"last.pt: does not fit ToyFER: shape mismatch at 'body.1.weight'") as e:
        _fer(tmp_path, model=ToyFER(dim=16))
    assert "\n" not in str(e.value)


def test_log_is_rewound_to_the_checkpoint_on_resume(tmp_path):
    """Issue 12: after a resume, log.jsonl held the lost steps twice and the curves doubled back."""
    _fer(tmp_path, stop_after_epochs=1)
    with open(tmp_path / "log.jsonl", "a") as f:  # what a kill after step 9 but before the next save leaves
        f.write('{"kind": "train", "step": 9, "loss": 1.0}\n{"kind": "epoch", "step": 12}\n{"kind": "tr')
    _fer(tmp_path)
    for kind in ("train", "epoch"):
        steps = [r["step"] for r in read_log(tmp_path / "log.jsonl", kind)]
        assert steps == sorted(set(steps)) and len(steps) == (4 if kind == "epoch" else 24 // 5)


# ---------------------------------------------------------------------------------------------- numerics (issue 12)
def _nan_grads(model, calls):
    """Make ``head.weight``'s gradient NaN on the backward passes numbered in ``calls`` (the loss stays finite)."""
    seen = {"n": 0}

    def hook(g):
        seen["n"] += 1
        return g * float("nan") if seen["n"] in calls else g

    model.head.weight.register_hook(hook)


def test_nonfinite_gradients_from_a_finite_loss_are_skipped_and_counted(tmp_path):
    """Issue 12: non-finite gradients from a finite loss (bf16 without a scaler) reached optimizer.step."""
    from tests.toy import ToyFER

    model = ToyFER()
    _nan_grads(model, {2, 3})
    run = _fer(tmp_path, model=model)
    rows = read_log(tmp_path / "log.jsonl", "train")
    assert rows[0]["skipped_steps"] == 2 and rows[-1]["skipped_steps"] == 2
    assert all(torch.isfinite(v).all() for v in model.state_dict().values()) and run.test["accuracy"] > 0.5


def test_consecutive_nonfinite_gradients_stop_naming_step_and_parameter(tmp_path):
    from ifer.core.config import Config
    from ifer.train.checkpoint import NonFiniteGradientError
    from tests.test_train_fer import RECIPE
    from tests.toy import ToyFER

    model = ToyFER()
    _nan_grads(model, set(range(8, 100)))  # epoch 0 (6 steps) is fine, then every gradient is NaN
    with pytest.raises(NonFiniteGradientError, match=r"for 3 consecutive steps up to step 9 \(first offending "
                                                     r"parameter 'head.weight'\).*last.pt is kept"):
        _fer(tmp_path, Config({**RECIPE, "max_nonfinite_steps": 3}), model=model)
    assert load_training_state(tmp_path / "last.pt")["epoch"] == 0


def test_nan_loss_stop_is_unchanged_by_the_gradient_guard():
    # the loss check runs before backward: a NaN loss stops at once (the guard's skip is for finite losses only)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        check_finite({"loss": float("inf")}, 3, None)


def test_fp16_steps_go_through_a_grad_scaler_that_skips_overflow():
    from ifer.train.optim import GuardedStep

    lin = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    guard = GuardedStep(opt, lin.named_parameters(), fp16=True)
    assert guard.scaler.is_enabled()
    before = lin.weight.detach().clone()
    guard.backward(lin(torch.ones(1, 2)).sum() * float("inf"))
    # an overflow is the scaler's business: the step is skipped but it is not a non-finite step
    assert not guard.step(0) and guard.overflow_skips == 1 and guard.skipped == guard.consecutive == 0
    assert torch.equal(lin.weight, before)
    assert guard.scaler.get_scale() < 65536.0  # the scaler backed off
    opt.zero_grad()
    guard.backward(lin(torch.ones(1, 2)).sum())
    assert guard.step(1) and not torch.equal(lin.weight, before) and guard.consecutive == 0
    assert not GuardedStep(opt, lin.named_parameters(), fp16=False).scaler.is_enabled()


def test_fp16_scaler_search_never_stops_a_run_but_a_collapsed_scale_does():
    """A GradScaler starting at 2**16 on a gradient that overflows fp16 halves its scale for many steps: those
    skips (more than max_nonfinite_steps in a row) must not stop the run; a gradient that stays non-finite
    however small the scale is a non-finite step, and max_nonfinite_steps of those stop it."""
    from ifer.train.optim import MIN_SCALE, GuardedStep, NonFiniteGradientError

    lin = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    guard = GuardedStep(opt, lin.named_parameters(), fp16=True, max_nonfinite_steps=3)
    for step in range(16):  # 2**16 -> 1.0: sixteen overflow skips, far more than 3
        opt.zero_grad()
        guard.backward(lin(torch.ones(1, 2)).sum() * float("inf"))
        assert not guard.step(step)
    assert guard.overflow_skips == 16 and guard.skipped == 0 and guard.scaler.get_scale() == MIN_SCALE
    with pytest.raises(NonFiniteGradientError, match="3 consecutive steps"):
        for step in range(16, 20):
            opt.zero_grad()
            guard.backward(lin(torch.ones(1, 2)).sum() * float("inf"))
            guard.step(step)
    assert guard.skipped == 3
    state = guard.state_dict()
    again = GuardedStep(opt, lin.named_parameters(), fp16=True)
    again.load_state_dict(state)
    assert again.overflow_skips == 16 and again.skipped == 3
    del state["overflow_skips"]  # a last.pt written before overflows were counted apart still loads
    again.load_state_dict(state)
    assert again.overflow_skips == 0


def test_one_build_optimizer_for_both_trainers():
    import ifer.train.asit
    import ifer.train.fer
    from ifer.train.optim import build_optimizer

    assert ifer.train.asit.build_optimizer is ifer.train.fer.build_optimizer is build_optimizer
    opt = build_optimizer(torch.nn.Linear(4, 2), "adamw", 1e-3, weight_decay=0.05)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.05]  # no decay on the bias (timm)
    ranger = build_optimizer(torch.nn.Linear(4, 2).parameters(), "ranger", 1e-3)
    assert ranger.defaults["betas"] == (0.95, 0.999) and ranger.defaults["eps"] == 1e-5
    with pytest.raises(ValueError, match="unknown optimizer 'bogus'"):
        build_optimizer(torch.nn.Linear(4, 2), "bogus", 1e-3)
