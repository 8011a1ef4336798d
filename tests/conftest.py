"""Shared fixtures. ``one_thread``: opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
import pytest
import torch


@pytest.fixture
def one_thread():
    # Tiny models: on a shared 2-core box, 2 intra-op threads run ~15x slower than 1 under load.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    # The paper rehearsal (~12 min) goes first: under `pytest -n 2` (nox -s tests) it then runs on one worker
    # beside the rest of the suite on the other, instead of starting last and running alone.
    items.sort(key=lambda item: item.get_closest_marker("rehearsal") is None)
