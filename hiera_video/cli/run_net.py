"""Train and/or test a config: `python tools/run_net.py --cfg configs/Kinetics/HIERA_L_MAE.yaml [KEY VALUE ...]`.

Several --cfg files run one after the other (PySlowFast behaviour). Works as a plain command (one process, or
NUM_GPUS / NUM_CPU_PROCS processes it starts itself), under torchrun, and on several machines with --init_method
tcp://HOST:PORT --num_shards N --shard_id i.
"""
from __future__ import annotations

import argparse

from hiera_video.config import load_config
from hiera_video.engine.runner import launch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", dest="cfg_files", nargs="+", required=True, help="config YAML file(s)")
    parser.add_argument("--init_method", default=None,
                        help="process-group rendezvous for manual multi-machine runs, e.g. tcp://host:9999")
    parser.add_argument("--num_shards", type=int, default=None, help="machines in the job (sets NUM_SHARDS)")
    parser.add_argument("--shard_id", type=int, default=None, help="this machine's index (sets SHARD_ID)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. SOLVER.BASE_LR 1e-4")
    return parser.parse_args(argv)


def split_cfg_and_opts(values: list[str]) -> tuple[list[str], list[str]]:
    """`--cfg a.yaml b.yaml KEY VALUE ...`: config files are the leading .yaml/.yml names, the rest overrides."""
    files = []
    for value in values:
        if not value.endswith((".yaml", ".yml")):
            break
        files.append(value)
    if not files:
        raise SystemExit(f"--cfg needs at least one .yaml file; got {values[0]!r}")
    return files, values[len(files):]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.cfg_files, trailing = split_cfg_and_opts(args.cfg_files)
    opts = [o for o in trailing + args.opts if o != "--opts"]
    if args.num_shards is not None:
        opts += ["NUM_SHARDS", str(args.num_shards)]
    if args.shard_id is not None:
        opts += ["SHARD_ID", str(args.shard_id)]
    for path in args.cfg_files:
        launch(load_config(path, opts), init_method=args.init_method)


if __name__ == "__main__":
    main()
