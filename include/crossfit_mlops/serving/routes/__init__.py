"""The API's routers, one per resource: predictions, the process's status, the model that serves."""
