import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir() -> pathlib.Path:
    d = pathlib.Path(os.environ.get("MEGATRON_BUILD_DIR", REPO / "build"))
    if not (d / "megatron").exists():
        pytest.fail(f"{d}/megatron not found: build first (scripts/build.sh) or set MEGATRON_BUILD_DIR")
    return d
