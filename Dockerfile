# Astro project image (compose mode). NOT BUILT OR VERIFIED YET: there is no Docker engine on the
# development machines; issue 5 pins the Astro Runtime tag for Airflow 3.3 and validates the stack.
# Airflow 3 based Runtime images come from Astronomer's Airflow-3 registry; set the exact tag here.
ARG ASTRO_RUNTIME_IMAGE
FROM ${ASTRO_RUNTIME_IMAGE}
# The package lives in include/; installing the project makes `import crossfit_mlops` work in every
# Airflow container exactly as on a laptop (no sys.path edits). Astro installs requirements.txt.
COPY --chown=astro:0 . .
RUN pip install --no-cache-dir --no-deps -e .
