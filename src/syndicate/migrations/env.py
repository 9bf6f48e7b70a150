from alembic import context

from syndicate.models import Base

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    raw = connection.connection.dbapi_connection
    if sqlite:
        # SQLite's batch mode rebuilds a table by copying it and dropping the old one. With foreign keys on,
        # that DROP deletes first, and ON DELETE CASCADE would take every row that points at the table (all
        # subscriptions, deliveries and events, for the subscribers table). Off for the migration only (it
        # can't change inside a transaction), and every reference checked before the commit.
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        with connection.begin():
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=sqlite,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()):
                raise RuntimeError(f"the migration left rows pointing at nothing (table, row, parent): {broken[:5]}")
    finally:
        if sqlite:
            raw.execute("PRAGMA foreign_keys=ON")
