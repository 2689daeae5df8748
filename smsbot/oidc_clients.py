"""The OpenID Connect client file (SMSBOT_OIDC_CLIENTS): the tools the group's admin declared, read with tomllib."""

from __future__ import annotations

import hmac
import re
import tomllib
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import SmsbotError

MIN_CLIENT_SECRET = 32


class ClientFileError(SmsbotError, ValueError):
    """The client file can't be read or says something wrong."""


@dataclass(frozen=True)
class Client:
    id: str
    secret: str | None  # None: a public client, which must use PKCE
    redirect_uris: tuple[str, ...]
    name: str
    post_logout_redirect_uris: tuple[str, ...] = ()

    def secret_matches(self, presented: str) -> bool:
        return self.secret is not None and hmac.compare_digest(self.secret.encode(), presented.encode())


PRIVATE_SCHEME = re.compile(r"^[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+$")  # a native app's reverse-domain scheme


def _uri(value: object, where: str) -> str:
    """An http(s) URI, or a native app's private-use one (RFC 8252 §7.1: a scheme with a dot, `app.immich:/...`);
    never with a fragment."""
    if not isinstance(value, str):
        raise ClientFileError(f"{where}: each URI must be a string")
    parts = urlsplit(value)
    web = parts.scheme in ("http", "https") and bool(parts.netloc)
    if not (web or PRIVATE_SCHEME.match(parts.scheme)) or parts.fragment or not value.isprintable() or " " in value:
        raise ClientFileError(f"{where}: {value!r} is not an absolute http(s) URI, or a native app's reverse-domain "
                              "one, without a fragment")
    return value


def read_clients(path: str) -> dict[str, Client]:
    """The clients of a TOML client file, by id; ClientFileError says what is wrong with it."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ClientFileError(f"can't read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ClientFileError(f"{path} is not valid TOML: {error}") from None
    entries = data.get("client", [])
    if not isinstance(entries, list) or not entries:
        raise ClientFileError(f"{path} declares no [[client]]")
    clients: dict[str, Client] = {}
    for n, entry in enumerate(entries, 1):
        where = f"client {n}"
        unknown = set(entry) - {"id", "secret", "redirect_uris", "name", "post_logout_redirect_uris"}
        if unknown:
            raise ClientFileError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        client_id = entry.get("id")
        if not isinstance(client_id, str) or not client_id or not client_id.isprintable() or ":" in client_id:
            raise ClientFileError(f"{where}: id must be a non-empty string without ':'")
        if client_id in clients:
            raise ClientFileError(f"{where}: id {client_id!r} is declared twice")
        secret = entry.get("secret")
        if secret is not None and (not isinstance(secret, str) or len(secret) < MIN_CLIENT_SECRET):
            raise ClientFileError(f"{where}: secret must be at least {MIN_CLIENT_SECRET} characters")
        uris = entry.get("redirect_uris")
        if not isinstance(uris, list) or not uris:
            raise ClientFileError(f"{where}: redirect_uris must list at least one URI")
        logout = entry.get("post_logout_redirect_uris", [])
        if not isinstance(logout, list):
            raise ClientFileError(f"{where}: post_logout_redirect_uris must be a list")
        name = entry.get("name", client_id)
        if not isinstance(name, str) or not name.strip():
            raise ClientFileError(f"{where}: name must be a non-empty string")
        clients[client_id] = Client(client_id, secret, tuple(_uri(u, where) for u in uris), name.strip(),
                                    tuple(_uri(u, where) for u in logout))
    return clients




def oidc_origins(path: str) -> list[str]:
    """The origins of every client's redirect URIs, in order, each once (for the sign-in page's form-action)."""
    origins = [f"{p.scheme}://{p.netloc}" if p.netloc else f"{p.scheme}:" for client in read_clients(path).values()
               for p in map(urlsplit, client.redirect_uris)]
    return list(dict.fromkeys(origins))
