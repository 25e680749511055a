"""Low-label fine-tuning and linear probing: DATA.TRAIN_FRACTION and MODEL.FREEZE_BACKBONE."""
from __future__ import annotations

import os
from collections import Counter

import pytest
import torch

from hiera_video.config import load_config
from hiera_video.data.build import build_dataset
from hiera_video.data.demo import write_demo_dataset
from hiera_video.data.subset import class_balanced_indices
from hiera_video.models.build import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")


def test_class_balanced_subset_is_seeded_nested_and_keeps_every_class():
    labels = [0] * 40 + [1] * 20 + [2] * 3 + [-1] * 5
    quarter = class_balanced_indices(labels, 0.25, seed=3)
    assert Counter(labels[i] for i in quarter) == {0: 10, 1: 5, 2: 1}  # at least one of the rare class
    assert quarter == class_balanced_indices(labels, 0.25, seed=3)
    assert quarter != class_balanced_indices(labels, 0.25, seed=4)
    assert set(quarter) <= set(class_balanced_indices(labels, 0.5, seed=3))  # a smaller fraction nests
    assert class_balanced_indices(labels, 1.0, seed=0) == list(range(63))  # unlabelled entries never train
    with pytest.raises(ValueError, match="DATA.TRAIN_FRACTION"):
        class_balanced_indices(labels, 0.0, seed=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "motion")
    write_demo_dataset(root, num_classes=2, train_per_class=8, val_per_class=1, test_per_class=1, num_frames=8,
                       size=32)
    return root


def _cfg(root, *opts):
    return load_config(DEMO_CFG, ["DATA.PATH_TO_DATA_DIR", root, "DATA.PATH_PREFIX", root, "MODEL.NUM_CLASSES", "2",
                                  "HIERA.STAGES", "[1, 1, 1]", "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4",
                                  "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", *opts])


def test_train_fraction_takes_a_balanced_subset_of_the_training_list_only(dataset):
    subset = build_dataset(_cfg(dataset, "DATA.TRAIN_FRACTION", "0.25", "RNG_SEED", "1"), "train")
    videos = [record.video_id for record in subset.records]
    assert Counter(record.label for record in subset.records) == {0: 2, 1: 2}
    other_seed = build_dataset(_cfg(dataset, "DATA.TRAIN_FRACTION", "0.25", "RNG_SEED", "2"), "train")
    assert videos != [record.video_id for record in other_seed.records]
    assert len(build_dataset(_cfg(dataset, "DATA.TRAIN_FRACTION", "0.25"), "test")) == 2  # evaluation: all


def test_frozen_backbone_trains_only_the_batchnorm_probe_head(dataset):
    model = build_model(_cfg(dataset, "MODEL.FREEZE_BACKBONE", "True", "HIERA.DROP_PATH_RATE", "0.5"))
    assert isinstance(model.norm, torch.nn.BatchNorm1d) and not model.norm.affine
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {"head.projection.weight",
                                                                                "head.projection.bias"}
    model.train()
    assert model.norm.training and not model.blocks.training  # drop path off in the frozen backbone
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    loss = model(torch.randn(4, 3, 4, 32, 32)).logsumexp(dim=1).mean()
    loss.backward()
    optimizer.step()
    changed = {name for name, value in model.state_dict().items() if not torch.equal(value, before[name])}
    assert changed == {"head.projection.weight", "head.projection.bias", "norm.running_mean", "norm.running_var",
                       "norm.num_batches_tracked"}
