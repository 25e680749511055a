"""Dataset preparation jobs behind `tools/prepare_data.py`: resize videos, write Kinetics-format lists, check
listed videos, cut AVA movies and extract their frames.

One module per job (resize, lists, check, ava); `common` holds what they share: the parallel, crash-isolating
runner, atomic publication of outputs under temporary names, failure reports and the end-of-run summary; `cli`
parses the command line. Every job skips outputs that already exist and verify, never publishes a partial file
under a final name, and lists bad inputs instead of stopping.
"""
