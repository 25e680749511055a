"""Orchestration: the trainer loop, running a config (runner), launching processes (launch) and Slurm jobs,
checkpoints, the optimiser and schedules, run logging, stop signals."""
