from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "deploy" / "examples"


@pytest.fixture
def two_pool_example() -> dict:
    return yaml.safe_load((EXAMPLES / "deepseek-r1-h200-gb300.yaml").read_text())
