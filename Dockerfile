# Astro project image (compose mode; also the image of the Helm values in deploy/): `astro dev start`
# builds it. Astro Runtime 3 tags read <Airflow major>.<minor>-<Astronomer build>: 3.3-8 is the
# build that carries Airflow 3.3.2 (3.3-2 carries 3.3.0), the version requirements.txt pins; change
# both together (tests/deploy/ checks they agree). The -python-3.12 flavor because the default
# Python of Runtime 3.3 is 3.14, for which pyarrow==21.0.0 publishes no wheel, and Runtime 3.3 has
# no 3.11 flavor. On the development machines and in CI it is built on a local stand-in of this
# tag (tests/compose/standins/astro-runtime, Python 3.11): see docs/compose.md.
FROM astrocrpublic.azurecr.io/runtime:3.3-8-python-3.12
# The runtime's ONBUILD steps have already installed packages.txt and requirements.txt and copied
# the build context (what .dockerignore leaves) here (/usr/local/airflow). Installing the project
# makes `import crossfit_mlops` work in every Airflow container exactly as on a laptop, without
# path edits.
RUN pip install --no-cache-dir --no-deps -e .
# Warm the task imports in the scheduler, whose forks run the tasks (same file as the local stack).
# A finished task frees its worker slot within 1 s, not 5 (its supervisor notices the exit between heartbeats).
ENV AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1
RUN mkdir -p config && python -c "from crossfit_stack.preload import LOCAL_SETTINGS; open('config/airflow_local_settings.py', 'w').write(LOCAL_SETTINGS)"
