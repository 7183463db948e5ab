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

# Apptainer runs the container as the job's own user; never let that be root.
if [ "$(id -u)" -eq 0 ]; then
  echo "basho: refusing to run a workspace as root; submit jobs as an unprivileged account" >&2
  exit 3
fi

# Run only the image the site allow-listed: the SIF must still hash to its pinned digest.
# (A SIF is read once at start, so a file swapped afterwards does not change the container.)
if ! printf '%s  %s\n' 5f0c3a2b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29181706f5e4d3c2b1a090 /shared/images/shell.sif | sha256sum --check --quiet --strict -; then
  echo "basho: image" /shared/images/shell.sif "does not match its pinned sha256; not starting" >&2
  exit 3
fi

# exec: the container becomes the job's main process, inside the job's cgroup. scancel and the
# time limit signal it directly, and Slurm kills whatever is left: nothing to clean up.
exec apptainer exec --containall --cleanenv --no-home --no-privs --no-mount bind-paths,hostfs,cwd --net --network none --bind /srv/jga/JGAD000101:/data/JGAD000101:ro --bind /srv/basho/work/P-0001:/work --bind /srv/basho/results/ws-1:/results --bind /var/lib/basho-agent/workspaces/ws-1/workspace.json:/etc/basho/workspace.json:ro --pwd /work --env 'BASHO_WORKSPACE=ws-1' --env 'BASHO_PROJECT=P-0001' --env 'BASHO_DATASETS=JGAD000101' /shared/images/shell.sif sleep 60
