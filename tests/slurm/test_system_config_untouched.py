"""Runs after every other test of the session (conftest.py orders it last): the test cluster, which lives in its
own directory, has left the system's Slurm and munge config, state, logs and pid files as they were."""
from __future__ import annotations


def test_system_slurm_and_munge_paths_are_untouched_by_the_test_cluster(slurm_cluster, system_paths):
    changes = system_paths.changes()
    assert not changes, "the tests changed system Slurm/munge paths:\n" + "\n".join(changes)
