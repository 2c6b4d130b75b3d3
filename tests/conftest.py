"""Fixtures. Helpers that tests import live in helpers.py (and test audio in synth.py)."""
import os

import pytest
from typer.testing import CliRunner

TEST_ENVIRONMENT = ("ACR_HOME", "HF_HUB_OFFLINE", "HF_HOME")


@pytest.fixture(scope="session", autouse=True)
def acr_home(tmp_path_factory):
    """Every test (and subprocess) builds tiny models into one temporary ACR_HOME, offline; the
    environment is restored when the session ends."""
    saved = {name: os.environ.get(name) for name in TEST_ENVIRONMENT}
    home = tmp_path_factory.mktemp("acr_home")
    os.environ["ACR_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))
    yield home
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, so default run folders (experiments/...) land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def acr():
    """Invoke the real CLI in-process: acr(*args) -> result with exit_code, stdout, stderr."""
    from acr.cli import app

    def invoke(*args):
        return CliRunner().invoke(app, [str(a) for a in args])

    return invoke
