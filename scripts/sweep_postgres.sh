#!/usr/bin/env bash
# Proves the database path of `s2dc sweep` against a real PostgreSQL: a throw-away cluster on 127.0.0.1 and a free
# port, two concurrent workers of a small sweep (the toy objective) sharing one study to the same budget, then the
# export and the trial counts; then a worker killed mid-trial (SIGKILL) and the next run, which retries its trial;
# then a worker paused (SIGSTOP) past the grace period, whose trial another worker must not fail, since its process
# lives; then the pipeline's own smoke sweep through Snakemake (`snakemake sweep`: its two worker jobs and the export, the
# real objective), with `sweep.storage` set to the database by a second configfile, in a scratch working folder.
# The cluster and its folder are removed on exit, whatever happens.
#
# Needs (installs nothing itself):
#   apt-get install -y postgresql          # the server binaries (initdb, pg_ctl); Debian puts them in
#                                          # /usr/lib/postgresql/<version>/bin
#   pip install psycopg2-binary            # the driver, into the project's environment
#
# Usage, from the repository root:  bash scripts/sweep_postgres.sh [OUT_DIR]
#   OUT_DIR (optional) keeps the export (trials.csv, best.yaml, figures); default: a temporary folder.
#   PYTHON=... picks the interpreter (default: .venv/bin/python if present, else python3).
# Run as root, the cluster runs as the 'postgres' user (PostgreSQL refuses to run as root).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3 )}
BUDGET=8
STUDY=pg_demo

initdb=$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
bindir=$(dirname "$(readlink -f "${initdb:-/nonexistent}")")  # the real folder (not a symlink farm): has createdb
if [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
    echo "error: PostgreSQL server binaries not found: apt-get install -y postgresql" >&2; exit 2
fi
if ! "$PYTHON" -c "import psycopg2" 2>/dev/null; then
    echo "error: the psycopg2 driver is not installed in $PYTHON's environment: pip install psycopg2-binary" >&2; exit 2
fi

work=$(mktemp -d -t s2dc-pg.XXXXXX)
out=${1:-$work/export}
as_db_user=()
if [ "$(id -u)" -eq 0 ]; then
    as_db_user=(runuser -u postgres --)
    chown postgres "$work"
fi
db() { "${as_db_user[@]}" "$@"; }

cleanup() {
    local rc=$?
    if [ -f "$work/data/postmaster.pid" ]; then
        db "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    echo "cluster stopped and $work removed (exit $rc)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "== PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, cluster in $work/data"
db "$bindir/initdb" -D "$work/data" -U sweep --auth=trust -E UTF8 >"$work/initdb.log"
db "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
    -o "-h 127.0.0.1 -p $port -k $work -c fsync=off" start >/dev/null
db "$bindir/createdb" -h 127.0.0.1 -p "$port" -U sweep sweeps
url="postgresql+psycopg2://sweep@127.0.0.1:$port/sweeps"
echo "== storage $url"

spec=$(cat <<EOF
{"objective": "toy", "toy": {"steps": 4, "sleep": 0.2}, "workers": 2, "seed": 0,
 "space": {"pretrain.loss.weight_p2p": {"low": 0.0, "high": 1.0},
           "pretrain.loss.match_temperature": {"low": 0.05, "high": 1.0, "log": true},
           "pretrain.ema.schedule": {"choices": ["constant", "cosine"]},
           "finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": true}},
 "pruner": {"n_startup_trials": 3, "n_warmup_steps": 1},
 "heartbeat": {"interval": 2, "grace": 10}}
EOF
)

echo "== two workers, budget $BUDGET"
cd "$work"
pids=()
for w in 1 2; do
    ("$PYTHON" -m s2dc.cli sweep work --storage "$url" --study "$STUDY" --budget "$BUDGET" --spec "$spec" 2>&1 |
        sed "s/^/[worker $w] /") &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
if [ "$status" -ne 0 ]; then echo "error: a worker exited with $status" >&2; exit 1; fi

echo "== export to $out"
"$PYTHON" -m s2dc.cli sweep export --storage "$url" --study "$STUDY" --out "$out"

echo "== trial counts"
"$PYTHON" - "$url" "$STUDY" "$BUDGET" <<'EOF'
import sys
from collections import Counter

from s2dc.tune.storage import open_study

url, name, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
trials = open_study(url, name, create=False).get_trials(deepcopy=False)
states = Counter(t.state.name for t in trials)
workers = Counter(t.user_attrs["worker"]["pid"] for t in trials if "worker" in t.user_attrs)
finished = states["COMPLETE"] + states["PRUNED"]
print(f"trials: {len(trials)}; by state: {dict(sorted(states.items()))}; finished {finished} of budget {budget}")
print(f"trials run per worker process: {dict(workers)}")
assert finished == budget, "the budget did not hold"
assert len(workers) == 2, "both workers should have run trials"
EOF
echo "== best.yaml"
cat "$out/best.yaml"

# wait_until_reported STUDY N: wait (at most 30 s) until trial N of STUDY has reported a score, i.e. is under way
wait_until_reported() {
    "$PYTHON" - "$url" "$1" "$2" <<'EOF'
import sys, time
from s2dc.tune.storage import open_study
url, study, number = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(600):
    try:
        trials = open_study(url, study, create=False).get_trials(deepcopy=False)
    except ValueError:  # the study is not created yet
        trials = []
    if len(trials) > number and trials[number].intermediate_values:
        break
    time.sleep(0.05)
EOF
}

echo "== a worker killed mid-trial (SIGKILL), then the next run (study pg_kill, budget 3)"
slow=${spec/\"sleep\": 0.2/\"sleep\": 0.5}
"$PYTHON" -m s2dc.cli sweep work --storage "$url" --study pg_kill --budget 3 --spec "$slow" > >(sed "s/^/[killed] /") 2>&1 &
victim=$!
wait_until_reported pg_kill 1
kill -KILL "$victim"; wait "$victim" 2>/dev/null || true
sleep 0.2  # let its output through
"$PYTHON" -m s2dc.cli sweep work --storage "$url" --study pg_kill --budget 3 --spec "$slow" 2>&1 | sed "s/^/[next run] /"
"$PYTHON" - "$url" <<'EOF'
import sys
from s2dc.tune.storage import open_study
trials = open_study(sys.argv[1], "pg_kill", create=False).get_trials(deepcopy=False)
for t in trials:
    print(f"trial {t.number}: {t.state.name}; retry of {t.user_attrs.get('retry_of', '-')}; params {t.params}")
assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 3 and trials[1].state.name == "FAIL"
assert trials[2].params == trials[1].params
EOF

echo "== a worker paused (SIGSTOP) past the grace period while another looks for dead workers, then resumed (study pg_pause, budget 2)"
"$PYTHON" -m s2dc.cli sweep work --storage "$url" --study pg_pause --budget 2 --spec "$slow" > >(sed "s/^/[paused] /") 2>&1 &
paused=$!
wait_until_reported pg_pause 0
kill -STOP "$paused"
sleep 12  # no beat for longer than the grace period (10 s)
"$PYTHON" - "$url" <<'EOF'  # what every worker does before it counts the budget
import sys
import time
from s2dc.tune.storage import open_sweep
study, liveness = open_sweep(sys.argv[1], "pg_pause", heartbeat_interval=2, grace_period=10)
started = study.get_trials(deepcopy=False)[0].datetime_start.timestamp()
print(f"trial 0: started {time.time() - started:.1f} s ago, its worker stopped; failed as dead: "
      f"{liveness.fail_stale(study)}")
assert study.get_trials(deepcopy=False)[0].state.name == "RUNNING", "a live worker's trial was failed"
EOF
kill -CONT "$paused"; wait "$paused"
"$PYTHON" - "$url" <<'EOF'
import sys
from s2dc.tune.storage import open_study
trials = open_study(sys.argv[1], "pg_pause", create=False).get_trials(deepcopy=False)
print("after the pause: " + "; ".join(f"trial {t.number} {t.state.name}" for t in trials))
assert [t.state.name for t in trials].count("FAIL") == 0 and len(trials) == 2
EOF

echo "== the smoke sweep through Snakemake, sweep.storage = the database"
wf="$work/snakemake"
mkdir -p "$wf"
printf 'scales:\n  smoke:\n    sweep:\n      storage: "%s"\n' "$url" > "$wf/storage.yaml"
(cd "$wf" && PATH="$(dirname "$PYTHON"):$PATH" "$PYTHON" -m snakemake --snakefile "$REPO/Snakefile" \
    --configfile "$REPO/params.yaml" "$wf/storage.yaml" --quiet rules --config scale=smoke --cores 2 sweep)
"$PYTHON" - "$url" "$wf/results/smoke/sweep/best.yaml" <<'EOF'
import sys

import optuna
import yaml

from s2dc.tune.storage import open_study

url, best = sys.argv[1], yaml.safe_load(open(sys.argv[2]))
names = [s.study_name for s in optuna.get_all_study_summaries(url) if s.study_name.startswith("s2dc-smoke-")]
assert len(names) == 1, f"expected one pipeline study in the database, found {names}"
trials = open_study(url, names[0], create=False).get_trials(deepcopy=False)
finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
workers = {t.user_attrs["worker"]["pid"] for t in trials if "worker" in t.user_attrs}
print(f"study {names[0]} in the database: {len(trials)} trials, {finished} finished of budget {best['budget']}, "
      f"run by {len(workers)} worker process(es); best.yaml: finished {best['finished']}, best value {best['best']['value']}")
assert finished == best["budget"] == best["finished"]
EOF
