"""Start a throw-away PostgreSQL server for tests (Debian ``postgresql`` package).

The server listens on a Unix socket in a temporary folder only (``listen_addresses=''``),
so nothing is exposed on the network, and it is stopped when the test session ends.
Running as root (CI), the server runs as the ``postgres`` system user, as initdb requires.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["find_pg_bin", "postgres_server"]


def find_pg_bin() -> Path | None:
    """Folder with initdb/pg_ctl of the newest installed PostgreSQL, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    if user is None:
        return cmd
    return ["runuser", "-u", user, "--", *cmd]


@contextmanager
def postgres_server(pg_bin: Path) -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh database on a private socket."""
    user = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="cryotrack-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chown(sock, pw.pw_uid, pw.pw_gid)
    db_user = user or pwd.getpwuid(os.geteuid()).pw_name
    try:
        subprocess.run(
            _as_user([str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", db_user,
                      "--no-sync"], user),
            check=True, capture_output=True, text=True,
        )
        opts = f"-c listen_addresses='' -c unix_socket_directories={sock} -c fsync=off"
        subprocess.run(
            _as_user([str(pg_bin / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-t", "60",
                      "-l", str(base / "server.log"), "start"], user),
            check=True, capture_output=True, text=True,
        )
        subprocess.run(
            _as_user([str(pg_bin / "createdb"), "-h", str(sock), "-U", db_user, "cryotrack"],
                     user),
            check=True, capture_output=True, text=True,
        )
        yield f"postgresql+psycopg2://{db_user}@/cryotrack?host={sock}"
    finally:
        subprocess.run(
            _as_user([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], user),
            capture_output=True, text=True,
        )
        shutil.rmtree(base, ignore_errors=True)
