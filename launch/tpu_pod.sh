#!/usr/bin/env bash
# One job on every worker of a Cloud TPU VM slice (v4-8 and up), creating the slice if needed.
#
#   launch/tpu_pod.sh NAME=my-tpu ZONE=us-central2-b [KEY=VALUE ...] JOB [JOB FLAGS ...]
#   launch/tpu_pod.sh NAME=wn ZONE=us-central2-b TYPE=v4-32 train \
#       --config=experiments/configs/wavenet.py --workdir=/mnt/shared/runs/wn
#
# Steps: (1) create the TPU VM if it does not exist (gcloud compute tpus tpu-vm create);
# (2) copy this checkout's tracked files to ~/wavegen on every worker and install the package
# with its TPU extra into ~/wavegen/.venv (skipped with SETUP=0); (3) run
# `python -m experiments.JOB JOB FLAGS` on all workers at once with
# `gcloud compute tpus tpu-vm ssh --worker=all`. Each worker is one JAX process;
# WAVEGEN_DISTRIBUTED=auto makes the jobs call jax.distributed.initialize(), which finds the
# coordinator and the worker's index from the TPU metadata. Keys:
#   NAME     the TPU VM (required)
#   ZONE     its zone (required)
#   PROJECT  the GCP project (default: gcloud's configured one)
#   TYPE     accelerator type, used when creating (default v4-8)
#   VERSION  TPU software version, used when creating (default tpu-ubuntu2204-base)
#   SPOT     1: create as a Spot VM (default 0)
#   SETUP    0: skip the copy and install (default 1)
#   DELETE   1: delete the TPU VM after the job (default 0)
#
# The workdir and the TFDS data_dir must be on a filesystem every worker sees (e.g. a Filestore
# share or a gcsfuse-mounted bucket, at the same path everywhere).
set -euo pipefail

NAME='' ZONE='' PROJECT='' TYPE=v4-8 VERSION=tpu-ubuntu2204-base SPOT=0 SETUP=1 DELETE=0
while [[ $# -gt 0 && $1 == *=* ]]; do
  key=${1%%=*}
  case $key in
    NAME|ZONE|PROJECT|TYPE|VERSION|SPOT|SETUP|DELETE) printf -v "$key" '%s' "${1#*=}" ;;
    *) echo "tpu_pod.sh: unknown key $key (expected NAME, ZONE, PROJECT, TYPE, VERSION, SPOT," \
         "SETUP or DELETE)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z $NAME || -z $ZONE || $# -lt 1 ]]; then
  echo "usage: launch/tpu_pod.sh NAME=... ZONE=... [KEY=VALUE ...] JOB [JOB FLAGS ...]" >&2
  exit 2
fi
case $1 in
  train|evaluate|sample|benchmark) module=experiments.$1 ;;
  *) echo "tpu_pod.sh: JOB=$1: expected train, evaluate, sample or benchmark" >&2; exit 2 ;;
esac
shift

where=(--zone="$ZONE")
if [[ -n $PROJECT ]]; then where+=(--project="$PROJECT"); fi
tpu=(gcloud compute tpus tpu-vm)

if ! "${tpu[@]}" describe "$NAME" "${where[@]}" > /dev/null 2>&1; then
  echo "tpu_pod.sh: creating $NAME ($TYPE, $VERSION) in $ZONE"
  create=("${tpu[@]}" create "$NAME" "${where[@]}" --accelerator-type="$TYPE"
          --version="$VERSION")
  if [[ $SPOT == 1 ]]; then create+=(--spot); fi
  "${create[@]}"
fi

if [[ $SETUP == 1 ]]; then
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  archive=$(mktemp --suffix=.tar.gz)
  trap 'rm -f "$archive"' EXIT
  git -C "$root" ls-files -z | tar -C "$root" -czf "$archive" --null -T -
  echo "tpu_pod.sh: installing on every worker of $NAME"
  "${tpu[@]}" scp "$archive" "$NAME:wavegen.tar.gz" "${where[@]}" --worker=all
  "${tpu[@]}" ssh "$NAME" "${where[@]}" --worker=all --command="set -e
    mkdir -p ~/wavegen && tar -xzf ~/wavegen.tar.gz -C ~/wavegen && cd ~/wavegen
    python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"
fi

# Quote the job's flags once for the remote shell.
printf -v flags ' %q' "$@"
echo "tpu_pod.sh: running $module on every worker of $NAME"
status=0
"${tpu[@]}" ssh "$NAME" "${where[@]}" --worker=all --command="cd ~/wavegen &&
  WAVEGEN_DISTRIBUTED=auto PYTHONUNBUFFERED=1 .venv/bin/python -m $module$flags" || status=$?

if [[ $DELETE == 1 ]]; then
  echo "tpu_pod.sh: deleting $NAME"
  "${tpu[@]}" delete "$NAME" "${where[@]}" --quiet
fi
exit "$status"
