"""Config loading: inheritance, overrides, and errors that name the key and suggest the right one."""
from __future__ import annotations

import pytest

from hiera_video.config import ConfigError, load_config


def write(path, text):
    path.write_text(text)
    return str(path)


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "TRAIN:\n  BATCH_SIZE: 32\nSOLVER:\n  BASE_LR: 0.1\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.5\n")
    cfg = load_config(child, ["DATA.NUM_FRAMES", "8", "HIERA.STAGES", "[1, 2]"])
    assert cfg.TRAIN.BATCH_SIZE == 32
    assert cfg.SOLVER.BASE_LR == 0.5
    assert cfg.DATA.NUM_FRAMES == 8
    assert cfg.HIERA.STAGES == [1, 2]
    assert cfg.is_frozen()


def test_unknown_key_in_file_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path / "bad.yaml", "TRAIN:\n  BATCH_SIZ: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "TRAIN.BATCH_SIZ" in message and "bad.yaml" in message and "TRAIN.BATCH_SIZE" in message


def test_unknown_override_suggests_closest(tmp_path):
    path = write(tmp_path / "ok.yaml", "")
    with pytest.raises(ConfigError, match="SOLVER.BASE_LR"):
        load_config(path, ["SOLVR.BASE_LR", "1"])


def test_wrong_type_and_bad_choice(tmp_path):
    path = write(tmp_path / "ok.yaml", "")
    with pytest.raises(ConfigError, match="TRAIN.BATCH_SIZE"):
        load_config(path, ["TRAIN.BATCH_SIZE", "many"])
    with pytest.raises(ConfigError, match="MAE.TARGET"):
        load_config(path, ["MAE.TARGET", "depth"])
    with pytest.raises(ConfigError, match="odd number"):
        load_config(path, ["TRAIN.BATCH_SIZE"])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml"):
        load_config(str(tmp_path / "nothere.yaml"))


def test_whole_numbers_are_accepted_for_float_keys(tmp_path):
    path = write(tmp_path / "f.yaml", "SOLVER:\n  WARMUP_EPOCHS: 2\n  MAX_EPOCH: 10\n")
    cfg = load_config(path, ["SOLVER.BASE_LR", "1", "MAE.MASK_RATIO", "0"])
    assert cfg.SOLVER.WARMUP_EPOCHS == 2.0 and isinstance(cfg.SOLVER.WARMUP_EPOCHS, float)
    assert cfg.SOLVER.BASE_LR == 1.0 and cfg.MAE.MASK_RATIO == 0.0
