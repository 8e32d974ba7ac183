"""The experiment configs (`--config=configs/<name>.py[:preset]`), shipped in the wheel as
`sallm_jax.configs`; base.py holds the settings they share."""
