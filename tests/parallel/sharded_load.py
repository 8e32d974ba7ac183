"""Run by test_sharded_load.py on 8 simulated CPU devices: a checkpoint loaded straight into a
fsdp x tensor mesh equals the one-device load, each array in its parameter's sharding; the
experiment's model.checkpoint path (`experiment.build_model`) loads it the same way."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from hf_tiny import save_qwen2_audio, save_tokenizer  # noqa: E402
from sallm_jax.configs.base import base_config  # noqa: E402

from sallm_jax.models.hub.load import load_checkpoint  # noqa: E402
from sallm_jax.parallel.mesh import make_mesh  # noqa: E402
from sallm_jax.parallel.partitioner import Partitioner  # noqa: E402
from sallm_jax.parallel.sharding import DEFAULT_RULES  # noqa: E402
from sallm_jax.run.experiment import build_model  # noqa: E402

path = sys.argv[1]
save_qwen2_audio(path)
partitioner = Partitioner(make_mesh({"data": 1, "fsdp": 4, "tensor": 2}), DEFAULT_RULES)
plain = nnx.state(load_checkpoint(path).model)
state = nnx.state(load_checkpoint(path, shardings=partitioner.param_shardings).model)
expected = partitioner.param_shardings(state)
split = 0
for (where, a), b, sharding in zip(jax.tree.leaves_with_path(state), jax.tree.leaves(plain),
                                   jax.tree.leaves(expected), strict=True):
    assert a.sharding == sharding, (jax.tree_util.keystr(where), a.sharding, sharding)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    split += len({str(s.index) for s in a.addressable_shards}) > 1
assert split > 0, "no parameter was split over the mesh"

save_tokenizer(path)  # the experiment takes the checkpoint's own tokenizer
cfg = base_config()
cfg.model.checkpoint = path
built, _ = build_model(cfg, {}, None, partitioner=partitioner)
for (where, a), b in zip(jax.tree.leaves_with_path(nnx.state(built)), jax.tree.leaves(state),
                         strict=True):
    assert a.sharding == b.sharding, (jax.tree_util.keystr(where), a.sharding, b.sharding)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
print(f"OK {split} split")
