"""Settings: precedence, defaults and the errors a misconfiguration gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from opentalking_flashhead.errors import ConfigError
from opentalking_flashhead.settings import SERVICE_CONFIG_KEYS, Settings


def load(env: dict[str, str] | None = None, **overrides: object) -> Settings:
    return Settings.load(overrides=overrides, environ=env or {})


def test_defaults() -> None:
    s = load()
    assert s.base_url == "http://127.0.0.1:8766"
    assert s.model == "soulx-flashhead-1.3b"
    assert s.async_jobs is True
    assert s.chunk_samples == 17920
    assert s.shared_remote_dir == str(s.shared_local_dir)


def test_override_beats_environment_beats_host_args() -> None:
    env = {"OPENTALKING_FLASHHEAD_BASE_URL": "http://env:1", "OPENTALKING_FLASHHEAD_CHUNK_SAMPLES": "16000"}
    s = Settings.load("http://host:2", "m", {"chunk_samples": 8000}, {"base_url": "http://kw:3/"}, env)
    assert s.base_url == "http://kw:3"
    assert s.chunk_samples == 16000
    assert Settings.load(None, None, {"chunk_samples": 8000}, {}, {}).chunk_samples == 8000


def test_ws_url_is_used_only_when_it_is_http() -> None:
    assert Settings.load("ws://x:8765/realtime", environ={}).base_url == "http://127.0.0.1:8766"
    assert Settings.load("http://gpu:8766", environ={}).base_url == "http://gpu:8766"


def test_without_a_ws_url_argument_its_variable_is_read() -> None:
    """The availability check and doctor get no ws_url from the host; they must find the same service."""
    env = {"OPENTALKING_FLASHHEAD_WS_URL": "http://gpu:8766"}
    assert Settings.load(environ=env).base_url == "http://gpu:8766"
    assert Settings.load("http://other:1", environ=env).base_url == "http://other:1"


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("BASE_URL", "gpu-box:8766", "http(s) URL"),
        ("SHARED_LOCAL_DIR", "relative/dir", "absolute"),
        ("SHARED_REMOTE_DIR", "relative", "absolute"),
        ("OUTPUT_LOCAL_DIR", "out", "absolute"),
        ("TIMEOUT_SEC", "soon", "greater than 0"),
        ("TIMEOUT_SEC", "-1", "greater than 0"),
        ("CHUNK_SAMPLES", "0", "whole number"),
        ("CHUNK_SAMPLES", "1.5", "whole number"),
        ("ASYNC", "maybe", "true/false"),
        ("CONFIG_JSON", "{not json", "not valid JSON"),
        ("CONFIG_JSON", "[1, 2]", "JSON object"),
        ("CONFIG_JSON", '{"fps": 25}', "rejects"),
        ("CONFIG_JSON", '{"model_type": "huge"}', "not one of"),
        ("CONFIG_JSON", '{"output_dir": "out"}', "absolute"),
        ("PRESET", "turbo", "must be one of"),
        ("ON_ERROR", "ignore", "must be one of"),
        ("MAX_STILL_CHUNKS", "-1", "0 or more"),
        ("CHUNK_DEADLINE_SEC", "0", "greater than 0"),
        ("MAX_CLIP_MB", "lots", "greater than 0"),
        ("STALL_SEC", "0", "greater than 0"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load({f"OPENTALKING_FLASHHEAD_{variable}": value})
    assert f"OPENTALKING_FLASHHEAD_{variable}" in str(err.value)
    assert words in str(err.value)


@pytest.mark.parametrize("name", ["timeout_sec", "chunk_samples", "max_clip_mb", "chunk_deadline_sec"])
def test_a_zero_override_is_refused_not_replaced_by_the_default(name: str) -> None:
    with pytest.raises(ConfigError, match=f"OPENTALKING_FLASHHEAD_{name.upper()}=0 must be"):
        load(**{name: 0})


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown FlashHead setting"):
        load(fps=25)


@pytest.mark.parametrize("key", ["fps", "frame_num", "width", "height", "steps"])
def test_fixed_geometry_is_never_whitelisted(key: str) -> None:
    assert key not in SERVICE_CONFIG_KEYS


def test_service_config_sends_output_dir_and_whitelisted_keys_only() -> None:
    s = load({"OPENTALKING_FLASHHEAD_CONFIG_JSON": '{"seed": 7}', "OPENTALKING_FLASHHEAD_PRESET": "fast"})
    assert s.service_config("/srv/out") == {"preset": "fast", "seed": 7, "output_dir": "/srv/out"}
    pinned = load(config_json={"output_dir": "/mine"})
    assert pinned.output_root == "/mine"  # the client makes each chunk's own dir under it
    assert pinned.service_config("/mine/session-1/000001")["output_dir"] == "/mine/session-1/000001"


def test_api_key_is_not_in_repr() -> None:
    assert "sekrit" not in repr(load(api_key="sekrit"))


def test_paths_are_paths() -> None:
    s = load(shared_local_dir="/data/io", save_dir="/data/clips")
    assert s.shared_local_dir == Path("/data/io") and s.save_dir == Path("/data/clips")


def test_older_parameters_json_name_still_works() -> None:
    assert load({"OPENTALKING_FLASHHEAD_PARAMETERS_JSON": '{"seed": 3}'}).config_json == {"seed": 3}
    both = {"OPENTALKING_FLASHHEAD_PARAMETERS_JSON": '{"seed": 3}', "OPENTALKING_FLASHHEAD_CONFIG_JSON": '{"seed": 4}'}
    assert load(both).config_json == {"seed": 4}


@pytest.mark.parametrize(("given", "expected_key"), [({"api_key": "k1"}, "k1"), ({}, "p@ss word")])
def test_credentials_are_taken_off_the_base_url(given: dict[str, object], expected_key: str) -> None:
    """The service takes a bearer key: API_KEY wins, else the URL's password becomes the key."""
    s = load(base_url="https://user:p%40ss%20word@gpu:8766/", **given)
    assert s.base_url == "https://gpu:8766" and s.api_key == expected_key
    assert "p@ss" not in repr(s) and "p%40ss" not in repr(s)


def test_a_malformed_base_url_is_reported_without_its_password() -> None:
    with pytest.raises(ConfigError, match="OPENTALKING_FLASHHEAD_BASE_URL") as err:
        load(base_url="ftp://user:hunter2@gpu")
    assert "hunter2" not in str(err.value)


def test_stall_sec_defaults_to_two_seconds() -> None:
    assert load().stall_sec == 2.0
    assert load({"OPENTALKING_FLASHHEAD_STALL_SEC": "0.5"}).stall_sec == 0.5
