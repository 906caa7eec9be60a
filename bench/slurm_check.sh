#!/usr/bin/env bash
# The SLURM path, proved on a real one-node SLURM cluster started on this machine from Debian's
# packages (slurm-wlm, munge): the smoke DAG is run once through the project's profile
# (`snakemake --workflow-profile profiles/slurm`) and once locally (`snakemake --cores 2`), each in its own
# copy of the repository's tracked files, and the results of the two runs are compared: every JSON
# leaf by leaf, benchmark.csv cell by cell (run times aside), the Markdown tables and the encoder
# byte for byte, the pretraining checkpoint entry by entry.
#
#   bash bench/slurm_check.sh    # as root. Exit 0: jobs went through SLURM and the results agree;
#                                # 1: a step failed or a result differs; 2: something is missing.
#
# Needs (nothing is installed here; what is missing is named and the script exits 2):
#   apt-get install -y slurm-wlm munge
#   pip install -e ".[pipeline,slurm,dev]" -c constraints.txt   (in .venv/, used when present)
# Environment: SCALE (smoke), TARGETS ("all ablation sweep": the benchmark and the two second targets),
# SLURMCTLD_PORT (16817), SLURMD_PORT (16818), KEEP_TMP=1 keeps the temporary folder (it is kept anyway when
# the check fails), RUN_TIMEOUT (1800 s per DAG run),
# GPUS=N (0) gives the node N counted GPUs (GRES without devices: jobs run on the CPU), makes `cpu` a partition
# without GPUs (a node that never comes up: sbatch refuses --gpus there, as a site's CPU partition does) and
# sets every stage of the SLURM copy's scale to ask for one GPU, as scale paper does: a job that the profile
# sends to the wrong partition is refused at submission and the run fails.
# DVC_CHECK=1 also runs `dvc repro pretrain` through SLURM with S2DC_WORKFLOW_PROFILE=profiles/slurm (a third copy),
# its pretrainings asking for twice this machine's CPUs, which the node then declares (SlurmdParameters=config_overrides):
# each must get them, not this machine's count, which `cores: all` of profiles/default capped them at.
#
# Everything lives in one temporary folder: a fresh munge key and socket, slurm.conf, the
# controller's state, the daemons' logs and the two work copies; no system file is read or
# written (/etc/munge, /etc/slurm untouched). The daemons are started here, their PIDs kept, and
# stopped by those PIDs on any exit (trap). The cluster has no accounting (no slurmdbd), so
# `sacct` cannot see it: the evidence that the jobs went through SLURM is the job ids in
# Snakemake's log, squeue snapshots taken while the DAG runs, `squeue --states=all` after it
# (finished jobs stay listed for MinJobAge, set to an hour here) and the lines slurmctld/slurmd logged.
set -euo pipefail

SCALE=${SCALE:-smoke}
GPUS=${GPUS:-0}
read -r -a TARGETS <<<"${TARGETS:-all ablation sweep}"
CTLD_PORT=${SLURMCTLD_PORT:-16817}
SLURMD_PORT=${SLURMD_PORT:-16818}
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && git rev-parse --show-toplevel)
start_s=$(date +%s)

say() { printf '[slurm_check %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- (a) what is needed, installed?
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$REPO/.venv/bin/activate" ]; then
  say "using the virtual environment $REPO/.venv"
  # shellcheck disable=SC1091
  . "$REPO/.venv/bin/activate"
fi
# Run from inside a SLURM job, the job's SLURM_*/SBATCH_*/SRUN_* variables would steer this
# cluster's commands (and mark this script's processes as job processes at the end): drop them.
for v in $(compgen -e | grep -E '^(SLURM|SBATCH|SRUN)_' || true); do say "unsetting $v"; unset "$v"; done
missing=()
[ "$(id -u)" = 0 ] || missing+=("root (munged, slurmd run as root here; run with sudo)")
for c in munged munge unmunge; do command -v "$c" >/dev/null || missing+=("$c (apt-get install munge)"); done
for c in slurmctld; do command -v "$c" >/dev/null || missing+=("$c (apt-get install slurm-wlm)"); done
for c in slurmd; do command -v "$c" >/dev/null || missing+=("$c (apt-get install slurm-wlm)"); done
for c in sbatch srun squeue sinfo scontrol scancel; do
  command -v "$c" >/dev/null || missing+=("$c (apt-get install slurm-wlm)")
done
command -v git >/dev/null || missing+=("git")
command -v snakemake >/dev/null || missing+=("snakemake (pip install -e '.[pipeline,slurm,dev]' -c constraints.txt)")
command -v s2dc >/dev/null || missing+=("s2dc command (pip install -e '.[pipeline,slurm,dev]' -c constraints.txt)")
python3 -c "import snakemake_executor_plugin_slurm" 2>/dev/null \
  || missing+=("snakemake-executor-plugin-slurm (pip install -e '.[slurm]' -c constraints.txt)")
[ "${DVC_CHECK:-0}" != 1 ] || command -v dvc >/dev/null || missing+=("dvc, for DVC_CHECK=1 (pip install -e '.[pipeline,slurm,dev]' -c constraints.txt)")
if [ ${#missing[@]} -gt 0 ]; then
  say "missing, nothing was started:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 2
fi
say "versions: $(slurmctld -V), $(munged --version 2>&1 | head -1), snakemake $(snakemake --version), $(python3 -c '
from importlib.metadata import version as v
print(", ".join(f"{p} {v(p)}" for p in ("snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep", "torch")))')"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$CTLD_PORT" "$SLURMD_PORT"; do
  port_busy "$p" && die "port $p is in use (another SLURM?); set SLURMCTLD_PORT / SLURMD_PORT"
done

# ---------------------------------------------------------------- cleanup: always, by PID
T=$(mktemp -d "${TMPDIR:-/tmp}/s2dc-slurm-check.XXXXXX")
mkdir -p "$T"/{munge,state,spool,log,run,bin}
chmod 0755 "$T"    # munged wants every directory above its socket searchable by all
export SLURM_CONF=$T/slurm.conf       # every SLURM command here (and in the jobs) reads this one
MUNGE_PID="" CTLD_PID="" SLURMD_PID="" SNAP_PID=""
BG_GROUPS=()   # the commands started by in_group (each leads a session of its own)
ok=0

in_group() {  # in_group LOG DIR CMD...: CMD in DIR, in a new session (its PID is the group's id), output to LOG
  local log=$1 dir=$2
  shift 2
  # SIGINT reset to its default (a background command may get it ignored): on SIGINT Snakemake
  # cancels its SLURM jobs and stops; on SIGTERM it would wait for them to finish.
  (cd "$dir" && exec setsid env --default-signal=INT "$@") >"$log" 2>&1 &
  BG=$!
  BG_GROUPS+=("$BG")
}
run_group() {  # run_group LOG DIR CMD...: in_group, then wait for it; returns its exit status
  local rc=0
  in_group "$@"
  wait "$BG" || rc=$?
  return "$rc"
}
stop_group() {  # stop_group PGID: SIGINT to the whole group, up to 30 s, then SIGKILL to what is left of it
  local g=$1 i
  pgrep -g "$g" >/dev/null 2>&1 || { wait "$g" 2>/dev/null; return 0; }
  say "stopping process group $g: $(ps -o args= -p "$g" 2>/dev/null | cut -c1-80)"
  kill -INT -- "-$g" 2>/dev/null
  for i in $(seq 60); do pgrep -g "$g" >/dev/null 2>&1 || break; sleep 0.5; done
  if pgrep -g "$g" >/dev/null 2>&1; then say "process group $g still there after 30 s: KILL"; kill -KILL -- "-$g" 2>/dev/null; fi
  wait "$g" 2>/dev/null || true
}

stop_pid() {  # stop_pid NAME PID: TERM, wait up to 20 s, then KILL
  local name=$1 pid=$2 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then say "$name ($pid) did not stop on TERM: KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? i left
  trap - EXIT INT TERM
  set +e
  stop_pid "squeue snapshots" "$SNAP_PID"
  for g in "${BG_GROUPS[@]}"; do stop_group "$g"; done
  if [ -n "$CTLD_PID" ] && kill -0 "$CTLD_PID" 2>/dev/null; then
    if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
      say "cancelling the jobs still queued or running"; scancel --user="$(id -un)" 2>/dev/null
      for i in $(seq 60); do [ -z "$(squeue -h -t PD,R,CG -o %i 2>/dev/null)" ] && break; sleep 1; done
    fi
  fi
  stop_pid slurmd "$SLURMD_PID"
  stop_pid slurmctld "$CTLD_PID"
  stop_pid munged "$MUNGE_PID"
  # Nothing of this cluster may be left: its daemons were stopped by PID above; a job step
  # (slurmstepd and what it runs) outlives slurmd and is found by the environment it carries
  # (SLURM_CONF of this cluster and a SLURM_JOB_ID). Those are this script's; they are killed.
  left=""
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    env=$( { tr '\0' '\n' <"$d/environ"; } 2>/dev/null) || continue
    grep -qx "SLURM_CONF=$T/slurm.conf" <<<"$env" || continue
    if [ "$( { cat "$d/comm"; } 2>/dev/null)" = slurmstepd ] || grep -q '^SLURM_JOB_ID=' <<<"$env"; then
      left+="$pid $( { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | cut -c1-120)"$'\n'
      kill -KILL "$pid" 2>/dev/null
    fi
  done
  if [ -n "$left" ]; then say "job processes of this cluster were still running (killed):"; printf '%s' "$left"; rc=1
  else say "daemons stopped (munged, slurmctld, slurmd by PID); no process of this cluster is left"; fi
  if [ "$rc" = 0 ] && [ "$ok" = 1 ] && [ "${KEEP_TMP:-0}" != 1 ]; then rm -rf "$T"
  else say "temporary folder kept: $T"; fi
  say "wall time $(( $(date +%s) - start_s )) s, exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- (b) munge + a one-node cluster
say "temporary folder $T"
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$T/munge/munge.key"
SOCK=$T/munge/munge.socket
# --force: munged refuses some set-ups (running as root, a socket under /tmp) unless forced.
munged --foreground --force --socket="$SOCK" --key-file="$T/munge/munge.key" \
  --pid-file="$T/run/munged.pid" --seed-file="$T/munge/seed" >"$T/log/munged.log" 2>&1 &
MUNGE_PID=$!
for i in $(seq 40); do munge -n -S "$SOCK" 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 && break; sleep 0.25; done
munge -n -S "$SOCK" | unmunge -S "$SOCK" >/dev/null || die "munged does not answer (see $T/log/munged.log)"
say "munged up (pid $MUNGE_PID), its own key and socket"

# The node as slurmd sees this machine (CPUs, sockets, cores, threads, RealMemory in MB).
node_line=$(slurmd -C | head -1)
NODE=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$node_line")
[ -n "$NODE" ] || die "cannot read the node from 'slurmd -C': $node_line"
OVERRIDES=""
if [ "${DVC_CHECK:-0}" = 1 ]; then  # the node declares twice its CPUs: a job may ask more threads than this machine has
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
  cores=$(sed -n 's/.* CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$node_line")
  DVC_THREADS=$((2 * cpus))
  node_line=$(sed -e "s/ CPUs=$cpus / CPUs=$DVC_THREADS /" -e "s/ CoresPerSocket=$cores / CoresPerSocket=$((2 * cores)) /" \
    <<<"$node_line")
  OVERRIDES="SlurmdParameters=config_overrides"
fi
say "node: $node_line"
cat >"$SLURM_CONF" <<EOF
# One-node cluster of bench/slurm_check.sh (written $(date -Is)).
ClusterName=s2dccheck
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$T/plugstack.conf
# No cgroups here (container): processes are tracked through /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No accounting (no slurmdbd): sacct is disabled; finished jobs stay in squeue for MinJobAge
# (an hour: the whole check, so that squeue can both serve as the plugin's status command and
# show every job of the run at the end).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=300
$OVERRIDES
EOF
if [ "$GPUS" -gt 0 ]; then
  # GPUS=N: the node has N GPUs as GRES (slurmd counts a GPU only with a device file of its own: /dev/null,
  # /dev/zero, ... stand in; nothing is bound, the jobs compute on the CPU) and is the 'gpu' partition; 'cpu' is
  # a node like it but without GPUs, which never comes up (State=FUTURE).
  devices=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom)
  [ "$GPUS" -le ${#devices[@]} ] || die "GPUS=$GPUS: at most ${#devices[@]} stand-in devices"
  { echo "AutoDetect=off"; for dev in "${devices[@]:0:$GPUS}"; do echo "NodeName=$NODE Name=gpu File=$dev"; done; } \
    >"$T/gres.conf"
  cat >>"$SLURM_CONF" <<EOF
GresTypes=gpu
$node_line Gres=gpu:$GPUS NodeAddr=127.0.0.1 State=UNKNOWN
${node_line/NodeName=$NODE/NodeName=cpuonly} NodeAddr=127.0.0.2 State=FUTURE
PartitionName=cpu Nodes=cpuonly Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF
else
  cat >>"$SLURM_CONF" <<EOF
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
# The project's profile names a partition per rule, 'gpu' or 'cpu': both are this node. No GRES: there is no
# GPU here, and the smoke scale asks for none (gpu: 0).
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF
fi
: >"$T/plugstack.conf"
slurmctld -D -f "$SLURM_CONF" >"$T/log/slurmctld.stdout" 2>&1 &
CTLD_PID=$!
for i in $(seq 60); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
scontrol ping | grep -q UP || die "slurmctld is not up (see $T/log/slurmctld.log)"
slurmd -D -f "$SLURM_CONF" >"$T/log/slurmd.stdout" 2>&1 &
SLURMD_PID=$!
state=""
for i in $(seq 120); do
  state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | sort -u | tr '\n' ' ')
  [ "$state" = "idle " ] && break
  sleep 0.5
done
[ "$state" = "idle " ] || die "node $NODE is '$state', not idle (see $T/log/slurmd.log)"
say "slurmctld (pid $CTLD_PID) and slurmd (pid $SLURMD_PID) up; sinfo:"
sinfo -o '%P %a %l %D %c %m %T %N'

# ---------------------------------------------------------------- (c) the DAG through SLURM
copy_repo() {  # the tracked files of the repository as they are in its work tree
  mkdir -p "$1"
  (cd "$REPO" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$1"
}
WS=$T/wd-slurm WL=$T/wd-local
copy_repo "$WS"
copy_repo "$WL"
say "copied $(git -C "$REPO" ls-files | wc -l) tracked files to $WS and $WL (from $REPO, $(git -C "$REPO" rev-parse --short HEAD))"
if [ "$GPUS" -gt 0 ]; then  # the SLURM copy's stages ask for a GPU each, as at scale paper (results are unchanged)
  python3 - "$WS/params.yaml" "$SCALE" <<'EOF'
import sys, yaml
path, scale = sys.argv[1], sys.argv[2]
params = yaml.safe_load(open(path))
stages = params["scales"][scale]
for stage in ("pretrain", "finetune", "probe", "sweep"):
    stages[stage]["resources"]["gpu"] = 1
yaml.safe_dump(params, open(path, "w"), sort_keys=False)
EOF
  say "GPUS=$GPUS: every stage of scale $SCALE in the SLURM copy asks for one GPU (its params.yaml)"
fi

# The SLURM jobs run `snakemake --executor slurm-jobstep`, which starts each rule with a nested
# `srun`, but first drops every SLURM_* variable but a few job ids from that srun's environment,
# SLURM_CONF included (snakemake-executor-plugin-slurm-jobstep 0.6.1). A site whose slurm.conf is
# where Slurm looks by default (/etc/slurm) or that runs configless does not notice; this cluster's
# slurm.conf is in a temporary folder, so the jobs see an `srun` first on PATH that puts
# SLURM_CONF back (and logs each call as evidence). Nothing else is wrapped.
cat >"$T/bin/srun" <<EOF
#!/bin/sh
echo "\$(date +%H:%M:%S) job \${SLURM_JOB_ID:-?}: srun \$*" >>"$T/log/srun_calls.log"
SLURM_CONF="$SLURM_CONF" exec "$(command -v srun)" "\$@"
EOF
chmod +x "$T/bin/srun"

# Flags on top of the profile, for this cluster and none for the workflow:
#   --slurm-status-command squeue  sacct is disabled without slurmdbd; squeue sees the jobs for
#                                MinJobAge (3600 s here) after they end;
#   --slurm-keep-successful-logs only for the evidence: keep the SLURM log of every job.
smk_slurm=(snakemake --workflow-profile profiles/slurm "${TARGETS[@]}" --config "scale=$SCALE"
  --slurm-status-command squeue --slurm-keep-successful-logs)
say "SLURM run in $WS:"
echo "    ${smk_slurm[*]}"
(
  trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  prev="" sp=""
  while :; do
    sleep 2 & sp=$!
    wait "$sp"
    cur=$(squeue -h -o '%i %P %T %C %m %l %k' 2>/dev/null || true)
    if [ "$cur" != "$prev" ]; then
      { printf '%(%H:%M:%S)T\n' -1; [ -n "$cur" ] && sed 's/^/  /' <<<"$cur" || echo "  (empty)"; } >>"$T/squeue_snapshots.log"
      prev=$cur
    fi
  done
) &
SNAP_PID=$!
t0=$(date +%s)
rc_s=0
run_group "$T/snakemake_slurm.log" "$WS" env PATH="$T/bin:$PATH" timeout -s INT "$RUN_TIMEOUT" "${smk_slurm[@]}" || rc_s=$?
t_slurm=$(( $(date +%s) - t0 ))
sleep 2; stop_pid "squeue snapshots" "$SNAP_PID"; SNAP_PID=""
# Finished jobs stay in slurmctld's memory for MinJobAge: this is the record of every job.
squeue --states=all -h -o '%i|%P|%T|%C|%m|%l|%M|%N|%k' | sort -n >"$T/squeue_after.log"
if [ "$rc_s" != 0 ]; then tail -40 "$T/snakemake_slurm.log"; die "the SLURM run failed (exit $rc_s), log $T/snakemake_slurm.log"; fi
say "SLURM run done in ${t_slurm} s: $(grep -E 'steps \(100%\) done' "$T/snakemake_slurm.log" | tail -1)"

# ---------------------------------------------------------------- evidence: the jobs were SLURM's
say "evidence that the jobs went through SLURM (no sacct: no accounting on this cluster)"
echo "  Snakemake's log (job -> SLURM job id):"
grep -E 'submitted with SLURM jobid' "$T/snakemake_slurm.log" | sed 's/^/    /' || true
echo "  rules run on the submitting host (localrules):"
grep -E '^localrule ' "$T/snakemake_slurm.log" | sort | uniq -c | sed 's/^/    /' || true
echo "  squeue --states=all right after the run (id|partition|state|cpus|mem|time limit|elapsed|node|comment):"
sed 's/^/    /' "$T/squeue_after.log"
echo "  squeue snapshots while it ran (changes only):"
sed 's/^/    /' "$T/squeue_snapshots.log" 2>/dev/null || echo "    (none)"
echo "  slurmctld.log:"
grep -E 'sched: Allocate JobId|_job_complete: JobId=[0-9]+ done|done$' "$T/log/slurmctld.log" | grep -E 'Allocate|_job_complete.*done' | sed 's/^/    /' || true
echo "  slurmd.log:"
grep -E 'Launching batch job|launch task StepId|job [0-9]+ completed|done with job' "$T/log/slurmd.log" | sed 's/^/    /' || true
echo "  the nested srun of each job (from inside the SLURM jobs, through the SLURM_CONF shim):"
cut -c1-160 "$T/log/srun_calls.log" 2>/dev/null | sed 's/^/    /' || echo "    (none)"
echo "  SLURM job logs kept by the plugin:"
(cd "$WS" && find .snakemake/slurm_logs -type f -name '*.log' | sort | sed 's/^/    /')

# Checks of the evidence: every rule that Snakemake did not run as a localrule was submitted, each
# submitted job is a SLURM job that COMPLETED, on the partition that profiles/slurm names for its rule.
python3 - "$T/snakemake_slurm.log" "$T/squeue_after.log" "$WS/profiles/slurm/config.yaml" <<'EOF'
import re, sys, yaml
log = open(sys.argv[1]).read()
jobs = {r.split("|")[0]: r.split("|") for r in open(sys.argv[2]).read().split()}
prof = yaml.safe_load(open(sys.argv[3]))
default_part = prof["default-resources"]["slurm_partition"]
part_of = {rule: res["slurm_partition"] for rule, res in prof.get("set-resources", {}).items()
           if "slurm_partition" in res}
ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
remote_rules = re.findall(r"^rule (\w+):", log, re.M)
bad = []
if not ids:
    bad.append("Snakemake submitted no SLURM job")
if len(ids) != len(remote_rules):
    bad.append(f"{len(remote_rules)} non-local jobs but {len(ids)} SLURM submissions")
seen = []
for i in ids:
    if i not in jobs:
        bad.append(f"job {i} is not known to squeue"); continue
    _, part, state, *_, comment = jobs[i]
    m = re.match(r"rule_(.+?)_wildcards_", comment + "_wildcards_")
    rule = m.group(1) if m else comment
    seen.append(f"{i}:{rule}@{part}")
    if state != "COMPLETED":
        bad.append(f"job {i} ({rule}) is {state}")
    if part_of.get(rule, default_part) != part:
        bad.append(f"job {i} ({rule}) ran on partition {part}, the profile says {part_of.get(rule, default_part)}")
if sorted(r for r in remote_rules) != sorted(x.split(":")[1].split("@")[0] for x in seen):
    bad.append(f"rules run remotely {sorted(remote_rules)} do not match the SLURM jobs {seen}")
for b in bad:
    print("  EVIDENCE CHECK FAILED:", b)
if not bad:
    print(f"  check: {len(ids)} SLURM jobs (job:rule@partition {' '.join(seen)}), all COMPLETED, "
          "each on the partition profiles/slurm gives its rule; every non-local rule went through SLURM")
sys.exit(1 if bad else 0)
EOF
if [ "$GPUS" -gt 0 ]; then  # each job's step asked for its GPU (the nested srun of every SLURM job, logged by the shim)
  n_jobs=$(grep -c 'submitted with SLURM jobid' "$T/snakemake_slurm.log")
  n_gpu=$(grep -c -- ' --gpus=1 ' "$T/log/srun_calls.log" || true)
  [ "$n_gpu" = "$n_jobs" ] || die "GPUS=$GPUS: $n_gpu of the $n_jobs SLURM jobs ran their step with --gpus=1"
  echo "  check: the step of each of the $n_jobs SLURM jobs ran with --gpus=1 (srun calls), on partition gpu"
fi

# ---------------------------------------------------------------- (optional) dvc repro through SLURM
# DVC_CHECK=1: a dvc.yaml stage (`snakemake --workflow-profile "$S2DC_WORKFLOW_PROFILE" pretrained`) sent to SLURM
# with S2DC_WORKFLOW_PROFILE=profiles/slurm, in a third copy (a git repository of its own; params.yaml set to $SCALE,
# its pretrainings asking for $DVC_THREADS threads, twice this machine's CPUs). SNAKEMAKE_PROFILE adds, as a general
# profile, the one setting this cluster needs (on a site with accounting, nothing). Each pretraining must be given
# $DVC_THREADS CPUs: the stages ran `snakemake --cores all` until 2026-12-02, and `cores: all` capped them at this
# machine's count. Its encoder is then compared with the SLURM run's (one thread) to a tolerance, as its sums run on
# more threads.
if [ "${DVC_CHECK:-0}" = 1 ]; then
  WD=$T/wd-dvc
  copy_repo "$WD"
  (cd "$WD" && git init -q && git add -A \
    && git -c user.name=slurm_check -c user.email=slurm_check@localhost commit -qm "copy for slurm_check" \
    && sed -i "s/^scale: .*/scale: $SCALE/" params.yaml)
  python3 - "$WD/params.yaml" "$SCALE" "$DVC_THREADS" <<'PY'
import sys, yaml
path, scale, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
params = yaml.safe_load(open(path))
params["scales"][scale]["pretrain"]["resources"]["threads"] = threads
yaml.safe_dump(params, open(path, "w"), sort_keys=False)
PY
  mkdir -p "$T/profile-nodb"
  printf '# For a cluster without accounting (no slurmdbd, so no sacct).\nslurm-status-command: squeue\n' \
    >"$T/profile-nodb/config.yaml"
  say "dvc repro through SLURM in $WD (params.yaml: scale: $SCALE, pretrain threads: $DVC_THREADS):"
  echo "    S2DC_WORKFLOW_PROFILE=profiles/slurm SNAKEMAKE_PROFILE=$T/profile-nodb dvc repro pretrain"
  t0=$(date +%s)
  rc_d=0
  run_group "$T/dvc_repro.log" "$WD" env S2DC_WORKFLOW_PROFILE=profiles/slurm SNAKEMAKE_PROFILE="$T/profile-nodb" \
    DVC_NO_ANALYTICS=1 PATH="$T/bin:$PATH" timeout -s INT "$RUN_TIMEOUT" dvc repro pretrain || rc_d=$?
  [ "$rc_d" = 0 ] || { tail -40 "$T/dvc_repro.log"; die "dvc repro failed (exit $rc_d), log $T/dvc_repro.log"; }
  grep -E "^Running stage|^> |^Using |^localrule |^rule |submitted with SLURM jobid" "$T/dvc_repro.log" \
    | cut -c1-150 | sed 's/^/    /'
  dvc_ids=$(grep -oE 'submitted with SLURM jobid [0-9]+' "$T/dvc_repro.log" | awk '{print $NF}')
  [ -n "$dvc_ids" ] || die "dvc repro sent no job to SLURM"
  n_pre=0
  for id in $dvc_ids; do
    line=$(squeue --states=all -h -j "$id" -o '%i|%P|%T|%C|%k')
    echo "    squeue (id|partition|state|CPUs|comment): $line"
    IFS='|' read -r _ _ state cpus comment <<<"$line"
    [ "$state" = COMPLETED ] || die "SLURM job $id of dvc repro is not COMPLETED"
    if [[ $comment == rule_pretrain_* ]]; then
      n_pre=$((n_pre + 1))
      [ "$cpus" = "$DVC_THREADS" ] || die "SLURM job $id (a pretraining) was given $cpus CPUs, not its $DVC_THREADS threads"
    fi
  done
  [ "$n_pre" -gt 0 ] || die "no pretraining among the SLURM jobs of dvc repro"
  grep -q '^  pretrain:' "$WD/dvc.lock" || die "dvc.lock has no pretrain stage"
  e1=$(sha256sum <"$WD/results/$SCALE/pretrain/CT/s2dc/encoder.pt" | cut -c1-16)
  e2=$(sha256sum <"$WS/results/$SCALE/pretrain/CT/s2dc/encoder.pt" | cut -c1-16)
  diff=$(python3 - "$WD/results/$SCALE/pretrain/CT/s2dc/encoder.pt" "$WS/results/$SCALE/pretrain/CT/s2dc/encoder.pt" <<'PY'
import sys, torch
a, b = (torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in sys.argv[1:])
assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
print(f"{max((a[k].double() - b[k].double()).abs().max().item() for k in a):.3g}")
PY
)
  say "dvc repro done in $(( $(date +%s) - t0 )) s: $n_pre pretraining(s) given $DVC_THREADS CPUs each; dvc.lock records the pretrain stage"
  say "its CT encoder sha256 $e1 (the SLURM run's, one thread: $e2), largest weight difference $diff"
  python3 -c "import sys; sys.exit(float(sys.argv[1]) > 1e-4)" "$diff" \
    || die "the encoder of dvc repro differs from the SLURM run's by $diff (more than 1e-4)"
fi

# ---------------------------------------------------------------- (d) the same DAG locally
smk_local=(snakemake --cores 2 "${TARGETS[@]}" --config "scale=$SCALE")
say "local run in $WL:"
echo "    ${smk_local[*]}"
t0=$(date +%s)
rc_l=0; run_group "$T/snakemake_local.log" "$WL" timeout -s INT "$RUN_TIMEOUT" "${smk_local[@]}" || rc_l=$?
t_local=$(( $(date +%s) - t0 ))
if [ "$rc_l" != 0 ]; then tail -40 "$T/snakemake_local.log"; die "the local run failed (exit $rc_l), log $T/snakemake_local.log"; fi
say "local run done in ${t_local} s: $(grep -E 'steps \(100%\) done' "$T/snakemake_local.log" | tail -1)"


# ---------------------------------------------------------------- (e) compare the two runs
say "results: SLURM run vs local run"
cmp_rc=0
python3 - "$WS/results/$SCALE" "$WL/results/$SCALE" <<'EOF' || cmp_rc=$?
# Every JSON under results/<scale> (metrics.json of the table, of each fine-tuning run and its
# DVCLive log, the probe, the pretraining summaries, the splits), leaf by leaf; benchmark.csv cell
# by cell; the Markdown tables (benchmark.md, probe/*.md) byte for byte; the encoder and the pretraining
# checkpoints by SHA-256. Caches (cache/ folders, named after absolute paths) are not results. The sweep is
# compared by its bookkeeping (docs/sweeps.md), not trial by trial: its trials are reproducible with several
# workers, but their times and which worker ran each are not.
import csv, hashlib, json, math, re, sys
import yaml
from pathlib import Path
import torch

roots = Path(sys.argv[1]), Path(sys.argv[2])
WALL_CLOCK = {"seconds", "minutes"}  # run time of a job (JSON key, CSV column): differs between any two runs
# A pretraining run's identity (run.json, and each checkpoint) records each volume's stamp (s2dc.files.file_stamp:
# size, modification time, inode, status-change time): the two copies generated their data at different moments
# into different files, so all but the size differ between ANY two runs.
FILE_TIME = re.compile(r"identity\.data\.files\[\d+\]\[[234]\]$")
# A fine-tuning's metrics.json records the SHA-256 of its other keys, its seconds among them: it differs between any
# two runs too, and is checked instead to be the checksum of its own file's content (s2dc.train.outputs.is_edited).
from s2dc.train.outputs import is_edited

def files(pattern):
    found = set()
    for r in roots:
        found |= {p.relative_to(r) for p in r.rglob(pattern)
                  if "cache" not in p.relative_to(r).parts and p.relative_to(r).parts[0] != "sweep"}
    return sorted(found)

def leaves(o, p=""):
    if isinstance(o, dict):
        for k, v in o.items():
            yield from leaves(v, f"{p}.{k}" if p else str(k))
    elif isinstance(o, (list, tuple)):
        for i, v in enumerate(o):
            yield from leaves(v, f"{p}[{i}]")
    else:
        yield p, o

def same(x, y):
    if torch.is_tensor(x) or torch.is_tensor(y):
        return torch.is_tensor(x) and torch.is_tensor(y) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))

def show(v, width=24):
    s = "-" if v is None else repr(v) if isinstance(v, float) else str(v)
    return s if len(s) <= width else s[: width - 1] + "…"

rows, diffs = [], []   # rows: (file, key, SLURM, local, verdict)
missing = object()
def load(p):
    if p.suffix == ".json":
        return dict(leaves(json.loads(p.read_text())))
    return {f"row{i}.{col}": val for i, row in enumerate(csv.DictReader(p.open()), 1) for col, val in row.items()}

for f in files("*.json") + files("*.csv"):
    a, b = [(r / f) for r in roots]
    if not (a.exists() and b.exists()):
        diffs.append(f"{f}: only in the {'SLURM' if a.exists() else 'local'} run"); continue
    la, lb = load(a), load(b)
    for k in list(la) + [k for k in lb if k not in la]:
        va, vb = la.get(k, missing), lb.get(k, missing)
        if k.rsplit(".", 1)[-1] in WALL_CLOCK:
            verdict = "ignored: wall clock"
        elif k == "result_sha256" and not any(is_edited(json.loads(p.read_text())) for p in (a, b)):
            verdict = "ignored: wall clock (each its own file's checksum)"
        elif FILE_TIME.search(k):
            verdict = "ignored: file time"
        elif va is not missing and vb is not missing and same(va, vb):
            verdict = "="
        else:
            verdict = "DIFFERENT"; diffs.append(f"{f}: {k}: {va!r} vs {vb!r}")
        rows.append((str(f), k, show(None if va is missing else va), show(None if vb is missing else vb), verdict))
for pattern in ("*.md", "*.pt"):
    for f in files(pattern):
        if pattern == "*.pt" and f.parts[0] != "pretrain":
            continue
        a, b = [(r / f) for r in roots]
        ha, hb = [hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.exists() else "<absent>" for p in (a, b)]
        verdict = "=" if ha == hb else "DIFFERENT"
        if ha != hb and a.exists() and b.exists() and pattern == "*.pt":
            sa, sb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
            la, lb = dict(leaves(sa)), dict(leaves(sb))
            off = [k for k in la.keys() | lb.keys() if not (k in la and k in lb and same(la[k], lb[k]))]
            if off and all(FILE_TIME.search(k) for k in off):
                verdict = (f"= in all {len(la) - len(off)} other entries; bytes differ only in "
                           f"the {len(off)} recorded times and inodes of the pool's volumes")
            else:
                verdict = "DIFFERENT: " + ", ".join(sorted(off)[:5])
        if verdict.startswith("DIFFERENT"):
            diffs.append(f"{f}: sha256 {ha} vs {hb} ({verdict})")
        rows.append((str(f), "sha256[:16]", ha, hb, verdict))

if any((r / "sweep/best.yaml").exists() for r in roots):
    books = []
    for r in roots:
        best = yaml.safe_load((r / "sweep/best.yaml").read_text()) if (r / "sweep/best.yaml").exists() else {}
        books.append({k: best.get(k) for k in ("study", "budget", "finished")})
    for k in books[0]:
        va, vb = books[0][k], books[1][k]
        verdict = "=" if va == vb and va is not None else "DIFFERENT"
        if verdict != "=":
            diffs.append(f"sweep/best.yaml: {k}: {va!r} vs {vb!r}")
        rows.append(("sweep/best.yaml", k, show(va), show(vb), verdict))
    if books[0]["budget"] != books[0]["finished"] or books[1]["budget"] != books[1]["finished"]:
        diffs.append(f"sweep: a run did not finish its budget ({books})")

wk = min(max(len(r[1]) for r in rows), 56)
print(f"  {'key':<{wk}}  {'SLURM run':>24}  {'local run':>24}  same?")
prev = None
for f, k, va, vb, verdict in rows:
    if f != prev:
        print(f"  [{f}]")
        prev = f
    print(f"  {show(k, wk):<{wk}}  {va:>24}  {vb:>24}  {verdict}")
n_cmp = sum(1 for r in rows if not r[4].startswith("ignored"))
print(f"\n  {len(files('*.json'))} JSON files, {len(files('*.csv')) + len(files('*.md'))} tables, "
      f"{sum(1 for r in rows if r[0].endswith('.pt'))} checkpoints: {n_cmp} values compared "
      f"({sum(1 for r in rows if r[4] == '=')} identical, "
      f"{sum(1 for r in rows if r[4].startswith('= in all'))} checkpoint(s) equal but for the volumes' file times), "
      f"{sum(1 for r in rows if r[4].startswith('ignored'))} wall-clock and file-time values ignored, {len(diffs)} differences")
for d in diffs:
    print("  DIFFERENCE:", d)
sys.exit(1 if diffs else 0)
EOF
say "SLURM run ${t_slurm} s, local run ${t_local} s"
if [ "$cmp_rc" != 0 ]; then
  say "FAIL: the SLURM run and the local run differ"
  exit 1
fi
ok=1
say "PASS: the DAG ran through SLURM ($(grep -c 'submitted with SLURM jobid' "$T/snakemake_slurm.log") jobs) and its results equal the local run's"
