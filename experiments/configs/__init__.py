"""Experiment configs: one file per experiment, `get_config(arg) -> ConfigDict`.

Load one with `--config=experiments/configs/<file>.py:<arg>` (ml_collections config_flags), or
`common.load('experiments/configs/<file>.py:<arg>')` from Python.
"""
