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
