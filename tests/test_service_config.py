"""Service configuration and token tables: what is accepted, and refusals that say what to fix."""

from __future__ import annotations

import hashlib

import pytest
import yaml

from activelabel.service import (
    AuthConfigError,
    ServiceConfigError,
    load_service_config,
    load_token_table,
    parse_token_table,
)


def test_config_file_overrides_defaults(tmp_path):
    """A --config file sets nested fields and keeps the defaults of the rest."""
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump({"port": 9000, "otlp": {"forward_endpoint": "http://127.0.0.1:4319"}}))
    config = load_service_config(path)
    assert config.port == 9000
    assert config.otlp.forward_endpoint == "http://127.0.0.1:4319"
    assert config.otlp.attribute_prefix == "label."


def test_config_errors_name_every_bad_field(tmp_path):
    """Unknown and invalid fields are refused together, each named by its path."""
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump({"prot": 1, "max_body_bytes": -5, "ext_authz": {"colour": "red"}}))
    with pytest.raises(ServiceConfigError) as info:
        load_service_config(path)
    message = str(info.value)
    assert "prot" in message and "max_body_bytes" in message and "ext_authz.colour" in message


def test_missing_config_file_is_a_clear_error(tmp_path):
    """A --config path that does not exist is refused naming the path."""
    with pytest.raises(ServiceConfigError, match="cannot read service config"):
        load_service_config(tmp_path / "nope.yaml")


def test_tokens_may_be_stored_as_sha256_digests():
    """A table keyed by sha256:<digest> authenticates the token whose digest it is."""
    digest = hashlib.sha256(b"s3cret").hexdigest()
    table = parse_token_table({"tokens": {f"sha256:{digest}": {"scopes": ["admin"], "name": "ops"}}}, origin="t")
    caller = table.caller_for("s3cret")
    assert caller is not None and caller.name == "ops" and caller.may("admin")
    assert table.caller_for("other") is None


def test_token_table_errors_never_echo_the_token():
    """Unknown scopes and clearances are refused by token position, without printing the token."""
    with pytest.raises(AuthConfigError) as info:
        parse_token_table({"live-token-123": {"scopes": ["lable"], "clearances": ["top"]}}, origin="tokens.yaml")
    message = str(info.value)
    assert "token #1" in message and "lable" in message and "top" in message
    assert "live-token-123" not in message


def test_tokens_come_from_the_environment(monkeypatch):
    """Without a token file the table is read from the configured environment variable, else there is none."""
    monkeypatch.setenv("MY_TOKENS", '{"abc": {"scopes": ["label"]}}')
    table = load_token_table(None, env_var="MY_TOKENS")
    assert table is not None and table.caller_for("abc").may("label")
    monkeypatch.delenv("MY_TOKENS")
    assert load_token_table(None, env_var="MY_TOKENS") is None


def test_unparsable_token_file_names_the_line_not_the_content(tmp_path):
    """A token file that is not YAML is refused with its line number, never its content."""
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  live-token-xyz: [unclosed\n")
    with pytest.raises(AuthConfigError) as info:
        load_token_table(path)
    assert "line" in str(info.value) and "live-token-xyz" not in str(info.value)
