"""Training statistics kept on the device between log steps, and the stop on a non-finite loss.

Reading a tensor on the host (`loss.item()`, `float(stat)`) makes the host wait until the device has finished
everything queued before it: the host can no longer queue the next step while the device works, and CUDA graphs
cannot capture such a step. So every step's loss and statistics stay on the device, and so does the finiteness
check: each micro-batch records, on the device, whether its loss was finite, and the first iteration whose loss was
not. `read()`, at log steps, before checkpoints and at the end of an epoch, brings all of it to the host in one
collective and then stops the run, naming that first iteration on every rank.
"""
from __future__ import annotations

import logging

import torch

from hiera_video.utils import distributed as du

logger = logging.getLogger(__name__)

_FLAGS = 4  # per rank: epoch, iteration and value of the first non-finite loss; the count of non-finite losses


class StepStats:
    """One process's training statistics since the last `read`, and its non-finite losses, on `device`."""

    def __init__(self, device: torch.device) -> None:
        self._keys: tuple[str, ...] = ()
        self._pending: list[torch.Tensor] = []  # per step: float64 [len(_keys)]
        self._first_bad = torch.zeros(3, dtype=torch.float64, device=device)  # epoch, iteration (0-based), loss
        self._bad_count = torch.zeros((), dtype=torch.float64, device=device)  # non-finite micro-batch losses

    def check_loss(self, loss: torch.Tensor, epoch: int, iteration: int) -> None:
        """Records on the device whether `loss` of `epoch`, `iteration` (0-based) is finite, reading nothing."""
        loss = loss.detach().to(torch.float64)
        bad = ~torch.isfinite(loss)
        found = torch.stack([torch.full_like(loss, epoch), torch.full_like(loss, iteration), loss])
        self._first_bad.copy_(torch.where(bad & (self._bad_count == 0), found, self._first_bad))
        self._bad_count.add_(bad)

    def add(self, values: dict[str, torch.Tensor]) -> None:
        """One optimisation step's statistics (0-dim tensors, the same keys every step), kept until `read`."""
        keys = tuple(values)
        if self._pending and keys != self._keys:
            raise ValueError(f"step statistics changed from {self._keys} to {keys} between two reads")
        self._keys = keys
        self._pending.append(torch.stack([value.detach().to(torch.float64) for value in values.values()]))

    def read(self, last_checkpoint: str, skip_nonfinite: bool) -> list[dict[str, float]]:
        """The statistics of every step since the last read, in step order, each averaged over the ranks (a
        collective: every rank calls it after the same steps).

        When a loss was not finite on any rank, raises the same FloatingPointError on every rank, naming the first
        such iteration, its ranks and `last_checkpoint`; with `skip_nonfinite` (fp16, whose gradient scaler skipped
        those steps) it only warns.
        """
        if not self._pending:
            return []
        steps = torch.stack(self._pending)
        flags = torch.cat([self._first_bad, self._bad_count.view(1)])
        gathered = du.all_gather_tensor(torch.cat([steps.flatten(), flags])).cpu()  # the one host read
        self._pending.clear()
        self._first_bad.zero_()
        self._bad_count.zero_()
        _report_nonfinite(gathered[:, -_FLAGS:], last_checkpoint, skip_nonfinite)
        means = gathered[:, :-_FLAGS].mean(dim=0).view(steps.shape)
        return [dict(zip(self._keys, row)) for row in means.tolist()]


def _report_nonfinite(flags: torch.Tensor, last_checkpoint: str, skip_nonfinite: bool) -> None:
    """Raises (or warns, `skip_nonfinite`) about the earliest non-finite loss in the per-rank `flags` [ranks, 4]."""
    bad_ranks = [rank for rank, count in enumerate(flags[:, 3].tolist()) if count > 0]
    if not bad_ranks:
        return
    first = min(tuple(flags[rank, :2].tolist()) for rank in bad_ranks)
    ranks = [rank for rank in bad_ranks if tuple(flags[rank, :2].tolist()) == first]
    epoch, iteration = int(first[0]), int(first[1])
    message = (f"Loss is {flags[ranks[0], 2].item()} on rank {', '.join(map(str, ranks))} at epoch {epoch + 1}, "
               f"iteration {iteration + 1}; last good checkpoint: {last_checkpoint or 'none yet'}")
    if not skip_nonfinite:
        raise FloatingPointError(f"{message}. Lower SOLVER.BASE_LR, raise warmup or enable SOLVER.CLIP_GRAD_L2NORM, "
                                 "then resume.")
    count = int(flags[:, 3].sum())
    logger.warning("%s: the fp16 gradient scaler skips such steps (%d non-finite micro-batch losses since the "
                   "last log line)", message, count)
