"""Credentials out of URLs, for anything a person may read: messages, reports, manifests.

A leaf (it imports only ``re``): reports use it without Optuna or torch, and the storage module's
``describe_url`` can use it too. :func:`mask_url` takes one URL or any text holding URLs
(an error message, a command line) and replaces what would let someone log in with ``***``:

* the password of ``scheme://user:password@host/...`` (``postgresql://u:***@host/db``);
* the value of a query parameter whose name says it is a secret (it contains ``pass``,
  ``pwd``, ``secret`` or ``token``: ``password=``, ``passwd=``, ``sslpassword=``,
  ``auth_token=``): ``postgresql://u@host/db?password=***``; and of ``password=`` in a
  libpq-style ``key=value`` list (``host=h password=***``).

User names, hosts, ports, database names and paths stay, so the text still says which
storage it was. Masking is idempotent: masking a masked URL changes nothing.
"""

from __future__ import annotations

import re

__all__ = ["mask_url"]

# scheme://[user]:password@host: the password runs to the last '@' before the query (a
# password with an unencoded '@' or '/', which SQLAlchemy cannot parse, is masked whole).
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"`]*:)"
    r"(?P<secret>[^\s'\"`?#]*)@"
)
# In a query string (after '?', '&' or ';'): password=..., sslpassword=..., pwd=...,
# auth_token=...; in a libpq key=value list: password=... (a word of its own). The value ends
# at '&', ';', '#', a quote or a space. 'layers[0].token_mixer=x' (a choice) is no secret.
_QUERY = re.compile(
    r"(?P<head>(?:[?&;][A-Za-z0-9_.\-]*(?:pass|pwd|secret|token)[A-Za-z0-9_.\-]*"
    r"|(?<![^\s'\"`])password)=)"
    r"(?P<secret>[^&;#\s'\"`]*)",
    re.IGNORECASE,
)
MASK = "***"


def mask_url(text: str) -> str:
    """``text`` (a URL, or text with URLs in it) with every password and secret query value
    replaced by ``***``; everything else as given."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@" if m["secret"] else m[0], text)
    return _QUERY.sub(lambda m: m["head"] + (MASK if m["secret"] else ""), text)
