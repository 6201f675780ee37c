"""Above one run: compare engines on one workload and sweep a matrix of server
configurations x load points. A plan (plan.py: what to run) is kept apart from an executor
(executor.py: where it runs); a server group (group.py) is launched once for all its cells."""
