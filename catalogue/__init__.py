"""The catalogue: the registries the service can deliver, their variables and code systems.

This is the contract with each data controller (one YAML file per registry in ``schemas/``, code
tables in ``code_tables/``).  Researchers choose from it when they apply (``permits``), and the
pipeline checks every extract against it (``pseudonymise``).  It depends only on the foundation.
"""
