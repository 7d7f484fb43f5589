"""pydantic's errors stop at the config boundary: service and stream settings are refused with our ConfigError."""

from __future__ import annotations

import pydantic
import pytest
import yaml
from typer.testing import CliRunner

from activelabel.cli.main import _register, app
from activelabel.errors import ActiveLabelError, ConfigError, ServiceConfigError, StreamConfigError
from activelabel.service import load_service_config
from activelabel.stream import StreamConfig

_register()
runner = CliRunner()


def test_a_bad_service_config_names_each_field_its_problem_and_what_to_do(tmp_path):
    """A typo and an out-of-range value in `serve --config` give one ServiceConfigError that says how to fix each."""
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump({"max_bodybytes": 10, "port": 70000}))
    with pytest.raises(ServiceConfigError) as info:
        load_service_config(path)
    exc = info.value
    assert isinstance(exc, ConfigError) and isinstance(exc, ActiveLabelError)
    assert isinstance(exc.__cause__, pydantic.ValidationError)  # translated, with the original kept as the cause
    assert {p.field for p in exc.problems} == {"max_bodybytes", "port"}
    message = str(exc)
    assert message.startswith(f"invalid service config {path}: ")
    assert "max_bodybytes: Extra inputs are not permitted (remove it, or check its spelling" in message
    assert "port: Input should be less than or equal to 65535 (give a value of the documented type and range)" in message


def test_bad_stream_settings_raise_stream_config_error_not_pydantic(tmp_path):
    """Building a StreamConfig with a missing topic and a bad address raises StreamConfigError naming both."""
    with pytest.raises(StreamConfigError) as info:
        StreamConfig(bootstrap_servers="localhost", input_topic="a")  # type: ignore[call-arg]
    exc = info.value
    assert not isinstance(exc, pydantic.ValidationError)
    assert [(p.field, p.fix) for p in exc.problems] == [("bootstrap_servers", ""), ("output_topic", "set it")]
    assert str(exc) == ("invalid stream settings: bootstrap_servers: expected a comma-separated host:port list, "
                        "got 'localhost'; output_topic: Field required (set it)")


def test_stream_command_reports_bad_settings_and_exits_2(tmp_path):
    """`activelabel stream` with a topic that loops back into its input exits 2 with the readable reason."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: activelabel/v1\nkind: Policy\nlabels:\n  x: {type: bool}\n")
    res = runner.invoke(app, ["stream", "--input-topic", "a", "--output-topic", "a", "--policy", str(policy)])
    assert res.exit_code == 2
    said = " ".join(res.stderr.split())  # the CLI's console wraps long lines at its width
    assert "invalid stream settings: the input topic 'a' must differ from the output and dead-letter topics" in said
    assert "Traceback" not in res.output
