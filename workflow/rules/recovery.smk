# Recovery after a killed run. A Snakemake killed with SIGKILL (or whose machine went down) leaves its
# lock behind, and the next run would stop with "Directory cannot be locked" until `snakemake --unlock`.
# Each run records, next to Snakemake's own lock files, who it is (host and process id) and which of those
# files are its own (`s2dc-owner-<host>-<pid>`); a later run on the same host removes the lock files of a
# recorded run whose process no longer exists, and only those: the locks of a run still alive stay. Incomplete
# outputs of the killed run are then redone (`rerun-incomplete` in profiles/default), and pretraining resumes
# from its newest checkpoint. (Snakemake itself, when a run ends normally, removes the whole lock folder, the
# locks of other runs in this folder included: run two Snakemakes on one folder only for disjoint targets.)
import socket

LOCK_DIR = Path(".snakemake") / "locks"
OWNER = "s2dc-owner-"


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


if workflow.is_main_process:
    for record, host, pid, names in lock_owners():
        if process_is_gone(host, pid):
            print(f"Removing the lock of a Snakemake run that no longer exists ({host} {pid}).", file=sys.stderr)
            for name in names:
                (LOCK_DIR / Path(name).name).unlink(missing_ok=True)
            record.unlink(missing_ok=True)


onstart:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    others = {name for _, _, _, names in lock_owners() for name in names}
    mine = sorted(p.name for p in LOCK_DIR.glob("*.lock") if p.name not in others)  # taken by this run as it started
    host, pid = socket.gethostname(), os.getpid()
    (LOCK_DIR / f"{OWNER}{host}-{pid}").write_text(" ".join([host, str(pid), *mine]) + "\n")
