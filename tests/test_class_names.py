"""Class names: the shipped Kinetics lists (also from an installed wheel), MODEL.CLASS_NAMES as a list name or a file,
the dataset's own names (classes.txt of prepare_data csv and the demo, the SSv2 labels json, the AVA label map), and
lists of the wrong length refused before any training."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from hiera_video.config import ConfigError, load_config
from hiera_video.data.class_names import shipped_class_names, shipped_lists
from hiera_video.data.demo import write_demo_dataset
from hiera_video.data.preparation.cli import main as prepare_data
from hiera_video.engine.runner import run
from hiera_video.tasks.class_names import class_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")
SSV2_CFG = os.path.join(REPO, "configs", "SSv2", "HIERA_B_16x224.yaml")
AVA_CFG = os.path.join(REPO, "configs", "AVA", "HIERA_B_16x224.yaml")
KINETICS_CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "Kinetics", "*.yaml"))
                          if not os.path.basename(p).startswith("_"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "motion")
    write_demo_dataset(root, num_classes=3, train_per_class=1, val_per_class=1, test_per_class=1, num_frames=8,
                       size=16)
    return root


def demo_cfg(root, *opts):
    return load_config(DEMO_CFG, ["DATA.PATH_TO_DATA_DIR", root, "DATA.PATH_PREFIX", root, "MODEL.NUM_CLASSES", "3",
                                  *opts])


@pytest.mark.parametrize("name, length, known", [
    ("kinetics400", 400, {0: "abseiling", 99: "dribbling basketball", 196: "massaging person's head",
                          299: "shoveling snow", 399: "zumba"}),
    ("kinetics600", 600, {0: "abseiling", 99: "cleaning windows", 299: "opening bottle (not wine)", 599: "zumba"}),
    ("kinetics700", 700, {0: "abseiling", 99: "chiseling wood", 299: "lock picking", 699: "zumba"}),
])
def test_shipped_kinetics_lists_are_complete_and_in_label_order(name, length, known):
    names = shipped_class_names(name)
    assert len(names) == len(set(names)) == length
    assert names == sorted(names)  # the official label order is alphabetical
    assert {index: names[index] for index in known} == known


def test_every_shipped_kinetics_config_names_its_classes():
    assert shipped_lists() == ["kinetics400", "kinetics600", "kinetics700"]
    for path in KINETICS_CONFIGS:
        cfg = load_config(path)
        assert class_names(cfg) == shipped_class_names(f"kinetics{cfg.MODEL.NUM_CLASSES}"), path


def test_the_datasets_classes_txt_names_the_classes_unless_the_config_names_others(demo, tmp_path):
    assert class_names(demo_cfg(demo)) == ["left", "right", "up"]  # the demo writes its classes.txt
    other = tmp_path / "names.txt"
    other.write_text("west\n\n  east \nnorth\n")  # blank lines and surrounding blanks ignored
    assert class_names(demo_cfg(demo, "MODEL.CLASS_NAMES", str(other))) == ["west", "east", "north"]
    assert class_names(demo_cfg(str(tmp_path / "elsewhere"))) is None  # no names anywhere: indices


def test_prepare_data_csv_lists_give_their_class_names(demo, tmp_path, capsys):
    for index, folder in enumerate(["ice skating", "air drumming", "juggling balls"]):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        shutil.copy(os.path.join(demo, "test", ["left", "right", "up"][index] + "_000.mp4"), tmp_path / "raw" / folder)
    assert prepare_data(["csv", str(tmp_path / "raw"), "--out", str(tmp_path / "lists"), "--val-fraction", "0"]) == 0
    assert class_names(demo_cfg(str(tmp_path / "lists"))) == ["air drumming", "ice skating", "juggling balls"]


def test_a_list_of_the_wrong_length_fails_with_both_numbers_and_its_file_before_training(demo, tmp_path,
                                                                                        single_process):
    short = tmp_path / "two.txt"
    short.write_text("left\nright\n")
    with pytest.raises(ConfigError, match=rf"MODEL.CLASS_NAMES file {short} lists 2 class names but "
                                          r"MODEL.NUM_CLASSES is 3"):
        class_names(demo_cfg(demo, "MODEL.CLASS_NAMES", str(short)))
    with pytest.raises(ConfigError, match="kinetics400 .a shipped list. lists 400 class names but MODEL.NUM_CLASSES "
                                          "is 3"):
        class_names(demo_cfg(demo, "MODEL.CLASS_NAMES", "kinetics400"))
    with pytest.raises(ConfigError, match=rf"{demo}/classes.txt lists 3 class names but MODEL.NUM_CLASSES is 4"):
        class_names(demo_cfg(demo, "MODEL.NUM_CLASSES", "4"))
    with pytest.raises(ConfigError, match="MODEL.CLASS_NAMES 'kinetics401' is neither a file nor a shipped list "
                                          r"\(kinetics400, kinetics600, kinetics700\)"):
        class_names(demo_cfg(demo, "MODEL.CLASS_NAMES", "kinetics401"))
    twice = tmp_path / "twice.txt"
    twice.write_text("left\nright\nleft\n")
    with pytest.raises(ValueError, match=f"{twice}: classes listed twice: left"):
        class_names(demo_cfg(demo, "MODEL.CLASS_NAMES", str(twice)))
    output = tmp_path / "run"
    with pytest.raises(ConfigError, match="lists 2 class names"):  # the run stops before training
        run(single_process, demo_cfg(demo, "MODEL.CLASS_NAMES", str(short), "OUTPUT_DIR", str(output)))
    assert not (output / "checkpoints").exists()


def test_ssv2_names_come_from_the_labels_json_in_class_id_order(tmp_path):
    labels = {"Pushing something from right to left": "1", "Moving something up": "2",
              "Pushing something from left to right": "0"}
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps(labels))
    cfg = load_config(SSV2_CFG, ["DATA.PATH_TO_DATA_DIR", str(tmp_path), "MODEL.NUM_CLASSES", "3"])
    assert class_names(cfg) == ["Pushing something from left to right", "Pushing something from right to left",
                                "Moving something up"]
    cfg = load_config(SSV2_CFG, ["DATA.PATH_TO_DATA_DIR", str(tmp_path), "MODEL.NUM_CLASSES", "4"])
    with pytest.raises(ConfigError, match=r"something-something-v2-labels\.json lists 3 class names but "
                                          "MODEL.NUM_CLASSES is 4"):
        class_names(cfg)


def test_ava_names_come_from_the_label_map_by_action_id(tmp_path):
    (tmp_path / "labels.pbtxt").write_text('item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\n'
                                           'item {\n  name: "dance"\n  id: 3\n}\n')
    opts = ["AVA.ANNOTATION_DIR", str(tmp_path), "AVA.LABEL_MAP_FILE", "labels.pbtxt"]
    assert class_names(load_config(AVA_CFG, [*opts, "MODEL.NUM_CLASSES", "4"])) == \
        ["bend/bow (at the waist)", "2", "dance", "4"]  # output i is action id i + 1
    with pytest.raises(ConfigError, match=r"labels\.pbtxt names action ids up to 3 but MODEL.NUM_CLASSES is 2"):
        class_names(load_config(AVA_CFG, [*opts, "MODEL.NUM_CLASSES", "2"]))


@pytest.mark.slow
def test_an_installed_wheel_ships_the_lists_and_the_commands(tmp_path):
    """Built and installed (not editable) from a copy of the sources: the lists are package data, and the
    analysis command is declared."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(os.path.join(REPO, "setup.py"), source)
    shutil.copytree(os.path.join(REPO, "hiera_video"), source / "hiera_video",
                    ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel")],
                   check=True, capture_output=True, timeout=300)
    wheel = glob.glob(str(tmp_path / "wheel" / "*.whl"))[0]
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), wheel], check=True,
                   capture_output=True, timeout=300)
    code = ("import hiera_video.data.class_names as c; print(c.__file__); "
            "print(*[len(c.shipped_class_names(n)) for n in c.shipped_lists()])")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(tmp_path / "site" / "hiera_video" / "data" / "class_names.py"),
                                       "400 600 700"]
    entry_points = glob.glob(str(tmp_path / "site" / "hiera_video-*.dist-info" / "entry_points.txt"))[0]
    assert "hiera-analyze-predictions = hiera_video.cli.analyze_predictions:main" in open(entry_points).read()
