"""On checkpoints laid out like the published ones (tests/models/published.py), the pipeline's
prompts equal what each family's transformers processor makes for the same conversation and clip,
the model's output depends on the clip, and a tokenizer or prompt that would hide the audio from
the model is refused with the file or row named."""

import functools
import types

import numpy as np
import pytest
import soundfile

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.data.chat_format import ChatFormatError, chat_format  # noqa: E402
from sallm_jax.data.manifest import ManifestRow  # noqa: E402
from sallm_jax.data.pipeline import BatchLoader, BatchSpec, screen_rows  # noqa: E402
from sallm_jax.data.prompts import user_text  # noqa: E402
from sallm_jax.data.tokenizer import CHAT_TEMPLATE  # noqa: E402
from sallm_jax.models.families import num_audio_tokens  # noqa: E402
from sallm_jax.models.hub.load import load_checkpoint  # noqa: E402
from tests.models.published import FAMILIES, save_published  # noqa: E402

RATE = 16000
DURATIONS_S = (1.0, 3.0, 29.0)


@pytest.fixture(scope="module", params=FAMILIES)
def published(request, tmp_path_factory):
    """(family name, checkpoint directory, loaded Checkpoint, its ChatFormat)."""
    path = tmp_path_factory.mktemp(request.param)
    save_published(path, request.param)
    checkpoint = load_checkpoint(path)
    chat = chat_format(checkpoint.tokenizer, checkpoint.family,
                       checkpoint.model.config.audio_token_id,
                       eos_token_ids=checkpoint.processor.eos_token_ids)
    return request.param, path, checkpoint, chat


def rows_of_each_task(directory, seconds: float, tone: bool = False) -> list[ManifestRow]:
    """An sqa, an ast and an aqa row on one clip of `seconds` of noise, or of a 440 Hz tone
    (float32 wav: read back exactly)."""
    n = int(seconds * RATE)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE) if tone
            else np.random.default_rng(0).normal(0, 0.1, n)).astype(np.float32)
    audio = directory / f"clip-{seconds}-{tone}.wav"
    soundfile.write(audio, wave, RATE, subtype="FLOAT")
    return [
        ManifestRow(id=f"sqa-{seconds}", audio=str(audio), task="sqa",
                    question="Where did Sofia go on Thursday?", answer="Sofia went to the garden."),
        ManifestRow(id=f"ast-{seconds}", audio=str(audio), task="ast",
                    question="Translate the English speech into German.",
                    answer="Sofia ging in den Garten.", source_lang="en", target_lang="de"),
        ManifestRow(id=f"aqa-{seconds}", audio=str(audio), task="aqa",
                    question="Where did Ravi take the books?", answer="bakery",
                    choices=["office", "bakery", "library", "Lucy's hospital"], answer_index=1),
    ]


def pipeline_prompts(rows, checkpoint, chat) -> tuple[list[list[int]], dict]:
    """The prompt ids `BatchLoader` gives each row (left padding removed), and the batch."""
    spec = BatchSpec(batch_size=len(rows), audio_buckets_s=(30.0,), max_prompt_text_tokens=256,
                     max_target_tokens=16,
                     num_audio_tokens=functools.partial(num_audio_tokens,
                                                        checkpoint.model.config))
    buckets = screen_rows(rows, spec, chat=chat)
    batch, skips = BatchLoader(rows, buckets, chat, spec)(np.arange(len(rows)))
    assert skips == ()
    return [list(ids[mask == 1]) for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"],
                                                      strict=True)], batch


def qwen2_audio_reference(path, row: ManifestRow) -> list[int]:
    """transformers' Qwen2AudioProcessor on the conversation of its model card."""
    processor = transformers.Qwen2AudioProcessor.from_pretrained(path)
    conversation = [{"role": "user", "content": [
        {"type": "audio", "audio_url": row.audio}, {"type": "text", "text": user_text(row)}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    wave, _ = soundfile.read(row.audio, dtype="float32")
    out = processor(text=text, audio=[wave], sampling_rate=RATE, return_tensors="np")
    return list(out["input_ids"][0])


def granite_speech_reference(path, row: ManifestRow) -> list[int]:
    """GraniteSpeechProcessor's rule, restated where it cannot run (its feature extractor needs
    torchaudio): the model card's conversation through the tokenizer's own template; then, as
    `GraniteSpeechProcessor.replace_audio_token` with `ProcessorMixin.get_text_with_replacements`
    do, the `<|audio|>` replaced by as many copies as transformers'
    `GraniteSpeechFeatureExtractor._get_num_audio_features` gives for the clip's samples
    (called on the saved preprocessor_config.json's settings); then the tokenizer."""
    import json

    from transformers.models.granite_speech.feature_extraction_granite_speech import (
        GraniteSpeechFeatureExtractor,
    )

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    conversation = [{"role": "user", "content": "<|audio|>" + user_text(row)}]
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    settings = json.loads((path / "preprocessor_config.json").read_text())
    extractor = types.SimpleNamespace(**settings)
    samples = soundfile.info(row.audio).frames
    (count,) = GraniteSpeechFeatureExtractor._get_num_audio_features(extractor, [samples])
    return tokenizer(text.replace("<|audio|>", "<|audio|>" * count))["input_ids"]


REFERENCES = {"qwen2_audio": qwen2_audio_reference, "granite_speech": granite_speech_reference}


@pytest.mark.parametrize("seconds", DURATIONS_S)
def test_prompt_ids_equal_the_processors(published, seconds, tmp_path):
    family, path, checkpoint, chat = published
    rows = rows_of_each_task(tmp_path, seconds)
    ours, _ = pipeline_prompts(rows, checkpoint, chat)
    for row, ids in zip(rows, ours, strict=True):
        reference = REFERENCES[family](path, row)
        assert ids == reference, (family, row.id)
        audio_ids = sum(i == checkpoint.model.config.audio_token_id for i in reference)
        assert audio_ids > 0 and ids.count(checkpoint.model.config.audio_token_id) == audio_ids


def test_the_model_hears_the_clip(published, tmp_path):
    """Next-token logits move when only the clip changes (noise, then a tone: far beyond float32
    rounding; a model that never hears its audio moves by exactly 0), and stay when it does
    not."""
    _, _, checkpoint, chat = published
    logits = []
    for tone in (False, False, True):
        _, batch = pipeline_prompts(rows_of_each_task(tmp_path, 3.0, tone)[:1], checkpoint, chat)
        last, _ = checkpoint.model.prefill({k: batch[k] for k in
                                            ("waveforms", "num_samples", "prompt_ids",
                                             "prompt_mask")})
        logits.append(np.asarray(last))
    np.testing.assert_array_equal(logits[0], logits[1])
    assert np.abs(logits[0] - logits[2]).max() > 1e-3


def test_targets_end_as_the_template_ends_an_answer(published):
    family, _, checkpoint, chat = published
    closing = {"qwen2_audio": "<|im_end|>", "granite_speech": "<|end_of_text|>"}[family]
    tokenizer = checkpoint.tokenizer
    assert chat.target_ids("Sofia went to the garden.")[-1] == tokenizer.convert_tokens_to_ids(
        closing)
    assert tokenizer.decode(chat.target_ids("Sofia went to the garden.")[:-1]) == (
        "Sofia went to the garden.")
    assert set(chat.stop_ids) == set(checkpoint.processor.eos_token_ids)


def test_a_tokenizer_that_splits_the_placeholder_is_refused(published, tmp_path):
    """The project's Qwen2-Audio-format tokenizer on a Granite model (and the other way round):
    the placeholder is ordinary text there, so the model would never hear."""
    family, path, checkpoint, _ = published
    other = {"qwen2_audio": "granite_speech", "granite_speech": "qwen2_audio"}[family]
    foreign = save_published(tmp_path / other, other)
    with pytest.raises(ChatFormatError, match="would never hear"):
        chat_format(foreign, checkpoint.family, checkpoint.model.config.audio_token_id)


def test_a_prompt_with_a_second_placeholder_names_its_row(published, tmp_path):
    _, _, checkpoint, chat = published
    (row, *_) = rows_of_each_task(tmp_path, 1.0)
    row = ManifestRow(**{**row.__dict__, "question": f"What is {chat.audio_token} here?"})
    with pytest.raises(ChatFormatError, match=f"example '{row.id}'"):
        pipeline_prompts([row], checkpoint, chat)


def test_the_project_tokenizer_keeps_its_qwen2_audio_template(small_sqa):
    """The project's own tokenizer renders Qwen2-Audio's template, system prompt included."""
    from tests.batch_spec import qwen2_audio_chat

    _, tokenizer = small_sqa
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert qwen2_audio_chat(tokenizer).render("Where did Maria take the apples?", 3) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|AUDIO|><|AUDIO|><|audio_eos|>\n"
        "Where did Maria take the apples?<|im_end|>\n<|im_start|>assistant\n")
