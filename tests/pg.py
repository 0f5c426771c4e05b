"""A private PostgreSQL server on loopback for tests: Debian's binaries, a fresh cluster in a
temporary folder, a free port, trust authentication on 127.0.0.1 only. CI installs the
package (make system-deps); elsewhere the tests that need it skip, under CI they fail."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    # The server refuses to run as root; Debian's package creates the postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server in a fresh folder; yields its URL; stops it and removes the folder."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        message = "PostgreSQL server binaries not found (Debian package postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's tmp folders: those are private to root, and the server runs as the
    # postgres user, who must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="dwsearch-pg-"))
    data = root / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True)
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=200"
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", options, "-l",
                                 str(root / "log"), "-w", "start"]),
                   check=True, capture_output=True)
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield url
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
