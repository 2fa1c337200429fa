# Astro project image (compose mode): `astro dev start` builds it. Astro Runtime 3.x images carry
# Airflow 3 and come from Astronomer's Airflow-3 registry; the Runtime must ship the Airflow version
# that requirements.txt pins (apache-airflow==3.3.2): change both together. Not built on the
# development machines (no Docker engine there): see README, "Compose mode".
FROM astrocrpublic.azurecr.io/runtime:3.3-2
# The runtime's ONBUILD steps have already installed requirements.txt and copied the project here
# (/usr/local/airflow). Installing the project makes `import crossfit_mlops` work in every Airflow
# container exactly as on a laptop, without path edits.
RUN pip install --no-cache-dir --no-deps -e .
# Warm the task imports in the scheduler, whose forks run the tasks (same file as the local stack).
RUN mkdir -p config && python -c "from crossfit_mlops.ops.preload import LOCAL_SETTINGS; open('config/airflow_local_settings.py', 'w').write(LOCAL_SETTINGS)"
