#!/bin/bash
#SBATCH --job-name=basho-ws-1
#SBATCH --time=0-01:30:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=512M
#SBATCH --account=basho-research
#SBATCH --partition=debug
#SBATCH '--comment=basho site=tohoku expires=2030-01-02T03:04:05Z'
#SBATCH --output=/shared/basho/logs/basho-%j.out
#SBATCH --qos=normal
# basho workspace ws-1 of project P-0001 at site tohoku, until 2030-01-02T03:04:05Z

set -euo pipefail

# The container runs under the podman daemon (or conmon), outside the job's cgroup: when
# Slurm ends the job it kills the client, not the container. So the script removes the container
# itself on every way out: normal exit, scancel / time limit (SIGTERM), interrupt.
cleanup() {
  podman rm -f basho-ws-1 >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# A container of this name left by an earlier attempt (a requeued job, a crashed node) would make
# the run fail; remove it first.
cleanup

# Not exec, and not in the foreground: bash runs a trap only once the foreground command has
# returned, whereas `wait` returns as soon as a trapped signal arrives. So SIGTERM from scancel
# removes the container at once, instead of waiting for it to exit by itself (or for Slurm's
# SIGKILL to the client, which would leave the container running).
podman run --rm --pull=never --name basho-ws-1 --label 'io.basho.workspace=ws-1' --label 'io.basho.project=P-0001' --label 'io.basho.site=tohoku' --label 'io.basho.expires-at=2030-01-02T03:04:05Z' --network none --cap-drop ALL --security-opt no-new-privileges --read-only --read-only-tmpfs=false --tmpfs '/tmp:rw,noexec,nosuid,nodev,size=64m' --pids-limit 256 --memory 512m --memory-swap 512m --cpus 2 --ipc private --user 65534:65534 --workdir /work --mount 'type=bind,src=/srv/jga/JGAD000101,dst=/data/JGAD000101,readonly,bind-nonrecursive' --mount 'type=bind,src=/srv/basho/work/P-0001,dst=/work' --mount 'type=bind,src=/srv/basho/results/ws-1,dst=/results' --mount 'type=bind,src=/var/lib/basho-agent/workspaces/ws-1/workspace.json,dst=/etc/basho/workspace.json,readonly' --env 'BASHO_WORKSPACE=ws-1' --env 'BASHO_PROJECT=P-0001' --env 'BASHO_DATASETS=JGAD000101' basho/demo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef sleep 60 &
wait "$!"
