"""The command-line tools: `python tools/<name>.py` from a clone, or the installed commands (hiera-run,
hiera-submit, hiera-ava-eval, hiera-model-info, hiera-plot-logs, hiera-visualize-ava, hiera-visualize-mae,
hiera-analyze-predictions)."""
