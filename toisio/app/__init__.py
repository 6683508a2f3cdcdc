"""The composition root: the only part of ``toisio`` that imports the stages.

It wires the stages together into the things people run: the ``toisio`` command (:mod:`.cli`),
the REST API (:mod:`.api`), and the list of every stage's tables that the migrations build
(:mod:`.models`).  The foundation beside it (config, database, audit, keys, identity, errors)
imports no stage.
"""
