"""``dwsearch.urls.mask_url``: no password of a URL in anything a person reads."""

from __future__ import annotations

import pytest

from dwsearch.urls import mask_url


@pytest.mark.parametrize(("text", "masked"), [
    ("postgresql://u:secret@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u@host:5432/db?password=secret", "postgresql://u@host:5432/db?password=***"),
    ("postgresql+psycopg2://u:secret@host/db?sslmode=require&sslpassword=secret;PWD=secret#x",
     "postgresql+psycopg2://u:***@host/db?sslmode=require&sslpassword=***;PWD=***#x"),
    ("mysql://:secret@127.0.0.1/x?charset=utf8", "mysql://:***@127.0.0.1/x?charset=utf8"),
    # Unencoded '@' or '/' in the password: all of it is masked
    ("postgresql://u:se@cr/et@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:s@host/db?application_name=a@b", "postgresql://u:***@host/db?application_name=a@b"),
    # URLs inside text: a command line, an error message, a libpq key=value list
    ("dwsearch report x --storage 'postgresql://u:secret@h/db?password=secret' --out r",
     "dwsearch report x --storage 'postgresql://u:***@h/db?password=***' --out r"),
    ("storage postgresql://u:secret@h/db: cannot open (OperationalError: ...)",
     "storage postgresql://u:***@h/db: cannot open (OperationalError: ...)"),
    ("host=h password=secret dbname=x", "host=h password=*** dbname=x"),
])
def test_passwords_are_masked(text: str, masked: str) -> None:
    assert mask_url(text) == masked
    assert "secret" not in mask_url(text)
    assert mask_url(masked) == masked  # idempotent


@pytest.mark.parametrize("text", [
    "sqlite:////tmp/x.db", "sqlite:///relative/study.db", "journal:///a/b.log",
    "postgresql://u@host/db", "postgresql://u:@host/db", "http://host:8080/path",
    "layers[0].token_mixer=x; layers[1].pass=1", "--set train.lr=0.1", "",
    "postgresql://u:***@host/db?password=***",
])
def test_everything_else_stays(text: str) -> None:
    assert mask_url(text) == text
