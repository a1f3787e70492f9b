#!/usr/bin/env bash
# N processes of one job on this machine, joined by jax.distributed over loopback.
#
#   launch/local.sh [KEY=VALUE ...] JOB [JOB FLAGS ...]
#   launch/local.sh PROCESSES=2 DEVICES=2 train \
#       --config=experiments/configs/wavenet.py:runlocal --workdir=/tmp/wn
#
# JOB is train, evaluate, sample or benchmark (python -m experiments.JOB), or any module path
# (e.g. tests.foo). Keys:
#   PROCESSES  processes to start (default 2)
#   PLATFORM   cpu (default) or gpu
#   DEVICES    devices per process: on cpu, faked host devices (default 1); on gpu, GPUs handed
#              out in order, process i getting GPUs i*DEVICES .. (i+1)*DEVICES-1 (default 1)
#   PORT       the coordinator's port on 127.0.0.1 (default: a free one)
#   PYTHON     the interpreter (default: .venv/bin/python if present, else python3)
#   LOGDIR     each process's full output also goes to LOGDIR/process_<i>.log (default: none)
#   HEARTBEAT  seconds without a heartbeat before the others give up on a dead process
#              (WAVEGEN_HEARTBEAT_SECONDS; default 30)
#   GRACE      seconds the others get to exit after one fails, before SIGKILL (default 10)
#
# Every line a process prints is prefixed with [i]. If one process fails, the others are sent
# SIGTERM (then SIGKILL after GRACE seconds) and the script exits with the failed one's status,
# naming it. SIGINT or SIGTERM to the script is passed to every process (a preemption: the
# trainer saves a checkpoint and exits 0).
set -euo pipefail

PROCESSES=2 PLATFORM=cpu DEVICES=1 PORT='' PYTHON='' LOGDIR='' HEARTBEAT=30 GRACE=10
while [[ $# -gt 0 && $1 == *=* ]]; do
  key=${1%%=*}
  case $key in
    PROCESSES|PLATFORM|DEVICES|PORT|PYTHON|LOGDIR|HEARTBEAT|GRACE) printf -v "$key" '%s' "${1#*=}" ;;
    *) echo "local.sh: unknown key $key (expected PROCESSES, PLATFORM, DEVICES, PORT, PYTHON," \
         "LOGDIR, HEARTBEAT or GRACE)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $# -lt 1 ]]; then
  echo "usage: launch/local.sh [KEY=VALUE ...] JOB [JOB FLAGS ...]" >&2
  exit 2
fi
job=$1
shift
case $job in
  train|evaluate|sample|benchmark) module=experiments.$job ;;
  *) module=$job ;;
esac
for key in PROCESSES DEVICES HEARTBEAT GRACE; do
  if ! [[ ${!key} =~ ^[1-9][0-9]*$ ]]; then
    echo "local.sh: $key=${!key}: expected a positive integer" >&2
    exit 2
  fi
done
if [[ $PLATFORM != cpu && $PLATFORM != gpu ]]; then
  echo "local.sh: PLATFORM=$PLATFORM: expected cpu or gpu" >&2
  exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z $PYTHON ]]; then
  if [[ -x $root/.venv/bin/python ]]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
if [[ -z $PORT ]]; then
  PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0));
print(s.getsockname()[1])')
fi
if [[ -n $LOGDIR ]]; then mkdir -p "$LOGDIR"; fi

pids=()
stop_all() {  # $1: signal
  local pid
  for pid in "${pids[@]}"; do kill "-$1" "$pid" 2>/dev/null || true; done
}
trap 'stop_all TERM' INT TERM

for ((i = 0; i < PROCESSES; i++)); do
  env_vars=(JAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT" JAX_NUM_PROCESSES="$PROCESSES"
            JAX_PROCESS_ID="$i" WAVEGEN_HEARTBEAT_SECONDS="$HEARTBEAT" PYTHONUNBUFFERED=1)
  if [[ $PLATFORM == cpu ]]; then
    env_vars+=(JAX_PLATFORMS=cpu
               XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$DEVICES")
  else
    ids=$(seq -s, $((i * DEVICES)) $(((i + 1) * DEVICES - 1)))
    env_vars+=(JAX_LOCAL_DEVICE_IDS="$ids")
  fi
  log=/dev/null
  if [[ -n $LOGDIR ]]; then log=$LOGDIR/process_$i.log; fi
  (cd "$root" && exec env "${env_vars[@]}" "$PYTHON" -m "$module" "$@") \
    > >(tee "$log" | sed -u "s/^/[$i] /") 2>&1 &
  pids+=($!)
done

status=0
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  done_pid=''
  set +e
  wait -n -p done_pid "${running[@]}"
  code=$?
  set -e
  if [[ -z $done_pid ]]; then continue; fi  # a trapped signal interrupted the wait
  left=()
  for pid in "${running[@]}"; do
    if [[ $pid != "$done_pid" ]]; then left+=("$pid"); fi
  done
  running=("${left[@]}")
  for ((i = 0; i < PROCESSES; i++)); do
    if [[ ${pids[i]} == "$done_pid" ]]; then index=$i; fi
  done
  if ((code != 0 && status == 0)); then
    status=$code
    how="status $code"
    if ((code > 128)); then how+=" (SIG$(kill -l $((code - 128))))"; fi
    echo "local.sh: process $index exited with $how; stopping the others" >&2
    stop_all TERM
    (
      sleep "$GRACE" & sleeper=$!
      trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
      wait "$sleeper"
      stop_all KILL
    ) > /dev/null 2>&1 &
    killer=$!
  fi
done
if [[ -n ${killer:-} ]]; then kill "$killer" 2>/dev/null || true; fi
wait  # the output filters
exit "$status"
