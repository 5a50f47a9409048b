"""How the worker decides to connect to Temporal, and what a credential rotation needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from steadfast_contract.config import ConfigError, TemporalConfig, parse_config
from steadfast_worker import rotation
from steadfast_worker.connection import ConnectOptions, connect_options

pytestmark = pytest.mark.unit


def temporal(tls: dict[str, str], api_key_env: str = "") -> TemporalConfig:
    doc = {"agent": "a", "temporal": {"tls": tls, "apiKeyEnv": api_key_env}}
    return parse_config(doc).temporal


def mounted_secret(d: Path, *keys: str) -> Path:
    """What kubelet writes for a Secret volume: one file per key, named after it."""
    d.mkdir()
    for key in keys:
        (d / key).write_text(f"PEM of {key}")
    return d


def test_a_mounted_secret_with_a_ca_uses_all_three(tmp_path: Path) -> None:
    d = mounted_secret(tmp_path / "tls", "tls.crt", "tls.key", "ca.crt")
    opts = connect_options(temporal({"secretDir": str(d)}), {})
    assert isinstance(opts.tls, TLSConfig)
    assert opts.tls.client_cert == b"PEM of tls.crt"
    assert opts.tls.client_private_key == b"PEM of tls.key"
    assert opts.tls.server_root_ca_cert == b"PEM of ca.crt"


def test_a_mounted_secret_without_a_ca_trusts_the_system_roots(tmp_path: Path) -> None:
    # `kubectl create secret tls` makes no ca.crt; a publicly trusted server needs none.
    d = mounted_secret(tmp_path / "tls", "tls.crt", "tls.key")
    opts = connect_options(temporal({"secretDir": str(d)}), {})
    assert isinstance(opts.tls, TLSConfig)
    assert opts.tls.client_cert == b"PEM of tls.crt"
    assert opts.tls.server_root_ca_cert is None


def test_a_mounted_secret_without_a_key_names_the_field(tmp_path: Path) -> None:
    d = mounted_secret(tmp_path / "tls", "tls.crt")
    with pytest.raises(ConfigError, match=r"temporal\.tls\.secretDir: cannot read .*tls\.key"):
        connect_options(temporal({"secretDir": str(d)}), {})


def test_an_explicit_ca_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"temporal\.tls\.caFile: cannot read"):
        connect_options(temporal({"caFile": str(tmp_path / "missing.pem")}), {})


def test_secret_dir_and_files_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="secretDir excludes"):
        temporal({"secretDir": "/etc/tls", "caFile": "/etc/ca.pem"})


def test_an_api_key_alone_means_tls_with_the_system_roots() -> None:
    opts = connect_options(temporal({}, api_key_env="KEY"), {"KEY": "tk-1"})
    assert opts.tls is True
    assert opts.api_key == "tk-1"
    assert connect_options(temporal({}), {}).tls is False


def test_an_api_key_file_wins_over_the_environment(tmp_path: Path) -> None:
    key = tmp_path / "api-key"
    key.write_text("tk-from-file\n")
    cfg = parse_config(
        {"agent": "a", "temporal": {"apiKeyEnv": "KEY", "apiKeyFile": str(key)}}
    ).temporal
    opts = connect_options(cfg, {"KEY": "tk-from-env"})
    assert opts.api_key == "tk-from-file"
    assert opts.tls is True


def test_a_missing_api_key_file_names_the_field(tmp_path: Path) -> None:
    cfg = parse_config({"agent": "a", "temporal": {"apiKeyFile": str(tmp_path / "no")}}).temporal
    with pytest.raises(ConfigError, match=r"temporal\.apiKeyFile: cannot read"):
        connect_options(cfg, {})


@pytest.mark.parametrize(
    ("before", "after", "change"),
    [
        (("k1", b"cert"), ("k1", b"cert"), rotation.Change.NONE),
        (("k1", b"cert"), ("k2", b"cert"), rotation.Change.API_KEY),
        (("k1", b"cert"), ("k1", b"renewed"), rotation.Change.RECONNECT),
        (("k1", b"cert"), ("k2", b"renewed"), rotation.Change.RECONNECT),
    ],
)
def test_what_a_rotation_needs(
    before: tuple[str, bytes], after: tuple[str, bytes], change: rotation.Change
) -> None:
    def opts(key: str, cert: bytes) -> ConnectOptions:
        tls = TLSConfig(client_cert=cert, client_private_key=b"k")
        return ConnectOptions("127.0.0.1:7233", "default", tls, key)

    assert rotation.plan(opts(*before), opts(*after)) is change


def test_only_file_credentials_are_followed(tmp_path: Path) -> None:
    assert not rotation.follows_files(temporal({}, api_key_env="KEY"))
    assert rotation.follows_files(temporal({"secretDir": str(tmp_path)}))
    cfg = parse_config({"agent": "a", "temporal": {"apiKeyFile": "/k"}}).temporal
    assert rotation.follows_files(cfg)
