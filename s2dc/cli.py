"""Command line: ``s2dc <command>``; each command is one stage of the pipeline (``s2dc --help`` lists them)."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from pathlib import Path

from .config import non_blank

_path = non_blank("path")
_name = non_blank("name")


def _pretrain(args: argparse.Namespace) -> int:
    from .train.config import config_from_args
    from .train.pretrain import pretrain

    cfg = config_from_args(args)
    if not cfg.data.source:
        raise ValueError("data.source is required: pass --data.source <dataset.json or folder of NIfTI volumes>")
    _check_published_copies(args, Path(cfg.run.out_dir))  # before the training, not after it
    summary = pretrain(cfg)
    losses, checkpoint = summary["losses_this_run"], summary["checkpoint"]
    if not losses:  # a finished run found again, or one stopped after its last checkpoint
        print(f"pretraining already at step {summary['steps']}: nothing trained; checkpoint {checkpoint}")
    else:
        print(f"pretrained to step {summary['steps']}: loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
              f"checkpoint {checkpoint}")
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process writes them
        _publish_copies(args, Path(cfg.run.out_dir))
    return 0


def _check_published_copies(args: argparse.Namespace, run_dir: Path) -> None:
    """Refuse the ``--export-*`` paths of `s2dc pretrain` that the run writes, or that hold a user's file."""
    from .export import check_encoder_output
    from .train.publish import check_curves_output, check_summary_output

    if args.export_encoder:
        check_encoder_output(Path(args.export_encoder), run_dir)
    if args.export_summary:
        check_summary_output(Path(args.export_summary), run_dir)
    if args.export_curves:
        check_curves_output(Path(args.export_curves), run_dir)


def _publish_copies(args: argparse.Namespace, run_dir: Path) -> None:
    """Write what the ``--export-*`` options of `s2dc pretrain` ask for, each whole or not at all."""
    from .export import export_encoder
    from .train.publish import export_curves, export_summary

    if args.export_encoder:
        print(export_encoder(run_dir, args.export_encoder))
    if args.export_curves:
        print(export_curves(run_dir, args.export_curves))
    if args.export_summary:
        print(export_summary(run_dir, args.export_summary))


def _export(args: argparse.Namespace) -> int:
    from .export import export_encoder

    report = export_encoder(args.checkpoint, args.output, which=args.which, partial=args.partial)
    print(report)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from .config import values_from_args
    from .downstream.defaults import fill_finetune_defaults
    from .downstream.engine import finetune
    from .downstream.tasks import TASKS
    from .train.finetune_config import build_config

    values, notes = fill_finetune_defaults(values_from_args(args))
    for note in notes:
        print(note)
    result = finetune(build_config(values))  # refuses a run.out_dir holding anything a run does not write
    score, unit = result["score"], " %" if TASKS[result["task"]].percent else ""  # a PSNR's name carries its dB
    print(f"fine-tuned {result['steps']} steps ({result['method']}, label ratio {result['label_ratio']}, "
          f"{result['train_cases']} training cases): {result['task']} {score['name']} {score['value']:.4g}{unit}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    import json

    from .data.synthetic import SynthParamError, write_dataset

    try:
        given = {"shape": args.shape, "spacing": args.spacing, "val_fraction": args.val_fraction}
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}
        path = write_dataset(args.out, args.kind, args.cases, args.seed, **options, progress=True)
    except SynthParamError as err:  # name the command-line option, not the Python parameter
        option = {"out_dir": "out"}.get(err.param, err.param).replace("_", "-")
        raise ValueError(f"--{option}: {err}") from err
    print(path)
    meta = json.loads(path.read_text())["synthetic"]
    summary = f"{args.kind}: {args.cases} cases of {'x'.join(map(str, meta['shape']))} voxels " \
              f"at {'x'.join(f'{s:g}' for s in meta['spacing'])} mm"
    if "mean_voxels" in meta:
        counts = ", ".join(f"{organ} {voxels:.0f}" for organ, voxels in meta["mean_voxels"].items())
        summary += f"; mean voxels per organ: {counts}"
    print(summary)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report.tables import write_report

    table = write_report([Path(p) for p in args.metrics], Path(args.out), [Path(p) for p in args.probe])
    probes = f" and {len(args.probe)} probe results" if args.probe else ""
    print(f"{len(table)} rows from {len(args.metrics)} runs{probes} -> {args.out}/benchmark.csv, benchmark.md, "
          f"benchmark.html, metrics.json, probe.csv")
    return 0


def _plots(args: argparse.Namespace) -> int:
    from .files import remove_abandoned
    from .pyplot import check_png_out, write_pngs
    from .report.curves import RECORD, check_curves_out, curve_tables, write_curves
    from .report.effect import effect_png, effect_table
    from .report.figures import benchmark_pngs
    from .report.tables import check_probed_encoders, collect_probes, runs_frame, summarise
    from .report.runs import read_runs
    from .report.outputs import check_out_dir

    runs, rows = read_runs([Path(p) for p in args.metrics])
    tables = curve_tables(runs)  # every input read and every output checked before the first file is written
    probes = [Path(p) for p in args.probe]
    collect_probes(probes)
    frame = runs_frame(runs)
    check_probed_encoders(frame, probes)
    effect = effect_table(summarise(frame), frame, probes)
    check_out_dir(Path(args.figures), "--figures")
    check_out_dir(Path(args.curves), "--curves")
    check_curves_out(Path(args.curves), list(tables))
    check_png_out(Path(args.figures) / "effect.png")
    # what a killed run was renaming in (only that: the folders may be a user's)
    remove_abandoned(Path(args.figures), "*.png", "per_class/*.png")
    remove_abandoned(Path(args.curves), RECORD, "train_loss/*.tsv", "val_score/*.tsv", "pretrain_loss/*.tsv")
    pngs = benchmark_pngs(rows)
    # no comparison in these runs: an effect.png of earlier runs (ours: check_png_out) would stand for them
    pngs["effect.png"] = effect_png(effect) if len(effect) else None
    figures = write_pngs(Path(args.figures), pngs)  # as one: never the new figures beside the previous run's
    curves = write_curves(tables, Path(args.curves))
    print(f"{len(runs)} runs -> {len(figures)} figures in {args.figures}, {len(curves)} curve tables in {args.curves}")
    return 0


def _ablation_table(args: argparse.Namespace) -> int:
    from .report.tables import parse_terms, write_ablation

    terms = parse_terms(args.terms)
    table = write_ablation([Path(p) for p in args.metrics], terms, Path(args.out), [Path(p) for p in args.probe])
    print(f"{table.method.nunique()} variants x {table.dataset.nunique()} datasets from {len(args.metrics)} runs "
          f"-> {args.out}/ablation.csv, ablation.md, ablation.json")
    print((Path(args.out) / "ablation.md").read_text())
    return 0


def _probe(args: argparse.Namespace) -> int:
    from .eval.outputs import check_probe_out
    from .eval.probe import markdown, probe, write_probe

    check_probe_out(args.out, args.source)  # before the work, not after it
    result = probe(args.source, args.encoders, stage=args.stage, seed=args.seed, cache_dir=args.cache_dir,
                   device=args.device, preset=args.preset)
    write_probe(result, args.out)
    unit = "tokens" if "train_tokens" in result else "volumes"
    print(f"{result['task']}: stage {result['stage']} tokens ({result['stride']}-voxel blocks); "
          f"{result[f'train_{unit}']} training and {result[f'val_{unit}']} validation {unit}; {result['metric']}")
    print(markdown(result))
    return 0


def _figures(args: argparse.Namespace) -> int:
    from .eval.figures import draw

    for path in draw(args.source, args.encoders, args.structure, args.out_dir, stage=args.stage, seed=args.seed,
                     cache_dir=args.cache_dir, device=args.device, preset=args.preset, labels=args.labels,
                     tsne_tokens=args.tsne_tokens):
        print(path)
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from .data.registry import REGISTRY, get

    if args.name:
        spec = get(args.name)
        print(f"{spec.title} ({spec.name}): {spec.task}, {spec.modality}, channels {', '.join(spec.channels)}")
        if spec.outputs:
            print(f"predicts: {', '.join(spec.outputs)}; metrics: {', '.join(spec.metrics)}")
        print(f"intensity preset: {spec.preset}")
        for p in spec.paper:
            reading = f"; it prints no label ratio: {p.label_ratio:.0%} is our reading" if p.table == "poster Table 2" else ""
            print(f"paper: {p.method} at {p.label_ratio:.0%} labels: {p.score} ({p.table}{reading})")
        if spec.notes:
            print(f"notes: {spec.notes}")
        print(spec.instructions(f"data/raw/{spec.name}"))
        return 0
    print("| name | dataset | task | modality | channels | access |\n|---|---|---|---|---|---|")
    for s in REGISTRY.values():
        print(f"| {s.name} | {s.title} | {s.task} | {s.modality} | {', '.join(s.channels)} | {s.access} |")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from .data.sources import prepare

    path = prepare(args.name, args.raw, args.out)
    print(path)
    return 0


def _download(args: argparse.Namespace) -> int:
    from .data.download import download

    print(download(args.name, args.raw, progress=sys.stderr.isatty()))
    return 0


def _add_pretrain(sub) -> None:
    from .train.config import add_arguments

    pre = sub.add_parser(
        "pretrain", help="pretrain a Swin encoder with S²DC",
        description="Pretrain a SwinUNETR encoder with S²DC. Options are --section.field; a --config YAML "
                    "with the same sections can hold them. Under torchrun every process runs this command.",
    )
    add_arguments(pre)
    pre.add_argument("--export-encoder", metavar="OUTPUT", type=_path, default=None,
                     help="when pretraining ends, also write its teacher encoder to OUTPUT as `s2dc export-encoder` "
                          "does (one process instead of two; not part of the run's options)")
    pre.add_argument("--export-summary", metavar="OUTPUT", type=_path, default=None,
                     help="when pretraining ends, also copy its summary.json to OUTPUT, whole or not at all (a "
                          "work file beside it, renamed in; what a killed copy left there is removed)")
    pre.add_argument("--export-curves", metavar="FOLDER", type=_path, default=None,
                     help="when pretraining ends, also copy its dvclive/ curves to FOLDER, whole or not at all "
                          "(replacing an earlier copy)")
    pre.set_defaults(func=_pretrain)


def _add_export_encoder(sub) -> None:
    exp = sub.add_parser(
        "export-encoder", help="write encoder weights loadable into monai SwinUNETR(use_v2=True)",
        description="Extract the encoder of a pretraining checkpoint as SwinUNETR 'swinViT.*' weights, "
                    "check that they load strictly into SwinUNETR(use_v2=True) and print the report.",
    )
    exp.add_argument("checkpoint", type=_path, help="pretraining checkpoint (run.out_dir/checkpoints/step_XXXXXXXX.pt), "
                                        "or a run.out_dir, whose newest checkpoint is used")
    exp.add_argument("output", type=_path, help="output .pt file")
    exp.add_argument("--which", choices=("teacher", "student"), default="teacher",
                     help="export the EMA teacher (default) or the student encoder")
    exp.add_argument("--partial", action="store_true",
                     help="export a checkpoint short of its run's optim.steps (a run that diverged or was stopped; "
                          "refused without this flag); the file records the step and the steps")
    exp.set_defaults(func=_export)


def _add_synth(sub) -> None:
    syn = sub.add_parser(
        "synth", help="write the synthetic twin of a registry dataset (NIfTI + dataset.json)",
        description="Write deterministic synthetic cases of a registry dataset's twin as NIfTI volumes with a "
                    "dataset.json in the common layout (a pool lists them all under 'training'; a downstream twin "
                    "lists its last cases under 'validation'). The output folder is written atomically and "
                    "replaced if it holds nothing but a synthetic dataset that s2dc synth wrote (a folder with other "
                    "files is refused).",
    )
    from .data.synthetic import KINDS

    syn.add_argument("--kind", choices=KINDS, required=True, help="the registry dataset whose twin is written")
    syn.add_argument("--out", type=_path, required=True, help="output folder (gets imagesTr/, labelsTr/ or targetsTr/, dataset.json)")
    syn.add_argument("--cases", type=int, required=True,
                     help="number of cases (a pool: >= 1; a downstream twin: >= 2, a classifier's: >= 2 per class)")
    syn.add_argument("--seed", type=int, required=True, help="dataset seed (non-negative)")
    # No defaults here: the writer's own (s2dc.data.synthetic.write_dataset) hold, under the twins' code hash.
    syn.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                     help="grid in voxels (default: the writer's, 96 96 64)")
    syn.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                     help="voxel size in mm (default: the writer's, 1.5 1.5 2.0)")
    syn.add_argument("--val-fraction", type=float,
                     help="a downstream twin: fraction of cases listed under 'validation' (default: the writer's, "
                          "0.25); a pool takes none")
    syn.set_defaults(func=_synth)


def _add_finetune(sub) -> None:
    from .train.finetune_config import add_arguments as add_finetune_arguments

    fin = sub.add_parser(
        "finetune", help="fine-tune for the dataset's task (segmentation, classification, reconstruction, "
                         "translation), from scratch or a pretrained encoder",
        description="Fine-tune on a dataset.json in the common layout; its task picks the network (SwinUNETR(use_v2=True), "
                    "or its encoder with a linear head for classification), loss and scores. Writes metrics.json (the "
                    "task's scores), model.pt, split.json and dvclive/ to run.out_dir. "
                    "Options are --section.field; a --config YAML with the same sections can hold them.",
    )
    add_finetune_arguments(fin)
    fin.set_defaults(func=_finetune)


def _add_report(sub) -> None:
    rep = sub.add_parser(
        "report", help="aggregate fine-tuning metrics into the benchmark table",
        description="Read fine-tuning metrics.json files and write benchmark.csv, benchmark.md (mean ± std over "
                    "seeds per dataset, method and label ratio, beside the paper's numbers), benchmark.html (both "
                    "tables as a page), metrics.json (nested, for `dvc metrics diff`) and probe.csv (the --probe "
                    "results; its header alone without them) into --out.",
    )
    rep.add_argument("metrics", type=_path, nargs="+", help="metrics.json files written by `s2dc finetune`")
    rep.add_argument("--out", type=_path, required=True, help="output folder")
    rep.add_argument("--probe", type=_path, nargs="*", default=[], metavar="JSON",
                     help="`s2dc probe` results to add as a second table (and under 'probe' in metrics.json)")
    rep.set_defaults(func=_report)


def _add_plots(sub) -> None:
    plo = sub.add_parser(
        "plots", help="figures and curve tables of the fine-tuning runs (per-class bars, label-ratio curves)",
        description="Read fine-tuning metrics.json files (and the DVCLive curves beside them) and write, into "
                    "--figures, per_class/<dataset>.png (grouped bars per class or metric, one bar per method, mean ± "
                    "std over seeds), label_ratio.png "
                    "(score vs percent of labels per method, the poster's real-data numbers on the same axis) and "
                    "effect.png (S²DC against scratch fine-tuned, and against the random encoder and the voxels "
                    "frozen with --probe, dataset by dataset: s2dc.report.effect); "
                    "into --curves, train_loss/<dataset>.tsv and val_score/<dataset>.tsv (step, one column per "
                    "method: the mean over seeds) and pretrain_loss/<modality>_<variant>.tsv (each starting "
                    "encoder's loss terms, from the DVCLive curves beside it) for `dvc plots show`. A file where a PNG goes that s2dc did not draw is "
                    "refused, never replaced.",
    )
    plo.add_argument("metrics", type=_path, nargs="+", help="metrics.json files written by `s2dc finetune`")
    plo.add_argument("--figures", type=_path, required=True, help="output folder of the PNGs")
    plo.add_argument("--curves", type=_path, required=True, help="output folder of the curve tables")
    plo.add_argument("--probe", type=_path, nargs="*", default=[], metavar="JSON",
                     help="`s2dc probe` results: the frozen protocol's side of effect.png")
    plo.set_defaults(func=_plots)


def _add_ablation_table(sub) -> None:
    abl = sub.add_parser(
        "ablation-table", help="the loss ablation table (poster Table 2) from the variants' fine-tuning metrics",
        description="Read the fine-tuning metrics.json of each pretraining variant (run.method = the variant's name) "
                    "and write ablation.csv, ablation.md (mean ± std over seeds per dataset and variant, beside the "
                    "poster's Table 2, with both orderings, Kendall's tau and how many steps of ours stand beyond "
                    "the larger seed std of their two variants), ablation.html and ablation.json into --out.",
    )
    abl.add_argument("metrics", type=_path, nargs="+", help="metrics.json files written by `s2dc finetune`")
    abl.add_argument("--terms", nargs="+", required=True, metavar="VARIANT=TERMS:ASSIGNMENT",
                     help="each variant's loss terms and assignment, e.g. lg=global:dual_softmax s2dc=global+p2p+p2s:dual_softmax")
    abl.add_argument("--out", type=_path, required=True, help="output folder")
    abl.add_argument("--probe", type=_path, nargs="*", default=[], metavar="JSON",
                     help="`s2dc probe` results of the variants' encoders, added as a second table")
    abl.set_defaults(func=_ablation_table)


def _add_probe(sub) -> None:
    prb = sub.add_parser(
        "probe", help="linear probe: how well frozen encoder tokens separate the labelled structures",
        description="Embed every whole volume of a labelled dataset with each frozen encoder, give each token of "
                    "one Swin stage the structure filling at least 1/8 of its voxel block (else background), fit a "
                    "class-balanced linear classifier on the training cases' tokens and report per-class recall on the "
                    "validation cases' (classification: on pooled features; reconstruction and translation: R² of a "
                    "ridge regression of each block's target), each score with its bootstrap standard error over the "
                    "validation cases and the paired differences between the encoders. "
                    "Writes OUT (.json) and OUT with .md (the tables).",
    )
    prb.add_argument("encoders", type=_path, nargs="+", help="exported encoders or pretraining checkpoints, and/or 'random' "
                                                 "(three randomly initialised encoders of the first file's sizes, "
                                                 "scored by the mean of their scores) and "
                                                 "'voxels' (each block's raw voxels: a no-encoder baseline); "
                                                 "NAME=WHAT names a row (e.g. s2dc=encoder.pt)")
    prb.add_argument("--source", type=_path, required=True, help="labelled dataset.json (training and validation cases)")
    prb.add_argument("--out", type=_path, required=True, help="output .json file")
    _add_frozen_token_options(prb, "probed", "seed of the first random encoder, the next two take seed + 1 and "
                                             "seed + 2 (default 0)")
    prb.set_defaults(func=_probe)


def _add_figures(sub) -> None:
    fig = sub.add_parser(
        "figures", help="draw what frozen tokens say about the structures: anchor similarity map and t-SNE",
        description="For the validation cases of a segmentation dataset, draw (1) the cosine similarity of every "
                    "token of one axial slice to an anchor token inside STRUCTURE (the poster's Figure 1), one panel "
                    "per encoder, and (2) a t-SNE of the tokens coloured by structure (Figure 6). Writes "
                    "OUT_DIR/similarity.png and OUT_DIR/tsne.png; a file of those names that s2dc did not draw is "
                    "refused before any token is read, never replaced.",
    )
    fig.add_argument("encoders", type=_path, nargs="+", help="as for `s2dc probe`: encoder files, 'random', 'voxels'; NAME=WHAT "
                                                 "names a panel")
    fig.add_argument("--source", type=_path, required=True, help="labelled segmentation dataset.json (its validation cases)")
    fig.add_argument("--structure", required=True, help="class name of the anchor's structure, e.g. liver")
    fig.add_argument("--labels", default="label",
                     help="the per-voxel map the structures come from: 'label' (the dataset's labels; default) or "
                          "another map its cases carry with names in the json, e.g. 'anatomy' (a twin's tissues: "
                          "--structure 'white matter' on the BraTS twins)")
    fig.add_argument("--out-dir", type=_path, required=True, help="output folder")
    fig.add_argument("--tsne-tokens", type=int, default=2000,
                     help="at most this many validation tokens in the t-SNE, shared equally among the structures "
                          "(default 2000; the t-SNE's time grows a little faster than the count)")
    _add_frozen_token_options(fig, "drawn", "seed of the random encoder and the t-SNE (default 0)")
    fig.set_defaults(func=_figures)


def _add_frozen_token_options(parser: argparse.ArgumentParser, verb: str, seed_help: str) -> None:
    """The options of the commands that read a dataset's tokens through frozen encoders (probe, figures)."""
    from .data.registry import PRESETS

    parser.add_argument("--stage", type=int, default=2, help=f"Swin stage whose tokens are {verb} (0-4; default 2)")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--cache-dir", type=_path, default=None, help="preprocessing cache folder (default: none)")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help="intensity preset (default: the registry preset of the dataset the json names)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="'auto' (CUDA if available, else CPU; default), 'cpu' or 'cuda'")


def _add_datasets(sub) -> None:
    dsl = sub.add_parser(
        "datasets", help="list the benchmark's datasets (the registry), or describe one",
        description="Without NAME: a Markdown table of the registry (ten downstream datasets, three pretraining "
                    "pools). With NAME: its task, channels, outputs, metrics, the paper's numbers and where to get "
                    "the real data and put it.",
    )
    dsl.add_argument("name", nargs="?", help="a registry name, e.g. btcv")
    dsl.set_defaults(func=_datasets)


def _add_prepare(sub) -> None:
    pre_ = sub.add_parser(
        "prepare", help="turn a dataset's official release layout into the common dataset.json",
        description="Check a real dataset in its official release layout (see `s2dc datasets NAME`) and write "
                    "OUT/dataset.json, whose paths point at the release's files (nothing is copied; CC-CCII's "
                    "slices become volumes in OUT/volumes). A missing folder stops with where to get the data and "
                    "where to put it; a dataset.json in OUT that s2dc did not write is never replaced.",
    )
    pre_.add_argument("name", help="registry name, e.g. btcv")
    pre_.add_argument("--raw", type=_path, required=True, help="folder that holds the official release")
    pre_.add_argument("--out", type=_path, required=True, help="output folder (gets dataset.json)")
    pre_.set_defaults(func=_prepare)


def _add_download(sub) -> None:
    dl = sub.add_parser(
        "download", help="download an open dataset's archive (the MSD tasks) into its release folder",
        description="Download the registry's archive of NAME (resuming a partial download), check its MD5, extract "
                    "it into RAW (every member checked first: none may leave the folder, links are refused; staged, so "
                    "an interrupted run leaves nothing half-extracted) and print the release's dataset.json. A release "
                    "already there is kept. Then `s2dc prepare NAME --raw RAW --out FOLDER` converts it.",
    )
    dl.add_argument("name", help="registry name of an open dataset, e.g. msd_spleen")
    dl.add_argument("--raw", type=_path, required=True, help="release folder, e.g. data/raw/msd_spleen")
    dl.set_defaults(func=_download)


def _add_sweep(sub) -> None:
    swp = sub.add_parser(
        "sweep", help="Optuna hyper-parameter sweep: run one worker of a study, or export a finished study",
        description="A trial is a short S²DC pretraining plus a short fine-tuning from its encoder, scored by the "
                    "fine-tuning's validation score (maximised). Start N `sweep work` processes (on any machines) with "
                    "the same --storage, --study, --budget and --spec: together they finish exactly BUDGET trials; "
                    "a trial of a killed worker is failed and retried. Then `sweep export` writes the results. "
                    "See docs/sweeps.md.",
    )
    actions = swp.add_subparsers(dest="action", required=True)
    work = actions.add_parser(
        "work", help="run trials until the study has BUDGET finished (complete or pruned) trials",
        description="Run trials until the study holds BUDGET complete or pruned trials, waiting for other workers' "
                    "running trials when they fill the rest; one line per trial. Exits 0 when the budget is met, "
                    "1 when a trial's objective raised (the trial is recorded as failed), 2 on a bad option.",
    )
    export = actions.add_parser(
        "export", help="write trials.csv, trials.html, best.yaml and figures of a study that reached its budget",
        description="Write OUT/trials.csv (and as a page, OUT/trials.html), OUT/best.yaml (best value, trial and parameters nested as in params.yaml) "
                    "and OUT/{history,parallel_coordinate,param_importances}.png. Refuses a study that has not reached "
                    "its budget unless --force; a file where a PNG goes that s2dc did not draw is refused before "
                    "anything is written.",
    )
    for parser, journal in ((work, "created if absent"), (export, "it must exist")):
        parser.add_argument("--storage", type=_path, required=True,
                            help=f"journal file path (the default kind; {journal}) or database URL, e.g. "
                                 "postgresql+psycopg2://user@host:5432/db (SQLite only with one worker)")
        parser.add_argument("--study", type=_name, required=True, help="study name")
    work.add_argument("--budget", type=int, required=True, help="finished trials the whole study runs (all workers)")
    work.add_argument("--spec", type=_path, required=True,
                      help="the sweep's settings: a JSON object, or a .json/.yaml file (search space, base options, "
                           "datasets, trial folder, workers, pruner, seed)")
    export.add_argument("--out", type=_path, required=True, help="output folder")
    export.add_argument("--force", action="store_true",
                        help="export a study that has not reached its budget, or that workers of other settings bound "
                             "at once (its trials may mix them)")

    def run_sweep(args: argparse.Namespace) -> int:
        from .tune.command import run

        return run(args)

    swp.set_defaults(func=run_sweep)


#: Each command and the function that adds its subparser.
COMMANDS = {
    "pretrain": _add_pretrain,
    "export-encoder": _add_export_encoder,
    "synth": _add_synth,
    "finetune": _add_finetune,
    "report": _add_report,
    "ablation-table": _add_ablation_table,
    "plots": _add_plots,
    "probe": _add_probe,
    "figures": _add_figures,
    "datasets": _add_datasets,
    "prepare": _add_prepare,
    "download": _add_download,
    "sweep": _add_sweep,
}


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that takes no abbreviation of an option (``--optim.warmup`` was read as
    ``--optim.warmup_steps``, where a YAML config refuses the key); its subcommands' parsers are of this class."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def parse_known_args(self, args=None, namespace=None):
        """Refuse an option given more than once (``--train.steps 10 --train.steps=20``): argparse keeps the last
        value silently, where a YAML config refuses a key given twice; no s2dc option is meant to be repeated (one
        of ``nargs`` "+" takes its values in one occurrence). Each parser counts its own options only, in the words
        before a bare ``--`` and before its subcommand's name (those words are the subcommand parser's to count)."""
        words = sys.argv[1:] if args is None else list(args)
        commands = {name for a in self._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices}
        given: dict[argparse.Action, list[str | None]] = {}
        for i, word in enumerate(words):
            if word == "--" or word in commands:
                break
            option, eq, inline = word.partition("=")
            action = self._option_string_actions.get(option) if option.startswith("-") else None
            if action is None or isinstance(action, argparse._HelpAction):
                continue
            given.setdefault(action, []).append(inline if eq else self._shown_values(action, words[i + 1:]))
        for action, values in given.items():
            if len(values) > 1:
                times = "twice" if len(values) == 2 else f"{len(values)} times"
                shown = f" ({', then '.join(v or repr(v) for v in values)})" if None not in values else ""
                self.error(f"argument {'/'.join(action.option_strings)}: given {times}{shown}: give it once")
        return super().parse_known_args(args, namespace)

    @staticmethod
    def _shown_values(action: argparse.Action, rest: list[str]) -> str | None:
        """The words after an option that are its values, for the message (None for a flag)."""
        def is_value(word: str) -> bool:
            try:
                return not word.startswith("-") or float(word) < 0  # a negative number is a value
            except ValueError:
                return False

        if action.nargs == 0:
            return None
        most = 1 if action.nargs in (None, "?") else action.nargs if isinstance(action.nargs, int) else len(rest)
        values = []
        for word in rest[:most]:
            if not is_value(word):
                break
            values.append(word)
        return " ".join(values)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``s2dc`` parser; with ``command`` (a key of :data:`COMMANDS`) only that command's, so that a light
    command (``synth``, ``datasets``, ``prepare``, ``download``, ``report``) starts without importing torch or MONAI."""
    parser = _Parser(prog="s2dc", description="S²DC self-supervised pretraining for 3-D medical images")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, add in COMMANDS.items():
        if command in (None, name):
            add(sub)
    return parser


#: Per command, the options that set how much memory it takes; running out, it names them with this run's values.
MEMORY_OPTIONS = {
    "pretrain": ("views.roi_size", "views.grid", "optim.batch_size", "encoder.feature_size", "loss.queue_size"),
    "finetune": ("train.roi_size", "train.batch_size", "train.samples_per_volume", "model.feature_size",
                 "eval.sw_batch_size"),
    "probe": ("--stage",),  # an earlier stage: more tokens a volume (the encoders' sizes and volumes set the rest)
    "figures": ("--stage", "--tsne-tokens"),
}


def _memory_options(args: argparse.Namespace) -> str:
    """``MEMORY_OPTIONS`` of ``args.command`` with the values this run was given ("(default)" marks one not given)."""
    def shown(value) -> str:
        return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    if args.command in ("pretrain", "finetune"):
        from .config import section_types, values_from_args
        from .train.config import PretrainConfig
        from .train.finetune_config import FinetuneConfig

        sections = section_types(PretrainConfig if args.command == "pretrain" else FinetuneConfig)
        given = values_from_args(args)

        def value(key: str) -> str:
            section, name = key.split(".")
            if key == "model.feature_size" and (given.get("model") or {}).get("init", "scratch") != "scratch":
                return "that of model.init's encoder"
            if name in (given.get(section) or {}):
                return shown(given[section][name])
            return f"{shown(getattr(sections[section](), name))} (default)"
    else:
        def value(key: str) -> str:
            return shown(getattr(args, key.lstrip("-").replace("-", "_")))
    return ", ".join(f"{key} {value(key)}" for key in MEMORY_OPTIONS.get(args.command, ()))


#: errno of a write the disk had no room for: a failed run (exit 1), not a user's mistake (2).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _out_of_memory(err: BaseException) -> bool:
    """Is ``err`` memory running out: Python's or NumPy's MemoryError, or torch's allocators' RuntimeError (the CPU's
    "can't allocate memory", torch.OutOfMemoryError's "CUDA out of memory")?"""
    if isinstance(err, MemoryError):
        return True
    text = str(err)
    return "can't allocate memory" in text or "out of memory" in text.lower()[:200]


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake (bad option, bad file) exits with 2, a diverged run or one that ran out of
    memory with 1, each with a message and no traceback."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    try:
        return args.func(args)
    except FloatingPointError as err:  # train.finite.NonFiniteError: a diverged run
        print(f"s2dc {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        sizes = _memory_options(args)
        print(f"s2dc {args.command}: error: out of memory ({first}); the sizes given need more memory than this "
              f"machine has{f' ({sizes})' if sizes else ''}: smaller ones, or a machine with more", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:  # DataError is a ValueError; OSError: a path that cannot be (e.g. under a file)
        print(f"s2dc {args.command}: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, OSError) and err.errno in DISK_FULL else 2  # the machine's, like memory


#: The commands that always train, probe or draw with torch and MONAI (``sweep`` does only for the ``s2dc``
#: objective, whose workers import MONAI lean themselves; the others start without either).
MONAI_COMMANDS = ("pretrain", "export-encoder", "finetune", "probe", "figures")


def entry() -> None:
    """Console-script entry: tune the CPU allocator, flush denormals and import MONAI lean (see :mod:`s2dc.runtime`),
    then run :func:`main`."""
    from .runtime import flush_denormals, import_monai_lean, reexec_with_tuned_malloc

    reexec_with_tuned_malloc()
    if len(sys.argv) > 1 and sys.argv[1] in MONAI_COMMANDS:
        flush_denormals()
        import_monai_lean()
    # SIGTERM (Snakemake, SLURM, kill) unwinds like Ctrl-C, so that temporary files are removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())


if __name__ == "__main__":
    entry()
