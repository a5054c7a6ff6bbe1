"""Secure by default: the app binds to 127.0.0.1 unless told otherwise, and says so loudly when it is
told to listen on a network address without sign-in."""
from __future__ import annotations

import tomllib

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from .conftest import REPO, save_random_tiny


def test_the_shipped_config_binds_to_loopback_and_secrets_are_not_committed():
    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert ".streamlit/secrets.toml" in (REPO / ".gitignore").read_text().split()
    example = tomllib.loads((REPO / ".streamlit" / "secrets.example.toml").read_text())
    assert {"redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url"} <= set(example["auth"])


@pytest.mark.parametrize("address, banner", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_a_network_address_without_sign_in_shows_a_warning_banner(tmp_path, monkeypatch, address, banner):
    monkeypatch.setenv("LADEDA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LADEDA_MODEL", str(save_random_tiny(tmp_path / "tiny.pt")))
    before = st_config.get_option("server.address")
    st_config.set_option("server.address", address)
    try:
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120).run()
    finally:
        st_config.set_option("server.address", before)
    assert not at.exception
    texts = [w.value for w in at.warning]
    assert any("no sign-in is configured" in t for t in texts) is banner
