"""Connections to the warehouse through ADBC: PostgreSQL (local default) or Snowflake.

Credentials come from the settings (the environment / ``.env``) only; the URLs shown
to people (logs, the README, BI tools) never hold a password.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from stockpipe.config import Settings
from stockpipe.errors import ConfigError, UnknownNameError

#: The warehouses the export can load.
TARGETS = ("postgresql", "snowflake")


def resolve_target(settings: Settings, target: str | None = None) -> str:
    """``target`` (or the ``warehouse`` setting), checked against TARGETS."""
    name = (target or settings.warehouse).strip().lower()
    if name in ("postgres", "pg"):
        name = "postgresql"
    if name not in TARGETS:
        raise UnknownNameError("warehouse", name, list(TARGETS))
    return name


def postgres_url(settings: Settings, *, database: str | None = None) -> str:
    """The PostgreSQL URL without a password: what a BI tool or ``psql`` is given."""
    if settings.postgres_url:
        parts = urlsplit(settings.postgres_url)
        if database:
            parts = parts._replace(path=f"/{database}")
        return urlunsplit(parts)
    db = database or settings.postgres_db
    user = quote(settings.postgres_user, safe="")
    return f"postgresql://{user}@{settings.host}:{settings.postgres_port}/{db}"


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    if not password or parts.password is not None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def connect_postgres(settings: Settings, *, database: str | None = None, autocommit=False):
    """A DB-API connection (ADBC) to the PostgreSQL warehouse."""
    import adbc_driver_postgresql.dbapi as pg

    password = settings.postgres_password.get_secret_value()
    uri = _with_password(postgres_url(settings, database=database), password)
    return pg.connect(uri, autocommit=autocommit)


def snowflake_options(settings: Settings) -> dict[str, str]:
    """ADBC database options for Snowflake, from the settings; key pair preferred.

    Raises ConfigError naming the variable that is missing.
    """
    from adbc_driver_snowflake import AuthType, DatabaseOptions

    required = {
        "STOCKPIPE_SNOWFLAKE_ACCOUNT": settings.snowflake_account,
        "STOCKPIPE_SNOWFLAKE_USER": settings.snowflake_user,
        "STOCKPIPE_SNOWFLAKE_WAREHOUSE": settings.snowflake_warehouse,
        "STOCKPIPE_SNOWFLAKE_DATABASE": settings.snowflake_database,
        "STOCKPIPE_SNOWFLAKE_SCHEMA": settings.snowflake_schema,
    }
    for variable, value in required.items():
        if not value:
            raise ConfigError(variable, "is needed to export to Snowflake")
    opts = {
        DatabaseOptions.ACCOUNT.value: settings.snowflake_account,
        "username": settings.snowflake_user,
        DatabaseOptions.WAREHOUSE.value: settings.snowflake_warehouse,
        DatabaseOptions.DATABASE.value: settings.snowflake_database,
        DatabaseOptions.SCHEMA.value: settings.snowflake_schema,
        DatabaseOptions.APPLICATION_NAME.value: "stockpipe",
    }
    if settings.snowflake_role:
        opts[DatabaseOptions.ROLE.value] = settings.snowflake_role
    if settings.snowflake_private_key or settings.snowflake_private_key_path:
        opts[DatabaseOptions.AUTH_TYPE.value] = AuthType.JWT.value
        if settings.snowflake_private_key:
            key = settings.snowflake_private_key.get_secret_value()
            opts[DatabaseOptions.JWT_PRIVATE_KEY_VALUE.value] = key
        else:
            opts[DatabaseOptions.JWT_PRIVATE_KEY.value] = settings.snowflake_private_key_path
        if settings.snowflake_private_key_passphrase:
            phrase = settings.snowflake_private_key_passphrase.get_secret_value()
            opts[DatabaseOptions.JWT_PRIVATE_KEY_PASSWORD.value] = phrase
    elif settings.snowflake_password:
        opts[DatabaseOptions.AUTH_TYPE.value] = AuthType.SNOWFLAKE.value
        opts["password"] = settings.snowflake_password.get_secret_value()
    else:
        raise ConfigError(
            "STOCKPIPE_SNOWFLAKE_PRIVATE_KEY",
            "(or STOCKPIPE_SNOWFLAKE_PRIVATE_KEY_PATH, or STOCKPIPE_SNOWFLAKE_PASSWORD) is "
            "needed to export to Snowflake",
        )
    return opts


def connect_snowflake(settings: Settings):
    """A DB-API connection (ADBC) to Snowflake."""
    import adbc_driver_snowflake.dbapi as sf

    return sf.connect(db_kwargs=snowflake_options(settings), autocommit=False)


def connect(settings: Settings, target: str | None = None) -> Any:
    """A DB-API connection (ADBC, autocommit off) to the warehouse ``target``."""
    if resolve_target(settings, target) == "snowflake":
        return connect_snowflake(settings)
    return connect_postgres(settings)


def read_sql(settings: Settings, sql: str, target: str | None = None):
    """A query's result as a pandas DataFrame (the notebook's and README's way in)."""
    conn = connect(settings, target)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table().to_pandas()
    finally:
        conn.close()
