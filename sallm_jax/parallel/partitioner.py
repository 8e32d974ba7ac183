"""Placement of parameters, train states and batches on a mesh, for one or many processes.

Each process loads its slice of a batch: `to_global` assembles arrays sharded over `data` x
`fsdp`; `to_local` / `gather` bring results back. With one process these are plain transfers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sallm_jax.data.pipeline import DEVICE_KEYS
from sallm_jax.parallel.sharding import (
    BATCH_AXES,
    Rules,
    batch_sharding,
    param_shardings,
    replicated,
)


@dataclasses.dataclass(frozen=True)
class Partitioner:
    """A mesh plus the logical-axis rules that map parameters onto it."""

    mesh: Mesh
    rules: Rules

    @property
    def batch(self) -> NamedSharding:
        return batch_sharding(self.mesh)

    @property
    def replicated(self) -> NamedSharding:
        return replicated(self.mesh)

    def param_shardings(self, params: nnx.State) -> nnx.State:
        return param_shardings(params, self.mesh, self.rules)

    def shard_params(self, params: nnx.State, *, copy: bool = False) -> nnx.State:
        """Parameters laid out by the rules; with `copy`, in fresh buffers (safe to donate).

        Arrays already laid out come back as they are unless `copy` (frozen weights are shared by
        training, evaluation and the reference policy)."""
        shardings = self.param_shardings(params)
        # Host-local: device_put; already global: a compiled identity (CPU has no direct relayout).
        if all(x.is_fully_addressable for x in jax.tree.leaves(params)
               if isinstance(x, jax.Array)):
            params = jax.device_put(params, shardings)
        laid_out = all(isinstance(x, jax.Array) and x.sharding == s for x, s in zip(
            jax.tree.leaves(params), jax.tree.leaves(shardings), strict=True))
        if laid_out and not copy:
            return params
        # jnp.copy is an operation of its own, so the output cannot alias the input buffer.
        relayout = (lambda p: jax.tree.map(jnp.copy, p)) if copy else (lambda p: p)
        return jax.jit(relayout, out_shardings=shardings)(params)

    def to_global(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Process-local batch slices -> global arrays split along the batch axis."""
        return {k: jax.make_array_from_process_local_data(self.batch, np.asarray(v))
                for k, v in local.items()}

    def device_batch(self, batch: dict) -> dict[str, jax.Array]:
        """`batch`'s `DEVICE_KEYS` arrays as global arrays split along the batch axis."""
        return self.to_global({k: batch[k] for k in DEVICE_KEYS if k in batch})

    def to_local(self, array: jax.Array) -> np.ndarray:
        """The rows of a batch-sharded global array that belong to this process."""
        if jax.process_count() == 1:
            return np.asarray(jax.device_get(array))
        local = multihost_utils.global_array_to_host_local_array(
            array, self.mesh, PartitionSpec(BATCH_AXES))
        return np.asarray(local)

    @staticmethod
    def gather(local: np.ndarray) -> np.ndarray:
        """Concatenate every process's rows (process order), on every process."""
        if jax.process_count() == 1:
            return local
        return np.asarray(multihost_utils.process_allgather(local, tiled=True))
