"""`max_api_versions`: the broker option that caps the client-protocol versions it serves,
read from TOML and checked against the versions this code speaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import BrokerConfig, ConfigError
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey


def load(tmp_path: Path, toml: str) -> BrokerConfig:
    path = tmp_path / "broker.toml"
    path.write_text(toml)
    return BrokerConfig.load(path)


def test_the_default_serves_every_supported_version() -> None:
    assert BrokerConfig().api_versions == dict(SUPPORTED_VERSIONS)


def test_a_toml_table_caps_the_named_apis(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[max_api_versions]\nfetch = 0\nPRODUCE = 0\n")
    assert cfg.max_api_versions == {ApiKey.FETCH: 0, ApiKey.PRODUCE: 0}
    assert cfg.api_versions == {
        **SUPPORTED_VERSIONS,
        ApiKey.FETCH: (0, 0),
        ApiKey.PRODUCE: (0, 0),
    }  # only the named APIs are capped
    assert load(tmp_path, "[max_api_versions]\nfetch = 1\n").api_versions[ApiKey.FETCH] == (0, 1)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[max_api_versions]\nfetch = 3\n", r"FETCH: version cap 3 is outside \[0, 2\]"),
        ("[max_api_versions]\nfetch = -1\n", r"FETCH: version cap -1 is outside"),
        ("[max_api_versions]\nfetches = 0\n", "unknown API 'fetches'"),
        ("[max_api_versions]\nfetch = true\n", "max_api_versions.fetch: expected a version"),
        ("max_api_versions = 0\n", "expected a table of API names"),
    ],
)
def test_bad_caps_are_configuration_errors(tmp_path: Path, toml: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(tmp_path, toml)
