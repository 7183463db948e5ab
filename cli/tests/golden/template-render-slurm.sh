#!/bin/bash
#SBATCH --job-name=basho-ws-0f8e2c3a-7b1d-4e5f-9a6b-1c2d3e4f5a6b
#SBATCH --time=0-02:05:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=1024M
#SBATCH --account=basho-research
#SBATCH --partition=debug
#SBATCH '--comment=basho site=tohoku expires=2030-01-02T03:04:05Z'
#SBATCH --output=/shared/basho/logs/basho-%j.out
#SBATCH --qos=normal
# basho workspace ws-0f8e2c3a-7b1d-4e5f-9a6b-1c2d3e4f5a6b of project P-0001 at site tohoku, until 2030-01-02T03:04:05Z

set -euo pipefail

# Apptainer runs the container as the job's own user; never let that be root.
if [ "$(id -u)" -eq 0 ]; then
  echo "basho: refusing to run a workspace as root; submit jobs as an unprivileged account" >&2
  exit 3
fi

# Run only the image the site allow-listed: the SIF must still hash to its pinned digest.
# (A SIF is read once at start, so a file swapped afterwards does not change the container.)
if ! printf '%s  %s\n' 9f2c1e4b7a3d5f6e8c0b1a2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f /shared/images/shell.sif | sha256sum --check --quiet --strict -; then
  echo "basho: image" /shared/images/shell.sif "does not match its pinned sha256; not starting" >&2
  exit 3
fi

# exec: the container becomes the job's main process, inside the job's cgroup. scancel and the
# time limit signal it directly, and Slurm kills whatever is left: nothing to clean up.
exec apptainer exec --containall --cleanenv --no-home --no-privs --no-mount bind-paths,hostfs,cwd --net --network none --bind /shared/jga/JGAD000101:/data/JGAD000101:ro --bind /shared/jga/JGAD000102:/data/JGAD000102:ro --bind /shared/basho/work/ws-0f8e2c3a-7b1d-4e5f-9a6b-1c2d3e4f5a6b:/work --bind /shared/basho/results/ws-0f8e2c3a-7b1d-4e5f-9a6b-1c2d3e4f5a6b:/results --bind /shared/basho/state/workspaces/ws-0f8e2c3a-7b1d-4e5f-9a6b-1c2d3e4f5a6b/workspace.json:/etc/basho/workspace.json:ro --pwd /work --env 'BASHO_WORKSPACE=ws-0f8e2c3a-7b1d-4e5f-9a6b-1c2d3e4f5a6b' --env 'BASHO_PROJECT=P-0001' --env 'BASHO_DATASETS=JGAD000101,JGAD000102' /shared/images/shell.sif sh -c 'trap '\''exit 0'\'' TERM INT; while :; do sleep 1 & wait $!; done'
