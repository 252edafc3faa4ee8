"""What a scoped API token may touch, decided the same way at the control plane and at every edge.

A token may be confined to keys under a prefix (its tenant's namespace), bound to one user (every
connection token it obtains is for that user) and limited to a list of templates. The rules:

- connect: a prefix-confined token must name a key under its prefix (a keyless spawn has no key, so
  it is refused); a template-confined token may name only its templates; a user-bound token obtains
  tokens for its user, and naming another user is refused (403), never silently rewritten;
- reading, terminating, revoking, listing: a prefix-confined token sees the backends of keys under its
  prefix (whoever created them); an unconfined client token sees the backends it created; a
  template-confined token sees only backends of its templates;
- minting: a token may mint only tokens confined at least as narrowly as itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sync.errors import Forbidden


@dataclass(frozen=True)
class Confinement:
    key_prefix: str | None = None
    user: str | None = None
    templates: frozenset[str] | None = None

    @classmethod
    def of(cls, key_prefix: str | None, user: str | None, templates: Iterable[str] | None) -> Confinement:
        return cls(key_prefix, user, frozenset(templates) if templates is not None else None)

    @classmethod
    def from_replicated(cls, token: Mapping[str, Any]) -> Confinement:
        """From a token as edges hold it (see control/queries/api_tokens.py `replicated`)."""
        return cls.of(token.get("key_prefix"), token.get("user"), token.get("templates"))

    @property
    def is_confined(self) -> bool:
        return self.key_prefix is not None or self.user is not None or self.templates is not None

    def allows_key(self, key: str | None) -> bool:
        return self.key_prefix is None or (key is not None and key.startswith(self.key_prefix))

    def allows_template(self, template: str) -> bool:
        return self.templates is None or template in self.templates

    def connect_user(self, key: str | None, template: str, user: str | None) -> str | None:
        """The user the connection token is for; Forbidden when the request leaves the confinement."""
        if not self.allows_key(key):
            raise Forbidden(
                "this token may only connect keys under its key prefix",
                fields={"key": f"must start with {self.key_prefix!r}"},
            )
        if not self.allows_template(template):
            raise Forbidden("this token may not use that template", fields={"template": "not allowed for this token"})
        if self.user is not None and user is not None and user != self.user:
            raise Forbidden("this token is bound to another user", fields={"user": "must be this token's user"})
        return self.user if self.user is not None else user

    def revoke_user(self, user: str | None) -> str | None:
        """The user whose connection tokens a revoke by this token may cover."""
        if self.user is not None and user is not None and user != self.user:
            raise Forbidden("this token is bound to another user", fields={"user": "must be this token's user"})
        return self.user if self.user is not None else user

    def sees(self, *, key: str | None, template: str, owner_token_id: str | None, token_id: str) -> bool:
        """Whether a client token may see (read, terminate, revoke) a backend."""
        if not self.allows_template(template):
            return False
        if self.key_prefix is not None:
            return self.allows_key(key)
        return owner_token_id == token_id

    def narrower(
        self,
        key_prefix: str | None,
        user: str | None,
        templates: Iterable[str] | None,
    ) -> Confinement:
        """The confinement of a token minted by this one: what it asks for, within this one's bounds."""
        asked = Confinement.of(key_prefix, user, templates)
        if self.key_prefix is not None and not (asked.key_prefix or self.key_prefix).startswith(self.key_prefix):
            raise Forbidden("a minted token must stay under the key prefix", fields={"key_prefix": "outside yours"})
        if self.user is not None and asked.user not in (None, self.user):
            raise Forbidden("a token bound to a user may not mint tokens for another", fields={"user": "not yours"})
        if self.templates is not None and asked.templates is not None and not asked.templates <= self.templates:
            raise Forbidden("a minted token may only use your templates", fields={"templates": "outside yours"})
        return Confinement(
            asked.key_prefix if asked.key_prefix is not None else self.key_prefix,
            asked.user if asked.user is not None else self.user,
            asked.templates if asked.templates is not None else self.templates,
        )


def expired(expires_at: datetime | str | None, now: datetime) -> bool:
    if expires_at is None:
        return False
    when = datetime.fromisoformat(expires_at) if isinstance(expires_at, str) else expires_at
    return when <= now
