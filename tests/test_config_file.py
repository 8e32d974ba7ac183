"""--config=FILE[:preset] finds the shipped configs from any directory, or names the flag."""

import pathlib

import pytest

from sallm_jax.run import config_file

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("spec", ["configs/sqa_grpo.py:smoke", "sqa_grpo:smoke"])
def test_packaged_config_found_from_another_directory(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_file.resolve_config_file(spec) == f"{CONFIGS / 'sqa_grpo.py'}:smoke"


def test_a_file_in_the_working_directory_comes_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sqa_grpo.py").write_text("def get_config(): return {}\n")
    assert config_file.resolve_config_file("configs/sqa_grpo.py") == "configs/sqa_grpo.py"


def test_missing_config_names_the_flag_and_the_choices(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = (r"--config=configs/nope.py:smoke: no file 'configs/nope.py'"
                r".*aqa_grpo, ast_grpo, sqa_grpo, sqa_sft")
    with pytest.raises(ValueError, match=expected):
        config_file.resolve_config_file("configs/nope.py:smoke")


def test_config_stem():
    assert config_file.config_stem("configs/sqa_grpo.py:smoke") == "sqa_grpo"
    assert config_file.config_stem("sqa_grpo:smoke") == "sqa_grpo"
