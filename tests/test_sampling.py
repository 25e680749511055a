"""Temporal sampling: clip spans, random/centre/uniform clips, SSv2 segments, repeated clips, index unions."""
from __future__ import annotations

import numpy as np
import pytest

from hiera_video.data.sampling import (
    center_clip_indices,
    clip_span,
    jittered_segment_views,
    random_clip_indices,
    segment_indices,
    uniform_view_indices,
    union_indices,
)


def test_clip_span_follows_pyslowfast():
    assert clip_span(16, 4, 30, 30) == 64
    assert clip_span(16, 4, 25, 30) == pytest.approx(16 * 4 * 25 / 30)
    assert clip_span(8, 8, 60, 30) == 128
    for bad in [(0, 4, 30, 30), (16, 0, 30, 30), (16, 4, 0, 30), (16, 4, 30, -1)]:
        with pytest.raises(ValueError):
            clip_span(*bad)


def test_random_clip_stays_inside_the_video_with_the_sampling_stride():
    rng = np.random.default_rng(0)
    starts, ends = [], []
    for _ in range(300):
        clip = random_clip_indices(300, 16, 4, 30, 30, rng)
        assert clip.dtype == np.int64 and clip.shape == (16,)
        assert set(np.diff(clip)) <= {4, 5}  # linspace(start, start + 63, 16) steps by 4.2
        assert clip[-1] - clip[0] in (62, 63, 64)
        starts.append(clip[0])
        ends.append(clip[-1])
    assert min(starts) <= 3 and max(ends) >= 296  # starts cover the whole video
    assert min(starts) >= 0 and max(ends) <= 299


def test_random_clip_resamples_other_frame_rates():
    clip = random_clip_indices(1000, 8, 8, 60, 30, np.random.default_rng(1))
    assert clip[-1] - clip[0] in (126, 127, 128)  # a 60 fps source spans 128 frames for 8x8 at 30 fps
    assert set(np.diff(clip)) <= {18, 19}


def test_random_clip_is_reproducible_from_the_generator():
    a = random_clip_indices(500, 16, 4, 30, 30, np.random.default_rng(7))
    b = random_clip_indices(500, 16, 4, 30, 30, np.random.default_rng(7))
    c = random_clip_indices(500, 16, 4, 30, 30, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_short_video_repeats_its_last_frame():
    clip = random_clip_indices(10, 16, 4, 30, 30, np.random.default_rng(0))
    assert clip[0] == 0 and clip.max() == 9
    assert (clip == 9).sum() > 8
    assert np.all(np.diff(clip) >= 0)
    assert np.array_equal(center_clip_indices(10, 16, 4, 30, 30), clip)
    with pytest.raises(ValueError):
        random_clip_indices(0, 16, 4, 30, 30, np.random.default_rng(0))


def test_uniform_views_span_the_video_evenly():
    views = uniform_view_indices(300, 16, 4, 30, 30, num_views=5)
    assert len(views) == 5
    assert views[0][0] == 0 and views[-1][-1] == 299
    starts = [view[0] for view in views]
    assert np.allclose(np.diff(starts), (300 - 64) / 4, atol=1)
    assert np.array_equal(views[2], center_clip_indices(300, 16, 4, 30, 30))
    assert all(np.array_equal(a, b) for a, b in zip(views, uniform_view_indices(300, 16, 4, 30, 30, 5)))


def test_one_view_is_the_centre_clip():
    (view,) = uniform_view_indices(301, 16, 4, 30, 30, num_views=1)
    centre = center_clip_indices(301, 16, 4, 30, 30)
    assert np.array_equal(view, centre)
    assert abs(centre[0] - (300 - centre[-1])) <= 1
    with pytest.raises(ValueError):
        uniform_view_indices(300, 16, 4, 30, 30, num_views=0)


def pyslowfast_segments(video_length, num_frames):
    """PySlowFast's SSv2 middle-frame rule, written out as in its dataset code (test mode)."""
    seg_size = float(video_length - 1) / num_frames
    out = []
    for i in range(num_frames):
        start, end = int(np.round(seg_size * i)), int(np.round(seg_size * (i + 1)))
        out.append((start + end) // 2)
    return out


@pytest.mark.parametrize("video_len", [5, 16, 47, 120])
def test_segment_indices_match_pyslowfast_in_test_mode(video_len):
    assert segment_indices(video_len, 16, train=False).tolist() == pyslowfast_segments(video_len, 16)


def test_training_segments_pick_one_random_frame_per_segment():
    rng = np.random.default_rng(0)
    size = 99 / 8
    draws = np.stack([segment_indices(100, 8, train=True, rng=rng) for _ in range(200)])
    for k in range(8):
        low, high = round(size * k), round(size * (k + 1))
        assert draws[:, k].min() == low and draws[:, k].max() == high
    with pytest.raises(ValueError, match="rng"):
        segment_indices(100, 8, train=True)


def test_jittered_segment_views_are_deterministic_offsets_inside_segments():
    assert np.array_equal(jittered_segment_views(100, 8, 1)[0], segment_indices(100, 8, train=False))
    views = jittered_segment_views(100, 8, 3)
    assert len(views) == 3
    assert np.all(views[0] < views[1]) and np.all(views[1] < views[2])
    size = 99 / 8
    for k in range(8):
        low, high = round(size * k), round(size * (k + 1))
        assert all(low <= view[k] <= high for view in views)


def test_union_decodes_overlapping_views_once():
    views = uniform_view_indices(50, 16, 4, 30, 30, num_views=3)  # shorter than a clip: the views coincide
    rng = np.random.default_rng(0)
    views += [random_clip_indices(300, 16, 4, 30, 30, rng=rng) for _ in range(2)]
    unique, positions = union_indices(views)
    assert np.array_equal(unique, np.unique(np.concatenate(views)))
    assert len(unique) <= len(set(views[0])) + 32
    for view, where in zip(views, positions):
        assert np.array_equal(unique[where], view)
    with pytest.raises(ValueError):
        union_indices([])
