"""drtrain's domain: the torch-free packages shared by the HTTP edge (``api``) and the worker.

- ``kit``: settings, database, models, object storage, broker, domain errors, migrations.
- ``jobs``: the JobSpec, its state machine and lifecycle, every job query, the job service.
- ``sweeps``: grids of jobs from one spec.
- ``datasets``: file formats, built-ins, the dataset repository and service.
- ``tenants``: tenants and API keys.

See docs/architecture.md for what may import what.
"""
