"""GRPO step: sallm_jax's `GRPOStep` against TRL's `GRPOTrainer`, on the same Qwen2 text model.

Audio is left out so that TRL can run the same work: the decoder of a random Qwen2-Audio
checkpoint (benchmarks/checkpoints.py) is saved again as a `Qwen2ForCausalLM`, and both sides
start from those weights with the same tokenizer (trained on the embedded spoken-QA text).
One step, both sides: 8 question prompts x group 8 completions of up to 32 tokens sampled at
temperature 1, sentence-BLEU reward against the answers (the same function), group-normalised
advantages, DAPO aggregation, epsilon 0.2, KL to a frozen reference copy with beta 0.04 (one
reference forward pass), one AdamW update of the decoder (lr 1e-5, no weight decay, gradient
clipping at 1), everything in float32. TRL's time is its `on_step_begin` .. `on_step_end`
window (generation, reward, reference log-probs, loss, backward, optimizer), so its data
loader and trainer set-up are not counted; ours is one `GRPOStep` call with the updated state
on the host side of a `block_until_ready`. Correctness gate: greedy completions of our rollout
equal `Qwen2ForCausalLM.generate`'s in every row.
"""

from __future__ import annotations

import os
import random
import tempfile
import time

import jax
import ml_collections
import numpy as np
import torch
import transformers
from flax import nnx

from benchmarks.checkpoints import save_random_checkpoint
from benchmarks.timing import Row, paired_ratios, rates
from sallm_jax.configs.base import base_config
from sallm_jax.data.chat_format import chat_format
from sallm_jax.data.embedded_sqa import sample_passage
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.tokenizer import train_tokenizer
from sallm_jax.models.hub.load import load_checkpoint
from sallm_jax.models.qwen2_audio.family import QWEN2_AUDIO
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.grpo_settings import GRPOSettings
from sallm_jax.rl.rewards import get_reward_fns
from sallm_jax.rl.rollout import SamplingConfig, make_rollout_fn
from sallm_jax.train.grpo_step import GRPOStep
from sallm_jax.train.state import make_optimizer, sharded_train_state

BATCH, GROUP, COMPLETION = 8, 8, 32
LEARNING_RATE, BETA, EPSILON = 1e-5, 0.04, 0.2
TARGET = 3.0


def question_rows(count: int, seed: int = 0) -> list[ManifestRow]:
    """`count` questions with their answers from embedded spoken-QA passages (text only)."""
    rng, rows = random.Random(seed), []
    while len(rows) < count:
        passage = sample_passage(rng)
        for qa in passage.questions:
            rows.append(ManifestRow(id=f"q{len(rows)}", audio="", task="sqa",
                                    question=f"{passage.text} {qa.question}",
                                    answer=qa.answers[0]))
    return rows[:count]


def save_text_model(size: str, vocab_size: int, audio_dir: str, text_dir: str) -> None:
    """A random Qwen2-Audio checkpoint in `audio_dir` and its decoder, as `Qwen2ForCausalLM`,
    in `text_dir` (checked: same logits on text)."""
    speech = save_random_checkpoint(size, audio_dir, vocab_size=vocab_size)
    text = transformers.Qwen2ForCausalLM(speech.config.text_config).eval()
    source = speech.state_dict()
    text.load_state_dict({k: source["lm_head.weight" if k == "lm_head.weight" else
                                    k.replace("model.", "model.language_model.", 1)]
                          for k in text.state_dict()})
    ids = torch.randint(0, vocab_size - 1, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(text(input_ids=ids).logits, speech(input_ids=ids).logits)
    text.save_pretrained(text_dir)


def grpo_config() -> ml_collections.ConfigDict:
    cfg = base_config().grpo
    cfg.batch_size, cfg.group_size, cfg.max_completion_length = BATCH, GROUP, COMPLETION
    cfg.learning_rate, cfg.warmup_steps, cfg.weight_decay = LEARNING_RATE, 0, 0.0
    cfg.beta, cfg.epsilon, cfg.epsilon_high = BETA, EPSILON, EPSILON
    cfg.scale_rewards, cfg.loss_aggregation = "group", "dapo"
    cfg.temperature, cfg.top_p, cfg.top_k = 1.0, 1.0, 0
    cfg.reward_fns, cfg.reward_weights = ("bleu",), (1.0,)
    return cfg


def host_batch(rows: list[ManifestRow], tokenizer) -> dict[str, np.ndarray]:
    """The prompts left-padded to the longest, as TRL pads them."""
    prompts = [tokenizer(r.question)["input_ids"] for r in rows]
    width = max(map(len, prompts))
    ids = np.full((len(rows), width), tokenizer.pad_token_id, np.int32)
    mask = np.zeros_like(ids)
    for b, prompt in enumerate(prompts):
        ids[b, width - len(prompt):], mask[b, width - len(prompt):] = prompt, 1
    return {"prompt_ids": ids, "prompt_mask": mask, "index": np.arange(len(rows), dtype=np.int32),
            "valid": np.ones(len(rows), bool)}


class Ours:
    """sallm_jax: `GRPOStep` on the decoder of the checkpoint (audio tower and projector
    frozen and unused), full fine-tuning with a reference copy, one device."""

    def __init__(self, audio_dir: str, rows: list[ManifestRow], tokenizer):
        self.partitioner = Partitioner(make_mesh({"data": -1}), ())
        model = load_checkpoint(audio_dir).model
        # Text-only prompts: the format gives GRPOStep the stop and pad ids and the decoder.
        chat = chat_format(tokenizer, QWEN2_AUDIO,
                           tokenizer.convert_tokens_to_ids(QWEN2_AUDIO.audio_token))
        self.graphdef, params, frozen = nnx.split(
            model, nnx.All(nnx.Param, nnx.PathContains("language_model")), ...)
        cfg = grpo_config()
        tx = make_optimizer(learning_rate=cfg.learning_rate, warmup_steps=0, total_steps=1000,
                            weight_decay=0.0, max_grad_norm=cfg.max_grad_norm)
        self.state, shardings = sharded_train_state(self.partitioner, params, tx, copy=True)
        self.step = GRPOStep(cfg, settings=GRPOSettings.from_section(cfg),
                             graphdef=self.graphdef, tx=tx, state_shardings=shardings,
                             frozen=frozen, ref_params=params, rows=rows, chat=chat,
                             partitioner=self.partitioner)
        self.greedy = make_rollout_fn(
            self.graphdef, shardings.params, self.partitioner.param_shardings(self.step.frozen),
            self.partitioner, sampling=SamplingConfig(COMPLETION, temperature=0.0),
            group_size=1, eos_ids=(tokenizer.eos_token_id,), pad_id=tokenizer.pad_token_id)
        self.calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> None:
        """One step, blocking until the new state is computed."""
        self.state, _, _ = self.step(self.state, batch, jax.random.key(self.calls))
        jax.block_until_ready(self.state)
        self.calls += 1

    def greedy_ids(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Greedy completion ids and mask [B, COMPLETION] from the current parameters."""
        out = self.greedy(self.state.params, self.step.frozen,
                          self.partitioner.to_global({k: batch[k] for k in
                                                      ("prompt_ids", "prompt_mask")}),
                          jax.random.key(0))
        return np.asarray(out.ids), np.asarray(out.mask)


class StepTimer(transformers.TrainerCallback):
    """Wall seconds of each optimizer step of a transformers `Trainer`."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


class Peer:
    """TRL: `GRPOTrainer` with the same settings, one step per `train()` call."""

    def __init__(self, text_dir: str, rows: list[ManifestRow], tokenizer, out_dir: str):
        import datasets
        import trl
        from trl import GRPOConfig, GRPOTrainer

        bleu = get_reward_fns(["bleu"])[0]

        def bleu_reward(completions, answer, **_):
            return [bleu(c, {"answer": a}) for c, a in zip(completions, answer, strict=True)]

        args = GRPOConfig(
            output_dir=out_dir, max_steps=1, per_device_train_batch_size=BATCH * GROUP,
            gradient_accumulation_steps=1, num_generations=GROUP,
            max_completion_length=COMPLETION, temperature=1.0, top_p=1.0, top_k=0,
            learning_rate=LEARNING_RATE, lr_scheduler_type="constant", weight_decay=0.0,
            max_grad_norm=1.0, optim="adamw_torch", beta=BETA, epsilon=EPSILON,
            loss_type="dapo", scale_rewards="group", num_iterations=1,
            use_cpu=not torch.cuda.is_available(),
            bf16=False, report_to=[], save_strategy="no", logging_strategy="no",
            shuffle_dataset=False, disable_dropout=True, dataloader_num_workers=0, seed=0,
            disable_tqdm=True)
        data = datasets.Dataset.from_dict({"prompt": [r.question for r in rows],
                                           "answer": [r.answer for r in rows]})
        self.name = f"trl {trl.__version__} GRPOTrainer"
        self.timer = StepTimer()
        self.trainer = GRPOTrainer(model=text_dir, reward_funcs=bleu_reward, args=args,
                                   train_dataset=data, processing_class=tokenizer,
                                   callbacks=[self.timer])

    def __call__(self) -> float:
        """Seconds of one training step."""
        self.trainer.train()
        return self.timer.seconds[-1]


def greedy_gate(text_dir: str, ours: Ours, batch: dict[str, np.ndarray], tokenizer) -> str:
    """Raise unless our greedy rollout equals `generate` in every row (before any update)."""
    model = transformers.Qwen2ForCausalLM.from_pretrained(text_dir).eval()
    out = model.generate(input_ids=torch.from_numpy(batch["prompt_ids"]).long(),
                         attention_mask=torch.from_numpy(batch["prompt_mask"]).long(),
                         do_sample=False, max_new_tokens=COMPLETION,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    peer = out[:, batch["prompt_ids"].shape[1]:].numpy()
    ids, mask = ours.greedy_ids(batch)
    for row in range(len(ids)):
        length = int(mask[row].sum())
        if ids[row, :length].tolist() != peer[row, :length].tolist():
            raise AssertionError(f"grpo_step: greedy tokens differ from generate in row {row}: "
                                 f"{ids[row, :length].tolist()} vs {peer[row].tolist()}")
    return f"greedy tokens identical to Qwen2ForCausalLM.generate in all {len(ids)} rows"


def run(reps: int = 5, size: str = "tiny") -> list[Row]:
    """Seconds per step, the sides taking turns; the first step of each side (compilation,
    lazy set-up) is left out."""
    torch.set_num_threads(os.cpu_count() or 1)
    rows = question_rows(BATCH, seed=1)
    # float32 at full precision on both sides (torch's CUDA matmuls do not use TF32 by default;
    # XLA's would).
    with tempfile.TemporaryDirectory() as tmp, jax.default_matmul_precision("highest"):
        corpus = [t for r in question_rows(2000, seed=2) for t in (r.question, r.answer)]
        tokenizer = train_tokenizer(corpus, f"{tmp}/tokenizer", vocab_size=512)
        save_text_model(size, len(tokenizer), f"{tmp}/speech", f"{tmp}/text")
        batch = host_batch(rows, tokenizer)
        ours = Ours(f"{tmp}/speech", rows, tokenizer)
        note = greedy_gate(f"{tmp}/text", ours, batch, tokenizer)
        peer = Peer(f"{tmp}/text", rows, tokenizer, f"{tmp}/trl")
        start = time.perf_counter()
        ours(batch)
        compile_s = time.perf_counter() - start
        peer()
        times: dict[str, list[float]] = {"ours": [], "peer": []}
        for _ in range(reps):
            start = time.perf_counter()
            ours(batch)
            times["ours"].append(time.perf_counter() - start)
            times["peer"].append(peer())
    return [Row(benchmark="grpo_step",
                case=f"{size} Qwen2 text, {BATCH} x {GROUP} x {COMPLETION}, beta {BETA}",
                unit="steps/s", ours=rates(times["ours"], 1.0), peer=rates(times["peer"], 1.0),
                peer_name=peer.name, target=TARGET,
                note=f"{note}; ours excludes its first step {compile_s:.1f} s (compile)",
                paired=paired_ratios(times["ours"], times["peer"]))]
