"""What runs the system rather than being it: the CLI, the local stack, the Airflow REST client,
following runs and printing their summaries, connection checks, the scheduler preload, CPU priority.
Nothing below this floor imports it."""
