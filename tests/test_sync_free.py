"""Graph-safe training steps: no host-device synchronisation outside log steps, torch.compile(fullgraph=True) of the
MAE and the classifier with eager numerics, and the TRAIN.COMPILE switch."""
from __future__ import annotations

import collections
import os
import statistics
from collections.abc import Callable

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hiera_video.config import ConfigError, load_config
from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine.logging import read_json_stats
from hiera_video.engine.preemption import StopFlag
from hiera_video.engine.runner import run
from hiera_video.engine.step_stats import StepStats
from hiera_video.engine.trainer import Trainer
from hiera_video.models.build import build_model
from hiera_video.tasks import build_task
from hiera_video.tasks.classification import soft_target_cross_entropy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")
aten = torch.ops.aten

# Operations whose result depends on tensor values the host must see first: on a GPU each one waits for the device.
DATA_DEPENDENT = {aten.nonzero, aten._local_scalar_dense, aten.masked_select, aten.masked_scatter,
                  aten.masked_scatter_, aten.equal, aten._unique2, aten.unique_consecutive, aten.unique_dim}
BOOLEAN_INDEXED = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


class HostReads(TorchDispatchMode):
    """Counts, by operation, what makes the host wait for the device: the DATA_DEPENDENT operations (`.item()`,
    `bool(t)`, `float(t)` are _local_scalar_dense), indexing with a bool mask, and the host copies `.tolist()` and
    `.numpy()` (on the CPU they bypass the dispatcher, so the methods themselves are counted).

    `host_scalars()`: the tensors that live in host memory whatever the device, whose reads are no sync: the
    optimiser's per-parameter step counters (AdamW keeps them on the CPU unless fused or capturable, and reads them
    with `.item()`). On this CPU-only machine they share the device with everything else, so they are named, not
    guessed.
    """

    def __init__(self, host_scalars: Callable[[], list[torch.Tensor]] = list) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.host_scalars = host_scalars
        self._methods: dict[str, object] = {}

    def __enter__(self):
        for name in ("tolist", "numpy"):
            original = self._methods[name] = getattr(torch.Tensor, name)

            def counted(tensor, *args, _name=name, _original=original, **kwargs):
                self.counts[f"Tensor.{_name}"] += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, method in self._methods.items():
            setattr(torch.Tensor, name, method)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in DATA_DEPENDENT:
            if not (packet is aten._local_scalar_dense and any(args[0] is t for t in self.host_scalars())):
                self.counts[str(func)] += 1
        elif packet in BOOLEAN_INDEXED and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.counts[f"{func}(bool mask)"] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "motion")
    write_demo_dataset(root, num_classes=2, train_per_class=4, val_per_class=2, test_per_class=2, num_frames=16,
                       size=32)
    return root


def tiny_cfg(dataset_root, output_dir, task, *opts):
    """The demo config shrunk to a 4-frame 32x32 clip, a 3-stage 16-channel Hiera (and a 1-block MAE decoder)."""
    arch = "mae_hiera_base_16x224" if task == "mae" else "hiera_base_16x224"
    base = ["TASK", task, "MODEL.ARCH", arch, "OUTPUT_DIR", str(output_dir), "DATA.PATH_TO_DATA_DIR", dataset_root,
            "DATA.PATH_PREFIX", dataset_root, "MODEL.NUM_CLASSES", "2", "HIERA.STAGES", "[1, 1, 1]",
            "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_CROP_SIZE",
            "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "4", "SOLVER.MAX_EPOCH", "1",
            "SOLVER.WARMUP_EPOCHS", "0.5", "DATA_LOADER.NUM_WORKERS", "0", "TRAIN.EVAL_PERIOD", "0",
            "TEST.ENABLE", "False", "TENSORBOARD.ENABLE", "False", "MAE.MASK_RATIO", "0.5",
            "MAE.DECODER_EMBED_DIM", "32", "MAE.DECODER_DEPTH", "1", "MAE.DECODER_NUM_HEADS", "1"]
    return load_config(DEMO_CFG, base + list(opts))


def optimiser_step_counters(trainer: Trainer) -> Callable[[], list[torch.Tensor]]:
    return lambda: [state["step"] for state in trainer.optimizer.state.values()]


# ------------------------------------------------------------------------------------------- sync-free steps
@pytest.mark.parametrize("task", ["classification", "mae"])
def test_a_training_step_reads_nothing_on_the_host(dataset, tmp_path, single_process, task):
    # Two accumulated micro-batches and gradient clipping: every branch of the optimisation step.
    cfg = tiny_cfg(dataset, tmp_path, task, "TRAIN.ACCUM_ITER", "2", "SOLVER.CLIP_GRAD_L2NORM", "1.0")
    trainer = Trainer(cfg, build_task(cfg, single_process), single_process)
    loader, _ = trainer.task.train_loader()
    batches = iter(loader)
    micro_batches = [next(batches), next(batches)]
    before = [p.detach().clone() for p in trainer.model.parameters()]
    counts = []
    for step in range(2):  # the first step creates the optimiser's state
        with HostReads(optimiser_step_counters(trainer)) as reads:
            stats = trainer._optimisation_step(trainer.model, micro_batches, 0, step)
        counts.append(dict(reads.counts))
    print(f"host reads per step: {counts}")  # the figure of benchmarks/RESULTS.md
    assert counts == [{}, {}]

    assert all(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # the step stepped
    expected = {"loss", "grad_norm"} | ({"top1_err", "top5_err"} if task == "classification" else set())
    assert set(stats) == expected and all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in stats.values())
    with HostReads() as reads:  # the counter sees a host read
        stats["loss"].item()
    assert reads.total == 1


def test_steps_between_log_lines_read_nothing_and_the_log_keeps_every_step(dataset, tmp_path, single_process,
                                                                          monkeypatch):
    """A whole epoch of the trainer loop (learning rate, data, step, weight EMA, meters; with activation
    checkpointing) up to its one log line reads nothing; the log line then has every step's values."""
    cfg = tiny_cfg(dataset, tmp_path, "classification", "TRAIN.BATCH_SIZE", "2", "LOG_PERIOD", "4",
                   "DATA_LOADER.NUM_WORKERS", "1", "MODEL_EMA.ENABLE", "True", "MODEL.ACT_CHECKPOINT", "True")
    trainer = Trainer(cfg, build_task(cfg, single_process), single_process)
    loader, sampler = trainer.task.train_loader()
    trainer.train_model, trainer.steps_per_epoch = trainer.model, 4
    sampler.set_epoch(0, 0)
    iter(loader)  # starts the (persistent) decoding worker outside the counter: the epoch's iterator reuses it
    read, counts_at_read, steps_read = StepStats.read, [], []

    def counting_read(self, *args, **kwargs):
        counts_at_read.append(dict(reads.counts))
        steps = read(self, *args, **kwargs)
        steps_read.append(steps)
        return steps

    monkeypatch.setattr(StepStats, "read", counting_read)
    with HostReads(optimiser_step_counters(trainer)) as reads:
        trainer.train_epoch(loader, 0, 0, StopFlag())
    assert counts_at_read[0] == {} and reads.counts["Tensor.tolist"] >= 1  # the read brought the values over
    assert [len(steps) for steps in steps_read] == [4]  # read once, after the 4th step
    stats = read_json_stats(str(tmp_path / "json_stats.log"))
    line, epoch = (next(s for s in stats if s["_type"] == kind) for kind in ("train_iter", "train_epoch"))
    losses = [step["loss"] for step in steps_read[0]]
    assert epoch["loss"] == pytest.approx(sum(losses) / 4, abs=1e-5)
    assert line["iter"] == "4/4" and line["loss"] == pytest.approx(statistics.median(losses), abs=1e-5)


# ----------------------------------------------------------------------------------------------- compile
def _loss_and_grads(model, x, loss_of):
    model.zero_grad()
    torch.manual_seed(1)  # the MAE's random mask
    loss = loss_of(model, x)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["mae", "classification"])
def test_fullgraph_compile_trains_like_eager(dataset, tmp_path, task):
    # The models the training tests run (the classifier's graphs are then in inductor's cache for the next test).
    model = build_model(tiny_cfg(dataset, tmp_path, task))
    if task == "mae":
        def loss_of(m, x):
            return m(x, mask_ratio=0.5)[0]
    else:
        def loss_of(m, x):
            return soft_target_cross_entropy(m(x), torch.eye(2)[[0, 1, 1, 0]])
    x = torch.randn(4, 3, 4, 32, 32)
    eager_loss, eager_grads = _loss_and_grads(model, x, loss_of)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)  # any graph break raises
    # Inductor draws random numbers with its own generator unless told to call torch's: the same mask as eager.
    with torch._inductor.config.patch(fallback_random=True):
        loss, grads = _loss_and_grads(compiled, x, loss_of)
    torch.testing.assert_close(loss, eager_loss, rtol=0, atol=1e-5)
    for grad, expected in zip(grads, eager_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_train_compile_default_trains_like_eager(dataset, tmp_path, single_process):
    losses = {}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # reset() leaves the counts of graphs compiled by earlier tests
    for mode in ("", "default"):
        out = tmp_path / (mode or "eager")
        run(single_process, tiny_cfg(dataset, out, "classification", "TRAIN.COMPILE", mode, "LOG_PERIOD", "1"))
        losses[mode] = [s["loss"] for s in read_json_stats(str(out / "json_stats.log")) if s["_type"] == "train_iter"]
        compiled_graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert compiled_graphs == (1 if mode else 0)  # the whole model in one graph, built once
    assert len(losses[""]) == len(losses["default"]) == 2
    assert losses["default"] == pytest.approx(losses[""], abs=1e-5)


def test_train_compile_takes_only_torch_compile_modes(dataset, tmp_path):
    with pytest.raises(ConfigError, match=r'TRAIN.COMPILE must be one of "", default, reduce-overhead, '
                                          r"max-autotune; got 'fast'"):
        tiny_cfg(dataset, tmp_path, "classification", "TRAIN.COMPILE", "fast")
