"""Command line: ``s2dc pretrain`` and ``s2dc export-encoder``."""

from __future__ import annotations

import argparse
import sys


def _pretrain(args: argparse.Namespace) -> int:
    from .train.config import config_from_args
    from .train.pretrain import pretrain

    cfg = config_from_args(args)
    if not cfg.data.source:
        raise ValueError("data.source is required: pass --data.source <dataset.json or folder of NIfTI volumes>")
    summary = pretrain(cfg)
    losses = summary["losses_this_run"]
    if losses:
        print(f"pretrained to step {summary['steps']}: loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
              f"checkpoint {summary['checkpoint']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_encoder

    report = export_encoder(args.checkpoint, args.output, which=args.which)
    print(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .train.config import add_arguments

    parser = argparse.ArgumentParser(prog="s2dc", description="S²DC self-supervised pretraining for 3-D medical images")
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser(
        "pretrain", help="pretrain a Swin encoder with S²DC",
        description="Pretrain a SwinUNETR encoder with S²DC. Options are --section.field; a --config YAML "
                    "with the same sections can hold them. Under torchrun every process runs this command.",
    )
    add_arguments(pre)
    pre.set_defaults(func=_pretrain)
    exp = sub.add_parser(
        "export-encoder", help="write encoder weights loadable into monai SwinUNETR(use_v2=True)",
        description="Extract the encoder of a pretraining checkpoint as SwinUNETR 'swinViT.*' weights, "
                    "check that they load strictly into SwinUNETR(use_v2=True) and print the report.",
    )
    exp.add_argument("checkpoint", help="pretraining checkpoint (run.out_dir/checkpoints/step_XXXXXXXX.pt)")
    exp.add_argument("output", help="output .pt file")
    exp.add_argument("--which", choices=("teacher", "student"), default="teacher",
                     help="export the EMA teacher (default) or the student encoder")
    exp.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data.volumes import DataError

    try:
        return args.func(args)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"s2dc {args.command}: error: {err}", file=sys.stderr)
        return 2


def entry() -> None:
    """Console-script entry: tune the CPU allocator (see :mod:`s2dc.runtime`), then run :func:`main`."""
    from .runtime import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()
    sys.exit(main())


if __name__ == "__main__":
    entry()
