"""Shared pytest fixtures: every test runs with its artefacts in a temp MINIVID_HOME."""
import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    # Checkpoints and dataset caches written by tests go to a temp dir, never the repo.
    if "MINIVID_HOME" not in os.environ:
        os.environ["MINIVID_HOME"] = str(tmp_path_factory.mktemp("minivid_home"))
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models: one thread is fastest, and immune to oversubscription on a shared CPU.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
