"""One real MLServer per session (a few seconds to start); each test uses its own model names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.mlserver import MLServer, running_mlserver, train_models


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(double, triple): joblib models predicting 2x and 3x."""
    return train_models(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory: pytest.TempPathFactory,
             trained: tuple[Path, Path]) -> Iterator[MLServer]:
    with running_mlserver(tmp_path_factory.mktemp("mlserver")) as server:
        yield server
