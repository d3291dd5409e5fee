"""Request validation with OmniRT 0.1.0's rules, order and texts, for the one model we imitate.

A client tested against the stand-in must meet the same 400s it would meet against OmniRT. The one
difference: an inline input (``data:…;base64,``, our extension) is not looked up as a path.
"""

from __future__ import annotations

from collections.abc import Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from opentalking_flashhead.server.inputs import is_inline
from opentalking_flashhead.settings import PRESETS, SERVICE_CONFIG_KEYS

MODEL_ID = "soulx-flashhead-1.3b"
TASK = "audio2video"
REQUIRED_INPUTS = ("image", "audio")
#: The model's config whitelist as OmniRT reports it (``preset`` is taken out before the check).
SUPPORTED_CONFIG = tuple(sorted(SERVICE_CONFIG_KEYS - {"preset"}))
_CHECKED_PATHS = (
    ("repo_path", "repository checkout"),
    ("ckpt_dir", "checkpoint directory"),
    ("wav2vec_dir", "wav2vec directory"),
    ("ascend_env_script", "Ascend environment script"),
    ("python_executable", "Python executable"),
)


def validate(task: str, model: str, inputs: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Every problem with a request, as OmniRT words them; empty when it may run."""
    if model != MODEL_ID:
        nearby = get_close_matches(model, [MODEL_ID], n=3)
        hint = f" Nearby models: {', '.join(nearby)}." if nearby else ""
        return [f"Unknown model {model!r}.{hint}"]
    if task != TASK:
        return [f"Model {MODEL_ID!r} supports tasks [{TASK}], got {task!r}."]
    errors: list[str] = []
    user_config = dict(config)
    preset = user_config.pop("preset", None)
    if preset and preset not in PRESETS:
        errors.append(f"Unknown preset {preset!r}. Available presets: [{', '.join(PRESETS)}]")
    unsupported_inputs = sorted(set(inputs) - set(REQUIRED_INPUTS))
    if unsupported_inputs:
        supported = ", ".join(sorted(REQUIRED_INPUTS))
        errors.append(f"Unsupported inputs for model {MODEL_ID!r}: {unsupported_inputs}. Supported: [{supported}]")
    unsupported_config = sorted(set(user_config) - set(SUPPORTED_CONFIG))
    if unsupported_config:
        errors.append(
            f"Unsupported config keys for model {MODEL_ID!r}: {unsupported_config}. "
            f"Supported: [{', '.join(SUPPORTED_CONFIG)}]"
        )
    for key in REQUIRED_INPUTS:
        if inputs.get(key) in (None, ""):
            errors.append(f"Missing required input {key!r} for model {MODEL_ID!r}.")
    for key in REQUIRED_INPUTS:
        value = inputs.get(key)
        if isinstance(value, str) and value and not is_inline(value) and not Path(value).expanduser().exists():
            errors.append(f"Input {key} does not exist locally: {Path(value).expanduser()}")
    for key, label in _CHECKED_PATHS:
        value = config.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().exists():
            errors.append(f"Configured {label} does not exist locally: {Path(value).expanduser()}")
    return errors
