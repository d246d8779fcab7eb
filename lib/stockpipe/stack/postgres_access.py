"""The local PostgreSQL's roles: the export works as a plain role, never as a superuser.

The cluster's superuser is ``postgres`` (password ``postgres_admin_password``, held by
the stack manager only). It creates the export's role (``postgres_user``: login, no
superuser, no role or database creation) and the database it owns, so the export can
make its schemas and tables there and nothing else.
"""

from __future__ import annotations

from stockpipe.config import Settings
from stockpipe.errors import StackError
from stockpipe.warehouse.connection import connect_postgres

#: The cluster's superuser, made by initdb.
ADMIN_USER = "postgres"


def as_admin(settings: Settings) -> Settings:
    """The settings with the superuser's name and password (stack manager only)."""
    return settings.model_copy(
        update={"postgres_user": ADMIN_USER, "postgres_password": settings.postgres_admin_password}
    )


def server_answers(settings: Settings) -> bool:
    """The local server answers a query, from its superuser or (before ``ensure_database``
    on a cluster of the old layout) from the export's role."""
    for who in (as_admin(settings), settings):
        try:
            conn = connect_postgres(who, database="postgres", autocommit=True)
        except Exception:
            continue
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except Exception:
            return False
        finally:
            conn.close()
    return False


def _adopt_old_cluster(settings: Settings) -> None:
    """A cluster made before the split has the export's role as its only superuser: it
    creates the ``postgres`` superuser, which then takes the right away from it."""
    conn = connect_postgres(settings, database="postgres", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            if cur.fetchone() != (True,):
                raise StackError(
                    f"PostgreSQL refuses the superuser {ADMIN_USER!r} with "
                    "STOCKPIPE_POSTGRES_ADMIN_PASSWORD, and the export's role is not one"
                )
            admin = _literal(settings.postgres_admin_password.get_secret_value())
            cur.execute(f"CREATE ROLE {ADMIN_USER} SUPERUSER LOGIN PASSWORD {admin}")
    finally:
        conn.close()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ensure_database(settings: Settings) -> bool:
    """Make the export's role (not a superuser) and its database. True if the database is new.

    The role's password follows ``postgres_password``; a role that was the superuser
    (a cluster made before this split) loses the superuser right.
    """
    if not settings.postgres_admin_password.get_secret_value():
        raise StackError(
            "the PostgreSQL superuser's password is not set (STOCKPIPE_POSTGRES_ADMIN_PASSWORD); "
            "`stockpipe up` generates it into .env on its first run."
        )
    role, db = _ident(settings.postgres_user), _ident(settings.postgres_db)
    role_name, db_name = _literal(settings.postgres_user), _literal(settings.postgres_db)
    password = _literal(settings.postgres_password.get_secret_value())
    try:
        conn = connect_postgres(as_admin(settings), database="postgres", autocommit=True)
    except Exception as exc:
        if "password authentication failed" not in str(exc):
            raise
        _adopt_old_cluster(settings)
        conn = connect_postgres(as_admin(settings), database="postgres", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT 1 FROM pg_roles WHERE rolname = {role_name}")
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                f"{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                f"NOBYPASSRLS PASSWORD {password}"
            )
            cur.execute(f"SELECT 1 FROM pg_database WHERE datname = {db_name}")
            created = cur.fetchone() is None
            if created:
                cur.execute(f"CREATE DATABASE {db} OWNER {role}")
            else:
                cur.execute(f"ALTER DATABASE {db} OWNER TO {role}")
            # only the owner (and the superuser) may connect to the export's database
            cur.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
            return created
    finally:
        conn.close()
