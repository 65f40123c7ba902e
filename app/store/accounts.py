"""Accounts: users with their team and role, and their API tokens (only the tokens'
hashes are kept: :mod:`app.store.credentials`)."""

from __future__ import annotations

import time
from typing import Mapping

from sqlalchemy import exc as sa_exc

from app.store import credentials
from app.store.database import Repository
from app.store.records import ROLES, User

_USER_SQL = (
    "SELECT users.id, users.username, users.team_id, users.role, teams.name AS team "
    "FROM users LEFT JOIN teams ON teams.id = users.team_id"
)


def _user(r: Mapping) -> User:
    return User(int(r["id"]), r["username"], r["team_id"], r["team"] or "", r["role"])


class Accounts(Repository):
    """Users, teams and API tokens."""

    def count(self) -> int:
        """How many logins exist."""
        with self._connect(write=False) as db:
            return int(db.scalar("SELECT COUNT(*) FROM users"))

    def create(
        self, username: str, password: str, team: str | None = None, role: str | None = None
    ) -> int:
        """Add a user to ``team`` (made if new; default ``default``) with ``role``
        (default: ``admin`` for the first user, else ``radiologist``); raises ValueError
        for a bad name, short password, unknown role or duplicate."""
        credentials.check_new_account(username, password)
        team = (team or "default").strip()
        if not team or len(team) > 64:
            raise ValueError("a team name has 1 to 64 characters")
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        try:
            with self._connect() as db:
                team_id = self._team_id(db, team)
                if role is None:
                    role = "radiologist" if db.scalar("SELECT COUNT(*) FROM users") else "admin"
                return int(
                    db.scalar(
                        "INSERT INTO users (username, password_hash, created, team_id, role) "
                        "VALUES (:u, :h, :t, :team, :role) RETURNING id",
                        {
                            "u": username,
                            "h": credentials.hash_password(password),
                            "t": time.time(),
                            "team": team_id,
                            "role": role,
                        },
                    )
                )
        except sa_exc.IntegrityError as exc:
            raise ValueError(f"user {username!r} already exists") from exc

    @staticmethod
    def _team_id(db, name: str) -> int:
        """The id of the team ``name``, made if new."""
        db.execute(
            "INSERT INTO teams (name, created) VALUES (:n, :t) ON CONFLICT (name) DO NOTHING",
            {"n": name, "t": time.time()},
        )
        return int(db.scalar("SELECT id FROM teams WHERE name = :n", {"n": name}))

    def get(self, user_id: int) -> User | None:
        """A user with its team and role, or ``None``."""
        r = self._one(f"{_USER_SQL} WHERE users.id = :id", {"id": int(user_id)})
        return _user(r) if r else None

    def list(self, team_id: int | None = None) -> list[User]:
        """Every user (of one team, if given), by name."""
        where, args = (
            ("WHERE users.team_id = :t", {"t": team_id}) if team_id is not None else ("", {})
        )
        with self._connect(write=False) as db:
            return [_user(r) for r in db.all(f"{_USER_SQL} {where} ORDER BY users.username", args)]

    def set_role(self, user_id: int, role: str) -> None:
        """Change a user's role."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        with self._connect() as db:
            db.execute("UPDATE users SET role = :r WHERE id = :id", {"r": role, "id": user_id})

    def id_of(self, username: str) -> int | None:
        """The id of a user name, or ``None``."""
        row = self._one("SELECT id FROM users WHERE username = :u", {"u": username})
        return int(row["id"]) if row else None

    def authenticate(self, username: str, password: str) -> int | None:
        """The user id for a name and password, or ``None``."""
        row = self._one("SELECT id, password_hash FROM users WHERE username = :u", {"u": username})
        ok = credentials.password_matches(row["password_hash"] if row else None, password)
        return int(row["id"]) if ok else None

    # -- API tokens ---------------------------------------------------------------

    def tokens(self, user_id: int) -> list[dict]:
        """A user's API tokens: ``id`` (the stored hash: not the token), ``created``."""
        with self._connect(write=False) as db:
            return [
                {"id": r["token_hash"], "created": r["created"]}
                for r in db.all(
                    "SELECT token_hash, created FROM tokens WHERE user_id = :u ORDER BY created",
                    {"u": user_id},
                )
            ]

    def revoke_token(self, token_id: str, team_id: int | None = None) -> bool:
        """Delete an API token by its id (of a user of ``team_id``, if given); ``False``
        when there is no such token."""
        where = (
            " AND user_id IN (SELECT id FROM users WHERE team_id = :team)"
            if team_id is not None
            else ""
        )
        with self._connect() as db:
            return (
                db.execute(
                    f"DELETE FROM tokens WHERE token_hash = :h{where}",
                    {"h": token_id, "team": team_id},
                ).rowcount
                == 1
            )

    def create_token(self, username: str) -> str:
        """A new API token for ``username`` (only its hash is stored)."""
        user_id = self.id_of(username)
        if user_id is None:
            raise ValueError(f"no user {username!r}")
        token = credentials.new_token()
        with self._connect() as db:
            db.execute(
                "INSERT INTO tokens (token_hash, user_id, created) VALUES (:h, :u, :t)",
                {"h": credentials.hash_token(token), "u": user_id, "t": time.time()},
            )
        return token

    def user_for_token(self, token: str) -> int | None:
        """The user id an API token belongs to, or ``None``."""
        row = self._one(
            "SELECT user_id FROM tokens WHERE token_hash = :h", {"h": credentials.hash_token(token)}
        )
        return int(row["user_id"]) if row else None
