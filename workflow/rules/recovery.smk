# Recovery after a killed run. A Snakemake killed with SIGKILL (or whose machine went down) leaves its
# lock behind, and the next run would stop with "Directory cannot be locked" until `snakemake --unlock`.
# Each run records, next to Snakemake's own lock files, who it is (host and process id) and which of those
# files are its own (`s2dc-owner-<host>-<pid>`); a later run on the same host removes the lock files of a
# recorded run whose process no longer exists, and only those: the locks of a run still alive stay. Incomplete
# outputs of the killed run are then redone (`rerun-incomplete` in profiles/default), and pretraining resumes
# from its newest checkpoint. The jobs of a Snakemake killed alone (`kill -9 <pid>`, not its process group) go on
# running: each job carries its run's mark in its environment (RUN_MARK), and while a process with a dead run's mark
# still runs (Linux: /proc), that run's locks stay and the next run stops, naming the process. Rerun beside it (after
# an option changed), the survivor writes the outputs the new job writes (an encoder, a probe result), and the last to
# finish is taken for the new one. Snakemake itself, when a run ends, removes the whole lock folder, the locks of
# other live runs included (a `dvc repro` whose `snakemake data` found nothing to do unlocked a running Snakemake,
# and its next stage started that run's jobs again beside them): here a run that ends removes its own lock files and
# record only (`snakemake --unlock` still removes every lock).
import socket

from snakemake.persistence.file import FilePersistence

LOCK_DIR = Path(".snakemake") / "locks"
OWNER = "s2dc-owner-"
RUN_MARK = "S2DC_SNAKEMAKE_RUN"  # '<host>-<pid>' of the Snakemake run that started a job, in the job's environment


def lock_owners() -> list[tuple[Path, str, int, list[str]]]:
    """Every run's record: (its file, host, process id, the names of its lock files); unreadable records left out."""
    owners = []
    for record in sorted(LOCK_DIR.glob(f"{OWNER}*")):
        try:
            host, pid, *names = record.read_text().split()
            owners.append((record, host, int(pid), names))
        except (OSError, ValueError):
            continue
    return owners


def process_is_gone(host: str, pid: int) -> bool:
    """Whether ``pid`` on ``host`` surely no longer exists (another machine's process: cannot tell, so no)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def jobs_of_run(host: str, pid: int) -> list[str]:
    """'pid N (command)' of each process of this host started by run ``pid`` (its mark in their environment)."""
    return checks.processes_marked(f"{RUN_MARK}={host}-{pid}")


def delete_own_locks(self) -> None:
    """FilePersistence._delete_locks at the end of this run: its own lock files and record, then the lock folder
    only if nothing else is left in it (Snakemake's removes the whole folder)."""
    for lockfile in self._lockfile.values():
        Path(lockfile).unlink(missing_ok=True)
    self._lockfile.clear()
    (LOCK_DIR / f"{OWNER}{socket.gethostname()}-{os.getpid()}").unlink(missing_ok=True)
    try:
        Path(self._lockdir).rmdir()
    except OSError:
        pass  # another run's locks (or nothing: already gone)


if workflow.is_main_process:
    if not hasattr(FilePersistence, "s2dc_delete_every_lock"):  # once per process (tests parse many times)
        FilePersistence.s2dc_delete_every_lock = FilePersistence._delete_locks
        FilePersistence._delete_locks = delete_own_locks
        FilePersistence.cleanup_locks = lambda self: self.s2dc_delete_every_lock()  # --unlock: every lock
    for record, host, pid, names in lock_owners():
        if process_is_gone(host, pid):
            alive = jobs_of_run(host, pid)
            if alive:
                raise WorkflowError(
                    f"The Snakemake run {pid} on {host} was killed, but jobs it started still run: {'; '.join(alive)}. "
                    "They write the outputs this run would write (an encoder, a run's metrics, a probe result), and "
                    "the last to finish would be taken for this run's. Wait for them to end, or stop them (kill "
                    f"{' '.join(a.split()[1] for a in alive)}), then run again. Nothing was run; its locks are kept.")
            print(f"Removing the lock of a Snakemake run that no longer exists ({host} {pid}).", file=sys.stderr)
            for name in names:
                (LOCK_DIR / Path(name).name).unlink(missing_ok=True)
            record.unlink(missing_ok=True)
    os.environ[RUN_MARK] = f"{socket.gethostname()}-{os.getpid()}"  # inherited by every job this run starts


onstart:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    others = {name for _, _, _, names in lock_owners() for name in names}
    mine = sorted(p.name for p in LOCK_DIR.glob("*.lock") if p.name not in others)  # taken by this run as it started
    host, pid = socket.gethostname(), os.getpid()
    (LOCK_DIR / f"{OWNER}{host}-{pid}").write_text(" ".join([host, str(pid), *mine]) + "\n")
