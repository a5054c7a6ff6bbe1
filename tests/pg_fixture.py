"""A throwaway PostgreSQL server for the store tests, and the fixture that runs them on both databases.

Why: the store suite must prove the same behaviour on SQLite and PostgreSQL
on a fresh CI machine. The server is Debian's ``postgresql`` package
(binaries under ``/usr/lib/postgresql/*/bin``), started once per session by
``initdb``/``pg_ctl`` in a temporary folder on a free localhost port. As root
it runs as the ``postgres`` user (PostgreSQL refuses to run as root). Every
test gets a fresh database copied from a migrated template and dropped after.

Without PostgreSQL installed the PostgreSQL half of the suite FAILS (CI must
prove both); set ``LADEDA_SKIP_PG=1`` to skip it with that reason instead.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SKIP_ENV = "LADEDA_SKIP_PG"
_TEMPLATE = "ladeda_template"


def pg_bin_dir() -> Path | None:
    """Folder holding ``initdb`` and ``pg_ctl``: on PATH, else the newest Debian install."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name)
                  if Path(d).parent.name.isdigit() else 0)
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in a temporary folder; :meth:`fresh_database` hands out URLs."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="ladeda-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = _free_port()
        self._as = []
        if os.geteuid() == 0:  # postgres refuses root: run the server as the postgres user
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._names = itertools.count()

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}\n{log}")

    def start(self) -> "PgServer":
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-locale",
                  "-E", "UTF8", "--no-sync")
        # Durability off: the tests check behaviour, not crash safety, and run on shared CPUs.
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                  "-t", "60", "start")
        self.admin(f"CREATE DATABASE {_TEMPLATE}")
        from core.review.store import ReviewStore

        ReviewStore(self.url(_TEMPLATE), image_dir=self.root / "template-images").close()
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        import psycopg

        for attempt in range(50):
            try:
                with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                                     autocommit=True) as conn:
                    conn.execute(sql)
                return
            except psycopg.errors.ObjectInUse:  # the template is still being released by its last user
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL kept refusing: {sql}")

    def fresh_database(self, *, migrated: bool = True) -> str:
        """A new empty database (``migrated``: already at the current schema) and its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE if migrated else 'template0'}")
        return self.url(name)

    def drop(self, url: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_server():
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: PostgreSQL half of the store suite skipped on request")
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed (no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin). "
                    "Run scripts/test.sh (it installs Debian's postgresql) or set LADEDA_SKIP_PG=1 to skip.",
                    pytrace=False)
    server = PgServer(bin_dir).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    """Runs a store test once per database."""
    return request.param


@pytest.fixture
def new_db(backend, tmp_path, request):
    """``new_db(name="review", migrated=True)``: a fresh database target (SQLite path or PostgreSQL URL)."""
    made: list[str] = []
    server = request.getfixturevalue("pg_server") if backend == "postgresql" else None

    def make(name: str = "review", *, migrated: bool = True):
        if server is None:
            return tmp_path / f"{name}.sqlite"
        made.append(server.fresh_database(migrated=migrated))
        return made[-1]

    yield make
    for url in made:
        server.drop(url)
