"""Checkpoint names -> local directories: a directory as it is, or a Hub id (`org/name[@revision]`)
through huggingface_hub's cache ($HF_HUB_CACHE, else $HF_HOME/hub); with `HF_HUB_OFFLINE=1` only the
cache is read."""

from __future__ import annotations

import os
import pathlib
import re

from sallm_jax.runtime.user_errors import UserError

# org/name as the Hub spells repository ids, then an optional @revision (branch, tag or commit).
_HUB_ID = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
_TRUE = {"1", "on", "yes", "true"}


class CheckpointNotFound(UserError, FileNotFoundError):
    """A name that is neither a directory nor a Hub id the cache or the Hub has (a `UserError`: the
    commands print its one line and exit with status 2)."""


def offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, when first imported)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE")
    return flag.lower() in _TRUE if flag is not None else constants.HF_HUB_OFFLINE


def hub_cache() -> pathlib.Path:
    """The cache huggingface_hub reads: $HF_HUB_CACHE, else $HF_HOME/hub, as set now."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return pathlib.Path(cache).expanduser()
    if home := os.environ.get("HF_HOME"):
        return pathlib.Path(home).expanduser() / "hub"
    from huggingface_hub import constants

    return pathlib.Path(constants.HF_HUB_CACHE)


def resolve_checkpoint(name: str, key: str) -> pathlib.Path:
    """The local directory `name` names: itself when it exists, else the snapshot of a Hub id such
    as "ibm-granite/granite-speech-3.3-2b" or "Qwen/Qwen2-Audio-7B-Instruct@main"; otherwise
    CheckpointNotFound, one line naming the config `key` and what was looked for."""
    local = pathlib.Path(name).expanduser()
    if local.is_dir():
        return local
    match = _HUB_ID.match(name)
    if local.exists() or match is None:
        what = "is not a directory" if local.exists() else "no such directory"
        raise CheckpointNotFound(f"{key}={name!r}: {what}, and not a Hub id (org/name[@revision])")
    import huggingface_hub
    from huggingface_hub import errors

    repo, revision = match["repo"], match["revision"]
    cache, is_offline = hub_cache(), offline()
    try:
        return pathlib.Path(huggingface_hub.snapshot_download(
            repo, revision=revision, cache_dir=cache, local_files_only=is_offline))
    except errors.LocalEntryNotFoundError:
        reason = ("HF_HUB_OFFLINE is set" if is_offline else "the Hub could not be reached")
        raise CheckpointNotFound(
            f"{key}={name!r}: no such directory, and the Hub id is not in the cache {cache} "
            f"({reason}); fetch it where the Hub is reachable (`hf download {repo}`) and copy "
            "the cache, or name a local directory") from None
    except errors.RevisionNotFoundError:
        raise CheckpointNotFound(f"{key}={name!r}: the Hub has no revision {revision!r} of "
                                 f"{repo}") from None
    except errors.RepositoryNotFoundError:
        raise CheckpointNotFound(f"{key}={name!r}: no such directory, and the Hub has no "
                                 f"repository {repo!r} (or it is private)") from None
