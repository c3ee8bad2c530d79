"""A project-local PostgreSQL cluster: its own data folder and port, the server binaries on the machine.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to the `postgres` system user
(which the Debian package creates) and the server runs as that user; otherwise it runs as whoever we are.
On first start we create three roles: the platform's writer, Airflow's (with its own database), and a
read-only role for the dashboard, and apply the schema. All of it is idempotent.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from importlib import resources
from pathlib import Path

import psycopg2
from psycopg2 import sql

from candlelake.platform import runtime
from candlelake.platform.base import Component, Port
from candlelake.platform.runtime import ComponentError

PART = "postgresql"


def schema_sql() -> str:
    return resources.files("candlelake").joinpath("sql/schema.sql").read_text()


class PostgresComponent(Component):
    name = "postgres"
    start_timeout = 60.0
    stage = 0

    @property
    def root(self) -> Path:
        return self.settings.runtime_dir / "postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def os_user(self) -> str | None:
        """The system user the server runs as: `postgres` when we are root, else ourselves (None)."""
        return "postgres" if os.geteuid() == 0 else None

    def _bin(self, tool: str) -> str:
        bin_dir = self.settings.pg_bin_dir
        path = os.path.join(bin_dir, tool) if bin_dir else tool
        return runtime.require_executable(
            PART,
            path,
            "The PostgreSQL server binaries are needed (Debian: apt-get install postgresql-15); "
            "point CANDLELAKE_PG_BIN_DIR at the folder holding initdb and postgres.",
        )

    def ports(self) -> list[Port]:
        return [Port(self.settings.pg_port, "CANDLELAKE_PG_PORT")]

    def urls(self) -> list[str]:
        s = self.settings
        return [f"postgresql://{s.pg_user}@{s.host}:{s.pg_port}/{s.pg_database}"]

    def install(self) -> None:
        """Create the cluster once (initdb) with a data folder the server's user owns."""
        if (self.data_dir / "PG_VERSION").is_file():
            return
        initdb = self._bin("initdb")
        self._bin("postgres")
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        user = self.os_user
        if user:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise ComponentError(
                    PART,
                    "running as root, but there is no `postgres` system user to run the server as "
                    "(PostgreSQL refuses root). Create one: useradd --system postgres",
                ) from None
            for path in (self.root, self.data_dir, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self._check_traversable(entry.pw_uid, entry.pw_gid)
        log = runtime.log_path(self.settings, "postgres-initdb")
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            initdb,
            "-D",
            str(self.data_dir),
            "-U",
            self.settings.pg_superuser,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        ]
        # A superuser password is needed for host connections under scram; we only use the socket.
        with open(log, "w") as out:
            result = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                cwd=str(self.root),
                check=False,
            )
        if result.returncode != 0:
            # Leave no half-made cluster behind: the next `up` must be able to try again.
            subprocess.run(["rm", "-rf", str(self.data_dir)], check=False)
            raise ComponentError(PART, "initdb failed", log)

    def _check_traversable(self, uid: int, gid: int) -> None:
        # The server user must be able to reach its data folder through every parent directory.
        for parent in self.data_dir.parents:
            st = parent.stat()
            can_x = (
                (st.st_mode & 0o001)
                or (st.st_uid == uid and st.st_mode & 0o100)
                or (st.st_gid == gid and st.st_mode & 0o010)
            )
            if not can_x:
                raise ComponentError(
                    PART,
                    f"the `postgres` user cannot enter {parent}; allow it (chmod o+x {parent}) or set "
                    "CANDLELAKE_RUNTIME_DIR to a folder it can reach",
                )

    def start(self) -> int:
        postgres = self._bin("postgres")
        s = self.settings
        argv = [
            postgres,
            "-D",
            str(self.data_dir),
            "-p",
            str(s.pg_port),
            "-k",
            str(self.socket_dir),
            "-c",
            f"listen_addresses={s.host}",
            "-c",
            "max_connections=200",  # Airflow's scheduler and LocalExecutor workers hold many
            "-c",
            "shared_buffers=256MB",
            "-c",
            "unix_socket_permissions=0777",
            "-c",
            "log_min_messages=warning",
        ]
        return runtime.spawn(s, self.name, argv, user=self.os_user)

    def healthy(self) -> bool:
        try:
            with self._superuser_conn(timeout=2) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except Exception:
            return False

    def stop(self) -> bool:
        # SIGINT is PostgreSQL's "fast shutdown": it rolls back clients and checkpoints cleanly.
        import signal

        return runtime.stop(self.settings, self.name, timeout=30, sig=signal.SIGINT)

    def _superuser_conn(self, dbname: str = "postgres", timeout: int = 5) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(
            host=str(self.socket_dir),
            port=self.settings.pg_port,
            dbname=dbname,
            user=self.settings.pg_superuser,
            connect_timeout=timeout,
        )
        conn.autocommit = True
        return conn

    def after_healthy(self) -> None:
        """Roles, databases, grants and the schema; safe to run on every `up`."""
        s = self.settings
        conn = self._superuser_conn()
        try:
            with conn.cursor() as cur:
                for role, password in (
                    (s.pg_user, s.pg_password),
                    (s.airflow_db_user, s.airflow_db_password),
                    (s.pg_reader_user, s.pg_reader_password),
                    (s.pg_alerts_user, s.pg_alerts_password),
                ):
                    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                    verb = "ALTER" if cur.fetchone() else "CREATE"
                    cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), (password,))
                # MLflow's tracking and registry store is a database of its own (its tables are its own,
                # migrated by MLflow), owned by the platform role that trains and serves the models.
                for db, owner in (
                    (s.pg_database, s.pg_user),
                    (s.airflow_db, s.airflow_db_user),
                    (s.mlflow_db, s.pg_user),
                ):
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                    if not cur.fetchone():
                        cur.execute(
                            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(owner))
                        )
                # The dashboard must never write, even by mistake in a query.
                cur.execute(
                    sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
                        sql.Identifier(s.pg_reader_user)
                    )
                )
        finally:
            conn.close()
        # The schema is owned by the platform role, so that its objects are too.
        with psycopg2.connect(s.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(schema_sql())
            reader = sql.Identifier(s.pg_reader_user)
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(s.pg_database), reader))
            cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(reader))
            cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(reader))
            cur.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(reader)
            )
            # The alert editor: the dashboard's one writer, to the price alert rules and nothing else.
            editor = sql.Identifier(s.pg_alerts_user)
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(s.pg_database), editor))
            cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(editor))
            cur.execute(sql.SQL("GRANT SELECT, INSERT, DELETE ON alert_rules TO {}").format(editor))
            cur.execute(sql.SQL("GRANT USAGE ON SEQUENCE alert_rules_id_seq TO {}").format(editor))
        conn.close()
