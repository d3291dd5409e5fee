"""OpenTalking's configuration of FlashHead, as the mapping the contract hands the provider.

OpenTalking reads ``OPENTALKING_FLASHHEAD_*`` from the environment, its ``.env`` and the
``flashhead:`` section of its YAML into its settings object, and drops the names it has no field
for (API key, preset, config JSON, ...). The provider gets both as one mapping keyed by setting
name; nothing is written to ``os.environ``, so the host's children never see the API key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from opentalking_flashhead.settings import Settings, env_name

#: The model whose settings OpenTalking keeps as ``flashhead_<name>``.
FLASHHEAD = "flashhead"
#: OpenTalking's ``flashhead_*`` settings that mean the same to our client. fps, sample rate, size
#: and frame count are left out: the model fixes them, and the service rejects other values.
HOST_FIELDS = (
    "ws_url",
    "base_url",
    "model",
    "shared_local_dir",
    "shared_remote_dir",
    "output_local_dir",
    "output_remote_dir",
    "output_base_url",
    "timeout_sec",
    "chunk_samples",
)


def host_config(host: Any, dotenv: Mapping[str, str | None]) -> dict[str, str]:
    """The FlashHead settings OpenTalking's configuration gives, keyed by our setting names.

    ``host`` is OpenTalking's settings object; a field counts only when one of its sources
    (environment, ``.env``, legacy names, YAML) set it (``model_fields_set``), never as a default.
    ``dotenv`` is the host's ``.env``, for our names the host has no field for.
    """
    names = {env_name(f.name): f.name for f in dataclasses.fields(Settings)} | {env_name(n): n for n in HOST_FIELDS}
    found = {names[key]: str(value).strip() for key, value in dotenv.items() if key in names and value}
    for name in HOST_FIELDS:
        if f"{FLASHHEAD}_{name}" in host.model_fields_set:
            found[name] = str(getattr(host, f"{FLASHHEAD}_{name}")).strip()
    return {name: value for name, value in found.items() if value}


def read_host_config(host: Any) -> dict[str, str]:
    """:func:`host_config` of ``host`` with the ``.env`` file its settings were read from."""
    from dotenv import dotenv_values

    return host_config(host, dotenv_values(host.model_config["env_file"]))


def current_host_config() -> dict[str, str]:
    """The configuration of the running host; only called once the host has built its settings."""
    from opentalking.core.config import get_settings

    return read_host_config(get_settings())
