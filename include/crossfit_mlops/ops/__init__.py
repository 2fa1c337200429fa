"""What tasks and users use at run time without managing a process: the command line of the ML
half (and its one error path, which the stack's command line shares), the connection checks of the
``test_connections`` DAG, a task's CPU priority. The local stack's process manager is the sibling
package ``crossfit_stack``, which this package never imports. Nothing below this floor imports it."""
