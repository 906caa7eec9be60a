# Recovery after a killed run. A Snakemake killed with SIGKILL (or whose machine went down) leaves its
# lock behind, and the next run would stop with "Directory cannot be locked" until `snakemake --unlock`.
# Each run records who holds the lock (host and process id, next to Snakemake's own lock files); a later
# run on the same host removes the lock only when that process no longer exists. Incomplete outputs of
# the killed run are then redone (`rerun-incomplete` in profiles/default), and pretraining resumes from
# its newest checkpoint.
import shutil
import socket

LOCK_DIR = Path(".snakemake") / "locks"
LOCK_OWNER = LOCK_DIR / "s2dc-owner"


def _owner_is_gone() -> bool:
    try:
        host, pid = LOCK_OWNER.read_text().split()
        if host != socket.gethostname():
            return False  # another machine's run: cannot tell, leave it
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


if workflow.is_main_process and LOCK_OWNER.is_file() and _owner_is_gone():
    print(f"Removing the lock of a Snakemake run that no longer exists ({LOCK_OWNER.read_text().strip()}).",
          file=sys.stderr)
    shutil.rmtree(LOCK_DIR, ignore_errors=True)


onstart:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    LOCK_OWNER.write_text(f"{socket.gethostname()} {os.getpid()}\n")
