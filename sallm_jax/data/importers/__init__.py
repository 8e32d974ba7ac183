"""Importers from public data sets' native layouts into the project's JSONL manifests.

Each module is a command, `python -m sallm_jax.data.importers.NAME --input ... --output DIR`, and a
function; both write `DIR/{split}.jsonl` (`sallm_jax.data.manifest`); `common` holds shared code.

  librisqa      LibriSQA Part I JSON + LibriSpeech flac      -> task "sqa", train/validation/test
  covost2       CoVoST 2 TSVs + Common Voice clips (mp3)     -> task "ast", train/validation/test
  avqa          AVQA in R1-AQA's JSONL layout + wav files    -> task "aqa" (multiple choice)
  mmau          MMAU test-mini JSON + its wav files          -> task "aqa", test
  librispeech   a prepared TFDS `librispeech` directory      -> task "asr", 16 kHz wav files written
"""
