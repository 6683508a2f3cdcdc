"""Alembic environment: runs on the engine handed over by toisio.db.alembic_config."""

from alembic import context
from sqlalchemy import create_engine

from toisio.app.models import import_all_models
from toisio.db import Base

import_all_models()
config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
