"""Top-k errors and multi-view score aggregation (duplicates, ensembles, missing views, merging ranks)."""
from __future__ import annotations

import io

import pytest
import torch

from hiera_video.evaluation.classification import MultiViewAggregator, topk_errors

# 4 clips, 6 classes; the label's rank in each row is 1, 2, 6 and 3.
LOGITS = torch.tensor([
    [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],
    [0.5, 0.4, 0.1, 0.0, 0.0, 0.0],
    [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
    [0.1, 0.7, 0.5, 0.0, 0.0, 0.0],
])
LABELS = torch.tensor([0, 1, 5, 0])


def test_topk_errors_on_known_inputs():
    assert topk_errors(LOGITS, LABELS) == pytest.approx([75.0, 25.0])
    assert topk_errors(LOGITS, LABELS, ks=(1, 2, 3)) == pytest.approx([75.0, 50.0, 25.0])


def test_topk_errors_with_soft_labels_and_k_above_class_count():
    soft = torch.nn.functional.one_hot(LABELS, 6).float() * 0.9 + 0.1 / 6  # label smoothing keeps the argmax
    assert topk_errors(LOGITS, soft) == pytest.approx([75.0, 25.0])
    assert topk_errors(LOGITS[:, :3], torch.tensor([0, 1, 2, 0]), ks=(1, 5)) == pytest.approx([75.0, 0.0])


def test_topk_errors_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"Labels have shape \(3,\)"):
        topk_errors(LOGITS, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="Soft labels"):
        topk_errors(LOGITS, torch.zeros(4, 5))
    with pytest.raises(ValueError, match="Logits"):
        topk_errors(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long))


# Video 0 (label 0): views disagree, so "sum" picks class 1 and "max" class 0. Video 1 (label 2): clear.
VIEW_SCORES = torch.tensor([
    [0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0],
    [0.1, 0.2, 0.7], [0.0, 0.3, 0.7], [0.2, 0.2, 0.6],
])
VIDEO_IDX = torch.tensor([0, 0, 0, 1, 1, 1])
VIEW_IDX = torch.tensor([0, 1, 2, 0, 1, 2])
VIDEO_LABELS = torch.tensor([0, 0, 0, 2, 2, 2])


def _aggregate(ensemble, rows=range(6), num_views=3, **kwargs):
    agg = MultiViewAggregator(num_videos=2, num_classes=3, ensemble=ensemble, num_views=num_views, **kwargs)
    rows = torch.tensor(list(rows))
    agg.update(VIEW_SCORES[rows], VIDEO_IDX[rows], VIEW_IDX[rows], labels=VIDEO_LABELS[rows])
    return agg


def test_sum_and_max_ensembles_pick_different_classes():
    sums = _aggregate("sum")
    torch.testing.assert_close(sums.scores[0], torch.tensor([1.4, 1.6, 0.0]))
    assert sums.finalize() == {"top1_acc": 50.0, "top5_acc": 100.0, "mean_class_acc": 50.0, "num_videos": 2,
                               "videos_with_missing_views": 0}
    maxes = _aggregate("max")
    torch.testing.assert_close(maxes.scores[0], torch.tensor([0.9, 0.8, 0.0]))
    assert maxes.finalize()["top1_acc"] == 100.0


def test_duplicate_views_are_counted_once():
    agg = _aggregate("sum")
    # Distributed padding repeats (video 0, view 0) and (video 1, view 2), even twice inside one batch.
    dup = torch.tensor([0, 5, 0])
    assert agg.update(VIEW_SCORES[dup] * 10, VIDEO_IDX[dup], VIEW_IDX[dup], labels=VIDEO_LABELS[dup]) == 0
    torch.testing.assert_close(agg.scores, _aggregate("sum").scores)
    assert agg.view_counts.tolist() == [3, 3]
    within_batch = _aggregate("sum", rows=[0, 0, 1, 2, 3, 4, 5, 5])
    torch.testing.assert_close(within_batch.scores, agg.scores)


def test_missing_views_are_reported_and_unseen_videos_not_scored():
    agg = _aggregate("sum", rows=[0, 1, 2, 3])  # video 1 has 1 of 3 views
    assert agg.finalize()["videos_with_missing_views"] == 1
    no_views = _aggregate("max", rows=[0, 1, 2])  # video 1 never seen: excluded, reported
    assert no_views.finalize() == {"top1_acc": 100.0, "top5_acc": 100.0, "mean_class_acc": 100.0, "num_videos": 1,
                                   "videos_with_missing_views": 1}
    assert [row["video"] for row in no_views.per_video_predictions()] == [0]


def test_per_video_predictions_give_mean_scores_for_sum():
    rows = _aggregate("sum").per_video_predictions()
    assert rows[0]["video"] == 0 and rows[0]["label"] == 0 and rows[0]["num_views"] == 3
    assert rows[0]["top5"] == [1, 0, 2]  # 5 clipped to the 3 classes
    assert rows[0]["scores"] == pytest.approx([1.6 / 3, 1.4 / 3, 0.0])
    assert rows[1]["top5"][0] == 2
    assert _aggregate("max").per_video_predictions()[0]["scores"] == pytest.approx([0.9, 0.8, 0.0])


def _state_via_bytes(agg):
    """What another rank's state looks like after a weights_only round trip (e.g. a gather or a file)."""
    buffer = io.BytesIO()
    torch.save(agg.state(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("ensemble", ["sum", "max"])
def test_merging_disjoint_ranks_equals_one_aggregator(ensemble):
    rank0, rank1 = _aggregate(ensemble, rows=[0, 2, 4]), _aggregate(ensemble, rows=[1, 3, 5])
    rank0.merge(_state_via_bytes(rank1))
    whole = _aggregate(ensemble)
    torch.testing.assert_close(rank0.scores, whole.scores)
    assert rank0.finalize() == whole.finalize()
    assert rank0.view_counts.tolist() == [3, 3]


def test_merging_overlapping_views_works_for_max_and_refuses_for_sum():
    rank0, rank1 = _aggregate("max", rows=[0, 1, 2, 3]), _aggregate("max", rows=[3, 4, 5, 0])
    rank0.merge(rank1)
    torch.testing.assert_close(rank0.scores, _aggregate("max").scores)
    assert rank0.view_counts.tolist() == [3, 3]
    with pytest.raises(ValueError, match="2 .video, view. pairs were summed on both sides"):
        _aggregate("sum", rows=[0, 1, 2, 3]).merge(_aggregate("sum", rows=[3, 4, 5, 0]))
    with pytest.raises(ValueError, match="different ensemble"):
        _aggregate("sum").merge(_aggregate("max"))


def test_bad_updates_raise_clear_errors():
    agg = MultiViewAggregator(num_videos=2, num_classes=3, num_views=3)
    with pytest.raises(IndexError, match="video_idx 2 out of range"):
        agg.update(VIEW_SCORES[:1], torch.tensor([2]), torch.tensor([0]))
    with pytest.raises(IndexError, match="view_idx 3 out of range"):
        agg.update(VIEW_SCORES[:1], torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"Scores must be \[N, 3\]"):
        agg.update(torch.zeros(1, 4), torch.tensor([0]), torch.tensor([0]))
    agg.update(VIEW_SCORES[:1], torch.tensor([0]), torch.tensor([0]), labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="Video 0 has label 1, but other views say 0"):
        agg.update(VIEW_SCORES[1:2], torch.tensor([0]), torch.tensor([1]), labels=torch.tensor([1]))
    assert agg.view_counts.tolist() == [1, 0]  # the refused row was not counted
    with pytest.raises(ValueError, match="Video 1 has label"):  # rows of one batch disagreeing
        agg.update(VIEW_SCORES[:2], torch.tensor([1, 1]), torch.tensor([0, 1]), labels=torch.tensor([2, 1]))
    with pytest.raises(ValueError, match="Unknown ensemble"):
        MultiViewAggregator(2, 3, ensemble="mean")


def test_finalize_without_labels_raises():
    agg = MultiViewAggregator(num_videos=2, num_classes=3)
    agg.update(VIEW_SCORES[:2], VIDEO_IDX[:2], VIEW_IDX[:2])
    with pytest.raises(ValueError, match="No labelled video"):
        agg.finalize()
    assert agg.per_video_predictions()[0]["label"] == -1
