"""``s2dc sweep work`` and ``s2dc sweep export``: what the command line runs (its parser is in :mod:`s2dc.cli`)."""

from __future__ import annotations

import argparse
import hashlib
import sys
import traceback
from pathlib import Path

from .worker import TrialError


def run(args: argparse.Namespace) -> int:
    """Run the sweep action of ``args``; 0 when done, 1 when a trial's objective raised (with its traceback)."""
    if args.action == "export":
        return _export(args)
    try:
        return _work(args)
    except TrialError as err:
        traceback.print_exception(err.__cause__ or err, file=sys.stderr)
        print(f"s2dc sweep work: error: {err}", file=sys.stderr)
        return 1


def _work(args: argparse.Namespace) -> int:
    import optuna

    from .spec import load_spec
    from .storage import open_sweep
    from .worker import bind_study, run_worker

    spec = load_spec(args.spec)
    if args.budget < 1:
        raise ValueError(f"--budget must be >= 1, got {args.budget}")
    if spec.objective == "toy":
        from .toy import make_toy_objective

        objective = make_toy_objective(spec.toy, spec.dims)
    else:  # pretraining and fine-tuning in this process: MONAI as the training commands import it
        from ..runtime import flush_denormals, import_monai_lean

        flush_denormals()
        import_monai_lean()
        from .objective import check_objective_data, make_objective

        check_objective_data(spec)  # before the study is opened and bound: a refused run leaves it as it was
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the worker prints one line per trial instead
    study, liveness = open_sweep(
        args.storage, args.study, workers=spec.workers, sampler=spec.make_sampler(), pruner=spec.make_pruner(),
        heartbeat_interval=spec.heartbeat["interval"], grace_period=spec.heartbeat["grace"], max_retry=spec.max_retry,
    )
    bound = bind_study(study, args.budget, spec.space, data_identity(spec), trial_options(spec))
    if spec.objective != "toy":
        # it claims the trial folders: only now, with the storage open and the spec accepted, so that a refused run
        # leaves no claim refusing the corrected command
        objective = make_objective(spec, args.storage, args.study)
    report = run_worker(study, objective, spec.dims, args.budget, liveness, generation=spec.workers,
                        max_failures=spec.max_failures, bound=bound,
                        log=lambda line: print(line, flush=True))
    print(f"this worker: {report.complete} complete, {report.pruned} pruned, {report.failed} failed, "
          f"{report.surplus} surplus; dead workers' trials retried: {report.dead_retried}", flush=True)
    return 0


def trial_options(spec) -> dict:
    """What defines a trial besides its parameters and data: the objective, the base options of its stages (but for
    the run-local ones, :data:`~s2dc.tune.space.RUN_LOCAL`), the fine-tuning seeds its value averages, the pruner
    that may stop it, the sampler's seed and ``workers`` (the generations, which decide what each trial draws)."""
    from .space import split_run_local

    return {"objective": spec.objective, "pretrain": split_run_local("pretrain", spec.pretrain)[0],
            "finetune": split_run_local("finetune", spec.finetune)[0], "toy": spec.toy,
            "finetune_seeds": list(spec.finetune_seeds), "pruner": spec.pruner, "seed": spec.seed,
            "workers": spec.workers}


def data_identity(spec) -> dict[str, str] | None:
    """What the trials of the s2dc objective read, ``{stage: SHA-256 of its dataset.json}`` (a json holds the hash
    of its dataset's files, so another release converted into the same path differs); None for the toy objective."""
    if spec.objective == "toy":
        return None
    for stage, path in spec.data.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"spec data.{stage}: '{path}' is not a file (a dataset.json is expected)")
    return {stage: hashlib.sha256(Path(path).read_bytes()).hexdigest() for stage, path in sorted(spec.data.items())}


def _export(args: argparse.Namespace) -> int:
    from .export import export_study

    for path in export_study(args.storage, args.study, args.out, force=args.force).values():
        print(path)
    return 0
