"""LoRA adapters against W + (alpha / r) B A applied in torch, and against transformers + PEFT."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.models.hub.load import load_checkpoint  # noqa: E402
from sallm_jax.models.hub.peft import load_peft_adapter  # noqa: E402
from sallm_jax.models.lora import (  # noqa: E402
    LoRALinear,
    LoRAParam,
    apply_lora,
    lora_modules,
    merge_lora,
    set_lora_enabled,
    trainable_filter,
)
from tests.models.hf_tiny import (  # noqa: E402
    batch,
    hf_logits,
    jax_model,
    merged_model,
    save_peft_adapter,
    save_qwen2_audio,
    tiny_hf_model,
)
from tests.models.tiny import forward  # noqa: E402

RANK, ALPHA = 4, 12.0  # scaling 3: a wrong alpha / r would show
TOL = 1e-4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(checkpoint dir, adapter dir in PEFT's 5.x key layout, inputs, base and adapted logits)."""
    path = tmp_path_factory.mktemp("lora_base")
    hf = save_qwen2_audio(path)
    inputs = batch("qwen2_audio")
    base_logits = hf_logits(hf, *inputs)
    adapter = tmp_path_factory.mktemp("lora_adapter")
    save_peft_adapter(adapter, rank=RANK, alpha=ALPHA)
    adapted_logits = hf_logits(merged_model("qwen2_audio", adapter), *inputs)
    assert np.abs(adapted_logits - base_logits).max() > 0.1
    return path, adapter, inputs, base_logits, adapted_logits


def _logits(model, inputs):
    features, lengths, input_ids, attention_mask = map(jnp.asarray, inputs)
    return np.asarray(forward(model, input_ids, attention_mask, features, lengths))


def _valid(inputs):
    return inputs[3].astype(bool)


def test_transformers_peft_applies_the_formula(setup):
    """The reference the other tests use (W + (alpha / r) B A, by hand) is what PEFT computes."""
    peft = pytest.importorskip("peft")
    _, adapter, inputs, _, adapted_logits = setup
    model = peft.PeftModel.from_pretrained(tiny_hf_model("qwen2_audio"), adapter).eval()
    valid = _valid(inputs)
    peft_logits = hf_logits(model, *inputs)
    np.testing.assert_allclose(peft_logits[valid], adapted_logits[valid], atol=TOL, rtol=0)


def test_peft_adapter_matches_the_formula(setup):
    path, adapter, inputs, base_logits, adapted_logits = setup
    keys = sorted(load_file(adapter / "adapter_model.safetensors"))
    assert (
        keys[0] == "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
    )
    model = load_peft_adapter(jax_model(path), adapter)
    wrapped = [".".join(map(str, p)) for p, _ in lora_modules(model)]
    assert wrapped == [
        f"language_model.layers.{i}.self_attn.{proj}"
        for i in (0, 1)
        for proj in ("q_proj", "v_proj")
    ]
    valid = _valid(inputs)
    logits = _logits(model, inputs)
    np.testing.assert_allclose(logits[valid], adapted_logits[valid], atol=TOL, rtol=0)


def test_hub_layout_keys_and_formula(setup, tmp_path):
    """Keys as the released checkpoints spell them; merged kernels equal W + (alpha / r) B A."""
    path, adapter, inputs, _, adapted_logits = setup
    tensors = load_file(adapter / "adapter_model.safetensors")
    hub = {
        k.replace(
            "base_model.model.model.language_model.", "base_model.model.language_model.model."
        ): v
        for k, v in tensors.items()
    }
    save_file(hub, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    model = load_peft_adapter(jax_model(path), tmp_path)
    base = load_file(path / "model.safetensors")
    name = "language_model.model.layers.1.self_attn.v_proj"
    expected = base[f"{name}.weight"] + (ALPHA / RANK) * (
        hub[f"base_model.model.{name}.lora_B.weight"]
        @ hub[f"base_model.model.{name}.lora_A.weight"]
    )
    merge_lora(model)
    assert not list(lora_modules(model))
    kernel = np.asarray(model.language_model.layers[1].self_attn.v_proj.kernel[...])
    np.testing.assert_allclose(kernel, expected.T, atol=1e-6, rtol=0)
    valid = _valid(inputs)
    np.testing.assert_allclose(_logits(model, inputs)[valid], adapted_logits[valid], atol=TOL)


def _reference_logits(graphdef, state, features, lengths, input_ids, attention_mask):
    """The GRPO reference forward: a pure function of (graphdef, state) with adapters off."""
    model = nnx.merge(graphdef, state)  # shares `state`'s arrays: no second base copy
    set_lora_enabled(model, False)
    return model(input_ids, attention_mask, features, lengths)


def test_adapters_off_restore_base_logits_in_a_pure_jitted_function(setup):
    path, adapter, inputs, base_logits, adapted_logits = setup
    base = jax_model(path)
    model = load_peft_adapter(jax_model(path), adapter)
    batch = tuple(map(jnp.asarray, inputs))
    reference = jax.jit(_reference_logits, static_argnums=0)
    off = np.asarray(reference(*nnx.split(model), *batch))
    # Bit for bit: with the flag off the adapters drop out of the traced program entirely, which
    # is then the base model's forward.
    np.testing.assert_array_equal(off, _logits(base, inputs))
    valid = _valid(inputs)
    np.testing.assert_allclose(off[valid], base_logits[valid], atol=TOL, rtol=0)

    graphdef, state = nnx.split(model)

    @jax.jit
    def policy_and_reference(state, *batch):
        features, lengths, input_ids, attention_mask = batch
        on = nnx.merge(graphdef, state)(input_ids, attention_mask, features, lengths)
        return on, _reference_logits(graphdef, state, *batch)

    on, off_too = map(np.asarray, policy_and_reference(state, *batch))
    np.testing.assert_allclose(on[valid], adapted_logits[valid], atol=TOL, rtol=0)
    # One program holding both forwards fuses differently: equal to float32 rounding.
    np.testing.assert_allclose(off_too, off, atol=1e-5, rtol=0)
    # Only the merged copy was switched: the eager model still runs with adapters on.
    assert all(m.enabled for _, m in lora_modules(model))
    np.testing.assert_allclose(_logits(model, inputs)[valid], adapted_logits[valid], atol=TOL)


def test_apply_lora_wraps_language_model_only_and_starts_at_base(setup):
    path, _, inputs, base_logits, _ = setup
    # RANK / ALPHA as the PEFT adapter: the same graph, so the jitted forward is reused.
    model = apply_lora(jax_model(path), rank=RANK, alpha=ALPHA, rngs=nnx.Rngs(0))
    paths = [p for p, _ in lora_modules(model)]
    assert len(paths) == 4 and all(p[0] == "language_model" for p in paths)
    assert isinstance(model.audio_tower.layers[0].self_attn.q_proj, nnx.Linear)
    layer = model.language_model.layers[0].self_attn.q_proj
    assert isinstance(layer, LoRALinear)
    assert layer.lora_a.shape == (64, RANK) and layer.lora_b.shape == (RANK, 64)
    # Logical axes follow the kernel's (embed -> heads), the rank axis is replicated.
    assert layer.lora_a.get_metadata()["out_sharding"] == ("embed", None)
    assert layer.lora_b.get_metadata()["out_sharding"] == (None, "heads")
    np.testing.assert_array_equal(layer.lora_b[...], 0.0)
    valid = _valid(inputs)
    np.testing.assert_allclose(_logits(model, inputs)[valid], base_logits[valid], atol=TOL)
    everywhere = apply_lora(jax_model(path), rank=2, alpha=4.0, rngs=nnx.Rngs(0), scope=None)
    assert len(list(lora_modules(everywhere))) == 8  # + the encoder's two layers
    with pytest.raises(ValueError, match="no nnx.Linear named"):
        apply_lora(
            jax_model(path), rank=2, alpha=1.0, target_modules=("nope",), rngs=nnx.Rngs(0)
        )


def test_only_adapters_change_under_optax_with_the_trainable_filter(setup):
    path, _, inputs, _, _ = setup
    model = apply_lora(jax_model(path), rank=2, alpha=4.0, rngs=nnx.Rngs(0))
    graphdef, trainable, frozen = nnx.split(model, trainable_filter("adapters"), ...)
    assert {
        type(v) for v in jax.tree.leaves(trainable, is_leaf=lambda x: isinstance(x, nnx.Variable))
    } == {LoRAParam}
    tx = optax.adam(1e-2)
    opt_state = tx.init(trainable)
    features, lengths, input_ids, attention_mask = map(jnp.asarray, inputs)

    @jax.jit
    def step(trainable, opt_state):
        def loss(trainable):
            logits = nnx.merge(graphdef, trainable, frozen)(
                input_ids, attention_mask, features, lengths
            )
            return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 5])

        grads = jax.grad(loss)(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state

    new_trainable, _ = step(trainable, opt_state)
    after = nnx.merge(graphdef, new_trainable, frozen)
    before = nnx.to_flat_state(nnx.state(model))
    changed = {
        path
        for (path, old), (_, new) in zip(before, nnx.to_flat_state(nnx.state(after)), strict=True)
        if not np.array_equal(old[...], new[...])
    }
    assert changed and all(path[-1] in ("lora_a", "lora_b") for path in changed)
    # With B = 0 the gradient wrt A is exactly zero, so the first Adam step moves only B.
    assert {path[-1] for path in changed} == {"lora_b"}


def test_trainable_filter_modes(setup):
    path, _, _, _, _ = setup
    model = apply_lora(jax_model(path), rank=2, alpha=4.0, rngs=nnx.Rngs(0))

    def tops(mode):
        flat = nnx.to_flat_state(nnx.state(model, trainable_filter(mode)))
        return {p[0] for p, _ in flat}, len(flat)

    assert tops("adapters") == ({"language_model"}, 8)
    assert tops("adapters+projector")[0] == {"language_model", "multi_modal_projector"}
    assert tops("adapters+projector+encoder")[0] == {
        "language_model",
        "multi_modal_projector",
        "audio_tower",
    }
    assert tops("adapters+projector+encoder")[1] < tops("all")[1]
    with pytest.raises(ValueError, match="trainable='lora'"):
        trainable_filter("lora")


def test_load_checkpoint_picks_up_an_adapter_and_processor_settings(setup, tmp_path):
    path, adapter, inputs, _, adapted_logits = setup
    checkpoint = load_checkpoint(path, adapter_dir=adapter)
    assert checkpoint.tokenizer is None  # no tokenizer files in this directory
    assert checkpoint.processor.num_mel_bins == 80 and checkpoint.processor.audio_token_id == 299
    valid = _valid(inputs)
    np.testing.assert_allclose(
        _logits(checkpoint.model, inputs)[valid], adapted_logits[valid], atol=TOL
    )
    bad = json.loads((adapter / "adapter_config.json").read_text()) | {"use_dora": True}
    (tmp_path / "adapter_config.json").write_text(json.dumps(bad))
    with pytest.raises(NotImplementedError, match="use_dora"):
        load_peft_adapter(jax_model(path), tmp_path)
