"""Parameters on disk (Orbax): a finished stage's, the best on validation, the base model's."""

from __future__ import annotations

import logging
import pathlib

import jax
import orbax.checkpoint as ocp
from flax import nnx

from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.train.damaged import is_damage, reason, set_aside
from sallm_jax.train.disk_errors import naming_the_disk, tree_bytes


def save_params(directory: pathlib.Path, params: nnx.State, *, overwrite: bool = False) -> None:
    """Write `params` to `directory` (`overwrite` replaces it); DiskWriteError if disk refuses."""
    with (naming_the_disk("parameters", directory.absolute(), tree_bytes(params)),
          ocp.StandardCheckpointer() as ckptr):
        ckptr.save(directory.absolute(), params, force=overwrite)


def restore_params(directory: pathlib.Path, like: nnx.State,
                   partitioner: Partitioner) -> nnx.State:
    """Parameters saved by `save_params`, restored straight into the mesh layout of `like`."""
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          like, partitioner.param_shardings(like))
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(directory.absolute(), target)


def restore_or_set_aside(directory: pathlib.Path, like: nnx.State, partitioner: Partitioner,
                         what: str) -> nnx.State | None:
    """`restore_params`, or None when `directory` is damaged (`damaged.is_damage`): it is then moved
    to `<directory>.unreadable/` with a warning naming `what`. Never half the parameters."""
    try:
        return restore_params(directory, like, partitioner)
    except Exception as error:
        if not is_damage(error):
            raise
        moved = set_aside(directory, directory.with_name(f"{directory.name}.unreadable"))
        logging.warning("%s in %s cannot be read (%s); they are made again (the unreadable "
                        "folder is kept in %s)", what, directory, reason(error), moved)
        return None
