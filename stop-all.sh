#!/usr/bin/env bash
# Stops what start-all.sh started. At the foundation stage start-all.sh starts no long-running
# process (it runs the data half and exits), so there is nothing to stop yet.
set -euo pipefail
echo "nothing to stop: start-all.sh starts no services yet (Airflow/MLflow come with issue 3)"
