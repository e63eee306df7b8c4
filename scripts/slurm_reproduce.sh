#!/usr/bin/env bash
# The paper plan (`thadcr reproduce --profile paper`) on a SLURM cluster: one shard of the plan per
# array task, each run trained with torchrun on the task's GPUs, then one job that writes the tables.
# Submit from the repository root (README, "The paper profile"):
#
#   .venv/bin/thadcr reproduce --profile paper --dry-run --shard 0/8     # runs, states, hours by shard
#   jobid=$(sbatch --parsable --array=0-7 scripts/slurm_reproduce.sh)     # shard i/8 in task i
#   sbatch --dependency=afterany:$jobid --time=1:00:00 --wrap "bash scripts/slurm_reproduce.sh render"
#
# Usage: slurm_reproduce.sh [shard|render] [more `thadcr reproduce` options, e.g. --set epochs=10]
#   shard   (default) run this array task's shard of the plan (shard_of_task below); a task that
#           is requeued (preemption, node failure, or the time limit: see --signal below) skips the
#           runs it finished and resumes the interrupted one from its last epoch (last.pt)
#   render  `thadcr reproduce --render-only`: the tables from every finished run, status 1 while
#           runs are unfinished (no GPU needed)
# Environment (all optional): THADCR_SHARDS (see shard_of_task), THADCR_PROFILE (paper),
# THADCR_RESULTS (results), THADCR (the thadcr command: .venv/bin/thadcr), THADCR_GPUS (GPUs per
# run: $SLURM_GPUS_ON_NODE, else 1), THADCR_LAUNCHER (what starts one run: .venv/bin/torchrun
# --standalone --nproc_per_node $THADCR_GPUS), THADCR_SCONTROL (scontrol). The tests
# (tests/test_dry_run.py) replace THADCR, THADCR_LAUNCHER and THADCR_SCONTROL with stubs.
#
# Adapt the lines below to the cluster (partition, account, GPU request); the batch size (32)
# must be divisible by the GPUs per run.
#SBATCH --job-name=thadcr-reproduce
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@600
#SBATCH --output=%x-%A_%a.out
set -euo pipefail

die() {
    echo "slurm_reproduce.sh: error: $*" >&2
    exit 2
}

# This array task's shard "i/n": i counts from the array's first index, n is the number of tasks.
# The array must be one contiguous range (--array=0-7, also with a %limit), so that the n shards
# cover the plan exactly once. With THADCR_SHARDS=n the task id is the shard: "id/n" (to run some
# shards of n again, e.g. sbatch --array=3,5 --export=ALL,THADCR_SHARDS=8 ...).
shard_of_task() {
    local id=${SLURM_ARRAY_TASK_ID:-} count=${SLURM_ARRAY_TASK_COUNT:-}
    if [[ -n ${THADCR_SHARDS:-} ]]; then
        [[ $id =~ ^[0-9]+$ && $THADCR_SHARDS =~ ^[0-9]+$ ]] && ((id < THADCR_SHARDS)) ||
            die "THADCR_SHARDS=$THADCR_SHARDS needs an array task id from 0 to THADCR_SHARDS-1, got '$id'"
        echo "$id/$THADCR_SHARDS"
        return
    fi
    [[ $id =~ ^[0-9]+$ && $count =~ ^[0-9]+$ ]] ||
        die "not a SLURM array task (SLURM_ARRAY_TASK_ID='$id', SLURM_ARRAY_TASK_COUNT='$count'): submit with sbatch --array=0-N"
    local min=${SLURM_ARRAY_TASK_MIN:-0}
    local max=${SLURM_ARRAY_TASK_MAX:-$((min + count - 1))}
    [[ $min =~ ^[0-9]+$ && $max =~ ^[0-9]+$ ]] || die "SLURM_ARRAY_TASK_MIN/MAX '$min'/'$max' are not numbers"
    ((max - min + 1 == count)) ||
        die "array $min-$max has $count tasks: give one range (--array=0-$((count - 1))), or set THADCR_SHARDS"
    ((min <= id && id <= max)) || die "SLURM_ARRAY_TASK_ID=$id is outside the array $min-$max"
    echo "$((id - min))/$count"
}

# The time limit is near (--signal=B:USR1@600): put this task back in the queue; the requeued task
# resumes where this one stopped. SLURM ends this task's processes.
requeue() {
    local task="${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-}}_${SLURM_ARRAY_TASK_ID:-}"
    echo "slurm_reproduce.sh: time limit near, requeueing $task" >&2
    ${THADCR_SCONTROL:-scontrol} requeue "$task"
    exit 0
}

main() {
    local mode=${1:-shard}
    if (($#)); then shift; fi
    cd "${SLURM_SUBMIT_DIR:-.}"
    local profile=${THADCR_PROFILE:-paper} results=${THADCR_RESULTS:-results}
    local thadcr
    read -r -a thadcr <<<"${THADCR:-.venv/bin/thadcr}"
    case $mode in
    shard)
        local shard gpus launcher
        shard=$(shard_of_task)
        gpus=${THADCR_GPUS:-${SLURM_GPUS_ON_NODE:-1}}
        launcher=${THADCR_LAUNCHER:-.venv/bin/torchrun --standalone --nproc_per_node $gpus}
        echo "slurm_reproduce.sh: shard $shard, restart ${SLURM_RESTART_COUNT:-0}, launcher: $launcher" >&2
        trap requeue USR1
        export TQDM_DISABLE=${TQDM_DISABLE:-1}  # no bar in the log: each run's papermill.log has its epochs
        # in the background: bash runs the trap while it waits, not only after the command ends
        "${thadcr[@]}" reproduce --profile "$profile" --results "$results" --shard "$shard" \
            --launcher "$launcher" "$@" &
        wait $!
        ;;
    render)
        "${thadcr[@]}" reproduce --profile "$profile" --results "$results" --render-only "$@"
        ;;
    *)
        die "unknown mode '$mode': shard (default) or render"
        ;;
    esac
}

main "$@"
