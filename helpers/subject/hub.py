"""Small files from the Hugging Face hub (a model's ``config.json``), cache first.

Kept apart from model loading so that validating an experiment never loads weights.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import HubUnavailableError
from .corpus import hub_offline


def hub_config(repo_id: str) -> dict[str, Any]:
    """The ``config.json`` of hub model ``repo_id``: from the local cache, else downloaded."""
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(open(hf_hub_download(repo_id, "config.json", local_files_only=True)).read())
    except Exception:  # noqa: BLE001 - not cached (the hub library raises several kinds)
        pass
    if hub_offline():
        raise HubUnavailableError(
            f"the config of model {repo_id!r} is not in the local cache and HF_HUB_OFFLINE is set: "
            "go online once, give a local model folder, or use the offline preset (--experiment offline)"
        )
    try:  # pragma: no cover - needs the network
        return json.loads(open(hf_hub_download(repo_id, "config.json")).read())
    except Exception as exc:  # pragma: no cover - needs the network
        raise HubUnavailableError(
            f"cannot read the config of model {repo_id!r} from the Hugging Face hub "
            f"({exc.__class__.__name__}): check the name, log in for gated models, or go online"
        ) from None
