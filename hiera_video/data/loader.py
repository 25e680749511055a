"""DataLoader construction: a resumable distributed sampler with per-sample seeds, collate, workers.

Every sample is addressed by a `SampleKey(index, seed)`. The seed depends only on (RNG_SEED, epoch, position in the
epoch's global order), so augmentation does not depend on the number of workers, ranks draw different
augmentations, and a run resumed mid-epoch sees exactly the same samples and augmentations as an uninterrupted one.
torch's DistributedSampler cannot skip to an iteration nor hand out seeds, hence this small sampler.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple

import cloudpickle
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hiera_video.utils.seeding import derive_seed
from hiera_video.utils.stop_signals import ignore_stop_signals, stop_signals_held


class SampleKey(NamedTuple):
    """What a dataset's __getitem__ receives: the sample index and a seed for its random choices."""

    index: int
    seed: int


class ResumableSampler(Sampler[SampleKey]):
    """Shards a dataset over ranks, shuffles per epoch, and can start an epoch at a given local batch.

    All ranks see the same number of samples per epoch: the global order is padded by repeating its start
    (training) or, with `pad=False`, the last rank may get fewer (evaluation, where duplicates matter).
    """

    def __init__(self, dataset_size: int, rank: int, world_size: int, shuffle: bool, seed: int,
                 pad: bool = True) -> None:
        if dataset_size == 0:
            raise ValueError("The dataset is empty: no samples to iterate over")
        self.dataset_size = dataset_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.pad = pad
        self.epoch = 0
        self.start_sample = 0

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        """Select the epoch's order and skip the first `start_sample` samples of this rank (mid-epoch resume)."""
        self.epoch = epoch
        self.start_sample = start_sample

    def _global_order(self) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.dataset_size)
        else:
            order = np.arange(self.dataset_size)
        if self.pad:
            total = math.ceil(self.dataset_size / self.world_size) * self.world_size
            order = np.resize(order, total)  # repeats from the start
        return order

    def _positions(self) -> np.ndarray:
        return np.arange(self.rank, len(self._global_order()), self.world_size)

    def __iter__(self) -> Iterator[SampleKey]:
        order = self._global_order()
        for position in self._positions()[self.start_sample:]:
            yield SampleKey(int(order[position]), derive_seed(self.seed, self.epoch, int(position)))

    def __len__(self) -> int:
        return max(0, len(self._positions()) - self.start_sample)

    def samples_per_epoch(self) -> int:
        """Samples this rank sees in a full epoch."""
        return len(self._positions())


# Keys whose tensors hold one row per clip ([V, ...]); every other value belongs to the sample as a whole.
PER_CLIP_KEYS = ("video", "view")


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenates the clips of all samples and repeats per-sample values once per clip, keeping rows aligned.

    A sample's `video` is [V,C,T,H,W]: V = 1 for a plain training clip, several for repeated sampling or test
    views. `bad_files` lists are joined; other non-numeric values are kept as per-sample lists.
    """
    counts = torch.tensor([s["video"].shape[0] for s in samples])
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in PER_CLIP_KEYS:
            batch[key] = torch.cat(values)
        elif key == "bad_files":
            batch[key] = [path for paths in values for path in paths]
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values).repeat_interleave(counts, dim=0)
        elif isinstance(values[0], (int, float)):
            batch[key] = torch.tensor(values).repeat_interleave(counts)
        else:
            batch[key] = values
    return batch


# DATA_LOADER.MP_CONTEXT: how workers start. "auto" spawns them when CUDA is available (a forked CUDA context is
# unusable) and forks them otherwise; the others force one (tests take the cluster's spawn branch on the CPU).
MP_CONTEXTS = ("auto", "fork", "spawn", "forkserver")


def start_method(mp_context: str, num_workers: int) -> str | None:
    """The multiprocessing start method of the workers (None without workers)."""
    if mp_context not in MP_CONTEXTS:
        raise ValueError(f"DATA_LOADER.MP_CONTEXT={mp_context!r}: choose one of {', '.join(MP_CONTEXTS)}")
    if num_workers == 0:
        return None
    if mp_context == "auto":
        return "spawn" if torch.cuda.is_available() else "fork"
    return mp_context


def _worker_init(worker_id: int) -> None:
    # The training process owns the stop signals; a worker ignores them (a spawned one would die of SIGUSR2).
    ignore_stop_signals()
    # Each worker decodes with one thread: the processes are the parallelism, and oversubscription slows decoding.
    torch.set_num_threads(1)


class _Cloudpickled:
    """`obj` (a dataset, a collate function) as spawned workers receive it: through cloudpickle, since datasets made
    of closures (clip planners, transforms, a registered builder's) defeat the standard pickler of spawn and
    forkserver. Everything else is forwarded to `obj`."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __getstate__(self) -> bytes:
        return cloudpickle.dumps(self.obj)

    def __setstate__(self, payload: bytes) -> None:
        self.obj = cloudpickle.loads(payload)

    def __getattr__(self, name: str) -> Any:
        if name == "obj":  # not set yet: unpickling
            raise AttributeError(name)
        return getattr(self.obj, name)

    def __len__(self) -> int:
        return len(self.obj)

    def __getitem__(self, key: Any) -> Any:
        return self.obj[key]

    def __call__(self, *args: Any) -> Any:
        return self.obj(*args)


class _Loader(DataLoader):
    """A DataLoader whose workers start with the stop signals held back until `_worker_init` ignores them."""

    def __iter__(self):
        with stop_signals_held():
            return super().__iter__()


def build_loader(dataset: Dataset, sampler: ResumableSampler, batch_size: int, num_workers: int,
                 pin_memory: bool, drop_last: bool, collate_fn: Callable = collate_samples,
                 mp_context: str = "auto") -> DataLoader:
    """A DataLoader over `dataset` with `sampler`; `batch_size` is per process. Workers are persistent (started
    once, not every epoch) and ignore the stop signals; spawned ones receive the dataset and `collate_fn` through
    cloudpickle (`loader.dataset` then forwards to the dataset)."""
    method = start_method(mp_context, num_workers)
    if method in ("spawn", "forkserver"):
        dataset, collate_fn = _Cloudpickled(dataset), _Cloudpickled(collate_fn)  # type: ignore[assignment]
    return _Loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        drop_last=drop_last,
        collate_fn=collate_fn,
        worker_init_fn=_worker_init,
        persistent_workers=num_workers > 0,
        # A private generator: creating an iterator otherwise draws from the global torch RNG, which would make
        # model randomness (drop path, masking) depend on where an epoch was resumed. Samples are seeded by
        # their SampleKey, not by this generator.
        generator=torch.Generator().manual_seed(0),
        multiprocessing_context=method,
    )
