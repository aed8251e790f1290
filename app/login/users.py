"""People and their WeChat identities, in Redis (this app's database).

A person is one record with a random id of our own (the OpenID Connect ``sub``, never derived
from a WeChat id, never changed) holding the identities they signed in with: an ``openid``
per AppID (the Official Account's for scan, message codes and in-WeChat login; the website
application's for ``open_qr``), and the ``unionid`` WeChat gives when those AppIDs are bound to
one Open Platform account.

Keys (after ``REDIS_KEY_PREFIX``)::

    user:<openid>           hash, one identity: openid, appid, method (the first to use it),
                            id (its person), unionid, nickname, headimgurl, first_login_at,
                            last_login_at, login_count. openids are per AppID and never repeat
                            across AppIDs, so the openid alone keys it; ``appid`` is checked.
    user:id:<id>            hash, the person: id, openids (space-separated), unionid, nickname,
                            headimgurl; or merged_into (see below).
    user:unionid:<unionid>  string, the id of the person who holds that unionid.

Identity rules:

- A login whose unionid belongs to a person signs in as that person, unless that person
  already holds another identity under the same AppID (then WeChat's word conflicts with ours,
  and a new person is made rather than two people merged).
- A unionid learned later (the Official Account's ``user/info``, off the login's path) joins
  the identity's person to the unionid's holder only when their AppIDs do not overlap; the
  joined person's record then forwards (``merged_into``) so a session or token holding its id
  still finds the person. Overlapping AppIDs: nothing is merged, a warning is logged.
- ``link`` attaches an identity by hand, and refuses one that is another person's.
- ``unlink`` detaches one while another remains; not one whose unionid another of the
  person's identities shares (WeChat says they are one person: its next login would join it
  back). The unionid goes with the identity that alone brought it.

Records from before people (``user:id:<id>`` holding the openid as a string) are migrated on
read: the first read turns it into the person hash. Identity hashes without ``appid`` are the
Official Account's (the only kind there was).

Exceptions::

    IdentityError           (base; .reason, a message for the person)
     +-- IdentityTaken      the identity is another person's
     +-- IdentityConflict   the person holds another identity of that AppID, or another unionid
     +-- LastIdentity       unlinking would leave the person with none
"""

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import redis

log = logging.getLogger(__name__)

#: The profile fields WeChat's ``sns/userinfo`` gives that we keep (never the images).
PROFILE_FIELDS = ("nickname", "headimgurl")
#: How many ``merged_into`` hops a read follows (a join makes one; chains are rare).
MAX_FORWARDS = 5


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds")


class IdentityError(Exception):
    """An identity cannot be linked or unlinked.

    Attributes:
        reason: what the person reads (Chinese), why not.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityTaken(IdentityError):
    """The identity belongs to another person: never merged silently."""


class IdentityConflict(IdentityError):
    """The person holds another identity of the same AppID, or a different unionid."""


class LastIdentity(IdentityError):
    """Unlinking would leave the person without a way to sign in."""


@dataclass(frozen=True)
class Identity:
    """One way a person signs in: ``openid`` under ``appid``, first used by ``method``."""

    method: str
    appid: str
    openid: str

    def to_json(self) -> dict[str, str]:
        """``{"method", "appid", "openid"}``."""
        return {"method": self.method, "appid": self.appid, "openid": self.openid}


@dataclass(frozen=True)
class User:
    """A person who has signed in with WeChat.

    Attributes:
        id: their own id here: random, given at the first login, never derived from a WeChat
            id; the OpenID Connect ``sub``. None for a record from before ids, until its next
            login gives it one.
        openid: their openid under our Official Account, or None if they never used it.
        unionid: their unionid when an account they used is bound to an Open Platform
            account, else None.
        first_login_at, last_login_at: epoch seconds, over all their identities.
        login_count: completed logins, over all their identities.
        nickname, headimgurl: from the website login's ``sns/userinfo``, else None
            (``headimgurl`` is WeChat's URL; we never fetch or store the image).
        identities: how they sign in, oldest first.
    """

    id: str | None
    openid: str | None
    unionid: str | None
    first_login_at: float
    last_login_at: float
    login_count: int
    nickname: str | None = None
    headimgurl: str | None = None
    identities: tuple[Identity, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The public shape: ``{"id", "openid", "unionid", "first_login_at", "last_login_at",
        "login_count", "nickname", "headimgurl", "identities": [Identity.to_json()]}`` with
        times in ISO 8601 (UTC)."""
        return {
            "id": self.id,
            "openid": self.openid,
            "unionid": self.unionid,
            "first_login_at": _iso(self.first_login_at),
            "last_login_at": _iso(self.last_login_at),
            "login_count": self.login_count,
            "nickname": self.nickname,
            "headimgurl": self.headimgurl,
            "identities": [identity.to_json() for identity in self.identities],
        }


class UserStore:
    """Reads and writes people and their identities.

    Args:
        redis_client: a client with ``decode_responses=True``.
        clock: returns the time in epoch seconds.
        prefix: put before every key (``REDIS_KEY_PREFIX``).
        appid: the Official Account's AppID: the default of ``record_login``, and the AppID of
            records from before identities had one.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        clock: Callable[[], float] = time.time,
        prefix: str = "",
        appid: str = "",
    ) -> None:
        self._redis = redis_client
        self._prefix = prefix
        self._clock = clock
        self.appid = appid

    def record_key(self, openid: str) -> str:
        """The Redis key of the identity ``openid``'s record, where its ``login_count`` is."""
        return self._identity_key(openid)

    def _identity_key(self, openid: str) -> str:
        return f"{self._prefix}user:{openid}"

    def _id_key(self, user_id: str) -> str:
        return f"{self._prefix}user:id:{user_id}"

    def _unionid_key(self, unionid: str) -> str:
        return f"{self._prefix}user:unionid:{unionid}"

    # Signing in.

    def record_login(
        self,
        openid: str,
        *,
        method: str = "scan",
        appid: str | None = None,
        unionid: str | None = None,
        profile: Mapping[str, str] | None = None,
        count: bool = True,
    ) -> User:
        """Count one sign-in of the identity ``openid`` under ``appid``: create it on the first,
        with its person (the unionid's, when the rules allow, else a new one); update the times
        and count; keep what WeChat said (unionid, nickname, headimgurl).

        Args:
            openid: who proved themselves.
            method: the login method (``scan``, ``message``, ``wechat_browser``, ``open_qr``).
            appid: the AppID the openid is under; default the Official Account's.
            unionid: when WeChat gave one with the proof.
            profile: ``nickname`` and ``headimgurl`` when WeChat gave them.
            count: False when the sign-in was counted already, with its confirmation
                (``LoginStore.confirm`` with ``record_key``): the record is completed only.

        Returns:
            The person as recorded.
        """
        appid = self.appid if appid is None else appid
        key = self._identity_key(openid)
        now = repr(self._clock())
        candidate = (self._holder_open_to(unionid, appid) if unionid else None) or (
            secrets.token_urlsafe(16)
        )
        fields = {"openid": openid, "appid": appid, "last_login_at": now}
        if unionid:
            fields["unionid"] = unionid
        fields.update(_profile(profile))
        with self._redis.pipeline() as pipe:
            pipe.hsetnx(key, "first_login_at", now)
            pipe.hsetnx(key, "id", candidate)
            pipe.hsetnx(key, "method", method)
            pipe.hset(key, mapping=fields)
            if count:
                pipe.hincrby(key, "login_count", 1)
            else:  # counted already, unless the record lost it: then this login is the one
                pipe.hsetnx(key, "login_count", 1)
            pipe.hgetall(key)
            identity = pipe.execute()[-1]
        person_id = identity["id"]
        found = self._attach(person_id, openid, profile)
        if unionid:  # may join people: read the person after the join
            self._claim_unionid(person_id, unionid)
            user = self.get(openid)
        else:
            found = found or self._resolve(person_id)
            # Built from what was just read and written, not read again.
            user = self._person_with(*found, known={openid: identity}) if found else None
        assert user is not None  # just written
        return user

    def set_unionid(self, openid: str, unionid: str) -> None:
        """Attach the unionid learned from ``user/info`` to an existing identity and its person
        (else nothing: a record holding only a unionid would not be a user); may join the
        person to the unionid's holder (see the module's rules)."""
        key = self._identity_key(openid)
        person_id = self._redis.hget(key, "id")
        # The join first: a page that sees the unionid (its sign that the look-up is done)
        # then sees the joined person too.
        if person_id:
            self._claim_unionid(self._person_id(person_id) or person_id, unionid)

        def attach(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(key):
                pipe.multi()
                pipe.hset(key, "unionid", unionid)

        self._redis.transaction(attach, key)

    def _holder_open_to(self, unionid: str, appid: str) -> str | None:
        """The unionid's person, if they hold no identity under ``appid`` yet."""
        holder = self._redis.get(self._unionid_key(unionid))
        holder = self._person_id(holder) if holder else None
        if holder is None:
            return None
        if appid in self._appids(holder):
            log.warning("unionid's person already has an identity under this AppID: not joined")
            return None
        return holder

    def _attach(
        self, person_id: str, openid: str, profile: Mapping[str, str] | None = None
    ) -> tuple[str, dict[str, str]] | None:
        """Make sure the person's record lists ``openid`` (and holds the newest profile),
        migrating a record from before people.

        Returns:
            The person as ``_resolve`` read them, when their record needed no write (a
            returning identity: one read instead of a transaction); None after a write.
        """
        found = self._resolve(person_id)
        if found and found[0] == person_id and openid in _openids_of(found[1]) and not profile:
            return found
        key = self._id_key(person_id)
        self._redis.transaction(partial(self._list_openid, key, person_id, openid, profile), key)
        return None

    @staticmethod
    def _list_openid(
        key: str,
        person_id: str,
        openid: str,
        profile: Mapping[str, str] | None,
        pipe: redis.client.Pipeline,
    ) -> None:
        """In a transaction on the person's record: list ``openid``, keep ``profile``."""
        openids = (pipe.hget(key, "openids") or "").split()
        pipe.multi()
        pipe.hset(key, "id", person_id)
        if openid not in openids:
            pipe.hset(key, "openids", " ".join([*openids, openid]))
        if profile:
            pipe.hset(key, mapping=_profile(profile) or {"id": person_id})

    def _claim_unionid(self, person_id: str, unionid: str) -> None:
        """Index ``unionid`` to the person, or join the person to its holder (module rules)."""
        index = self._unionid_key(unionid)
        self._redis.set(index, person_id, nx=True)
        holder = self._person_id(self._redis.get(index) or person_id) or person_id
        if holder == person_id:
            self._redis.hsetnx(self._id_key(person_id), "unionid", unionid)
            return
        if self._appids(holder) & self._appids(person_id):
            log.warning(
                "a unionid names two people who both have an identity under one AppID: "
                "kept apart, not merged"
            )
            return
        self._merge(person_id, into=holder)

    def _merge(self, person_id: str, *, into: str) -> None:
        """Move every identity of ``person_id`` to ``into``; its record then forwards."""
        source = self._redis.hgetall(self._id_key(person_id))
        openids = source.get("openids", "").split()
        target = self._id_key(into)
        with self._redis.pipeline() as pipe:
            for openid in openids:
                pipe.hset(self._identity_key(openid), "id", into)
            pipe.delete(self._id_key(person_id))
            pipe.hset(self._id_key(person_id), "merged_into", into)
            pipe.execute()
        for openid in openids:
            self._attach(into, openid)
        for name in PROFILE_FIELDS:
            if source.get(name):
                self._redis.hsetnx(target, name, source[name])
        log.info("two records of one person joined by their unionid")

    # Linking by hand.

    def link(
        self,
        user_id: str,
        openid: str,
        *,
        method: str,
        appid: str,
        unionid: str | None = None,
        profile: Mapping[str, str] | None = None,
    ) -> User:
        """Attach the identity ``openid`` (under ``appid``) to the signed-in person ``user_id``,
        as a login of it.

        Raises:
            IdentityTaken: the identity is another person's.
            IdentityConflict: the person already holds another identity under ``appid``, or
                a unionid other than the identity's.
            LookupError: no person ``user_id``.
        """
        person = self.by_id(user_id)
        if person is None or person.id is None:
            raise LookupError(user_id)
        owner = self._redis.hget(self._identity_key(openid), "id")
        owner = self._person_id(owner) if owner else None
        if owner == person.id:
            return self.record_login(openid, method=method, appid=appid, unionid=unionid)
        if owner is not None:
            raise IdentityTaken("这个微信身份已属于另一个账号，不能绑定到当前账号。")
        if any(identity.appid == appid for identity in person.identities):
            raise IdentityConflict("当前账号已绑定这个应用的另一个微信身份。")
        if unionid and person.unionid and unionid != person.unionid:
            raise IdentityConflict("微信认定这是另一个人（unionid 不同），不能绑定。")
        self._redis.hsetnx(self._identity_key(openid), "id", person.id)
        return self.record_login(
            openid, method=method, appid=appid, unionid=unionid, profile=profile
        )

    def unlink(self, user_id: str, openid: str) -> User:
        """Detach the identity ``openid`` from person ``user_id``; its next login makes a new
        person.

        Raises:
            LookupError: no person ``user_id``, or the identity is not theirs.
            LastIdentity: it is their only identity.
            IdentityConflict: another of their identities has its unionid (it would join back).
        """
        person = self.by_id(user_id)
        identity = self._redis.hgetall(self._identity_key(openid))
        if person is None or person.id is None or openid not in _openids(person):
            raise LookupError(openid)
        if len(person.identities) <= 1:
            raise LastIdentity("这是唯一的登录方式，不能解绑。")
        unionid = identity.get("unionid")
        others = [i.openid for i in person.identities if i.openid != openid]
        if unionid and any(
            self._redis.hget(self._identity_key(other), "unionid") == unionid for other in others
        ):
            raise IdentityConflict(
                "微信认定这两个身份是同一个人（unionid 相同），"
                "解绑后下次登录会自动合并，所以不能解绑。"
            )
        key = self._id_key(person.id)

        def detach(pipe: redis.client.Pipeline) -> None:
            openids = (pipe.hget(key, "openids") or "").split()
            holder = pipe.get(self._unionid_key(unionid)) if unionid else None
            pipe.multi()
            pipe.hset(key, "openids", " ".join(o for o in openids if o != openid))
            pipe.delete(self._identity_key(openid))
            if unionid and unionid == person.unionid:
                # The unionid left with its identity: it no longer finds this person.
                pipe.hdel(key, "unionid")
                if holder == person.id:
                    pipe.delete(self._unionid_key(unionid))

        self._redis.transaction(detach, key)
        user = self.by_id(person.id)
        assert user is not None  # one identity remains
        return user

    # Reading.

    def get(self, openid: str) -> User | None:
        """The person holding the identity ``openid``, or None if it never signed in.

        A record without what ``record_login`` writes (cut short, or holding only a unionid) is
        no user either: the next sign-in completes it, and until then it is never an error.
        """
        data = self._redis.hgetall(self._identity_key(openid))
        if not _complete(data):
            return None
        if not data.get("id"):  # from before ids: a person of one identity, without an id
            return _person_from(None, {}, [self._identity_from(openid, data)], self.appid)
        return self.by_id(data["id"])

    def by_id(self, user_id: str) -> User | None:
        """Load a person by their id (``User.id``; a joined person's old id finds them), or
        None."""
        found = self._resolve(user_id)
        return self._person_with(*found) if found else None

    def _person_with(
        self, person_id: str, person: dict[str, str], known: Mapping[str, dict] | None = None
    ) -> User | None:
        """The person ``person_id`` from their record, their identities read (but those
        ``known`` already: openid -> record); None when none of them is theirs any more."""
        openids = _openids_of(person)
        unread = [openid for openid in openids if openid not in (known or {})]
        read = dict(known or {})
        if unread:
            with self._redis.pipeline() as pipe:
                for openid in unread:
                    pipe.hgetall(self._identity_key(openid))
                read.update(zip(unread, pipe.execute(), strict=True))
        records = [read[openid] for openid in openids]
        identities = [
            self._identity_from(openid, data)
            for openid, data in zip(openids, records, strict=True)
            # An identity moved or unlinked meanwhile is not theirs any more.
            if _complete(data)
            and (data.get("id") == person_id or self._person_id(data.get("id") or "") == person_id)
        ]
        if not identities:
            return None
        return _person_from(person_id, person, identities, self.appid)

    def _identity_from(self, openid: str, data: dict[str, str]) -> tuple[Identity, dict]:
        identity = Identity(data.get("method") or "scan", data.get("appid") or self.appid, openid)
        return identity, data

    def _person_id(self, user_id: str) -> str | None:
        """The id of the person ``user_id`` is now (following joins), or None."""
        found = self._resolve(user_id)
        return found[0] if found else None

    def _resolve(self, user_id: str) -> tuple[str, dict[str, str]] | None:
        """The person ``user_id`` is now (following joins), migrating a record from before
        people: ``(id, their record)``, one round trip per hop; None for no such person."""
        for _ in range(MAX_FORWARDS):
            if not user_id:
                return None
            key = self._id_key(user_id)
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.type(key)
                pipe.hgetall(key)
                kind, record = pipe.execute(raise_on_error=False)
            if kind == "string" and self._migrate(user_id):
                record = self._redis.hgetall(key)
            elif kind != "hash":
                return None
            if not record.get("merged_into"):
                return user_id, record
            user_id = record["merged_into"]
        return None

    def _migrate(self, user_id: str) -> bool:
        """Turn a record from before people (``user:id:<id>`` = openid) into the person hash.

        Returns:
            True when the person's record exists (now a hash).
        """
        key = self._id_key(user_id)
        kind = self._redis.type(key)
        if kind == "hash":
            return True
        if kind != "string":
            return False

        def migrate(pipe: redis.client.Pipeline) -> None:
            if pipe.type(key) != "string":
                return
            openid = pipe.get(key)
            pipe.multi()
            pipe.delete(key)
            pipe.hset(key, mapping={"id": user_id, "openids": openid})

        self._redis.transaction(migrate, key)
        # Its unionid (from user/info) becomes the person's, so a website login finds them.
        openids = (self._redis.hget(key, "openids") or "").split()
        unionid = self._redis.hget(self._identity_key(openids[0]), "unionid") if openids else None
        if unionid and self._redis.set(self._unionid_key(unionid), user_id, nx=True):
            self._redis.hsetnx(key, "unionid", unionid)
        log.info("a user record from before identities was migrated")
        return True

    def _appids(self, person_id: str) -> set[str]:
        user = self.by_id(person_id)
        return {identity.appid for identity in user.identities} if user else set()

    # Browsers.

    def add_device(self, openid: str, browser_hash: str) -> bool:
        """Remember that ``openid`` signed in from the browser with this binding-secret hash.

        Returns:
            True if the browser was new to them (this call made it known).
        """
        return bool(self._redis.sadd(f"{self._prefix}user:{openid}:devices", browser_hash))

    def forget_device(self, openid: str, browser_hash: str) -> None:
        """Stop trusting a browser for ``openid``: its next scan asks to confirm again."""
        self._redis.srem(f"{self._prefix}user:{openid}:devices", browser_hash)

    def knows_device(self, openid: str, browser_hash: str) -> bool:
        """Tell whether ``openid`` has signed in from this browser before."""
        return bool(self._redis.sismember(f"{self._prefix}user:{openid}:devices", browser_hash))


def _profile(profile: Mapping[str, str] | None) -> dict[str, str]:
    return {name: profile[name] for name in PROFILE_FIELDS if profile and profile.get(name)}


def _complete(data: Mapping[str, str]) -> bool:
    try:
        float(data["first_login_at"]), float(data["last_login_at"]), int(data["login_count"])
    except (KeyError, ValueError):
        return False
    return True


def _openids_of(person: Mapping[str, str]) -> list[str]:
    """The openids a person's record lists."""
    return person.get("openids", "").split()


def _openids(user: User) -> list[str]:
    return [identity.openid for identity in user.identities]


def _person_from(
    person_id: str | None,
    person: Mapping[str, str],
    identities: list[tuple[Identity, dict]],
    account_appid: str,
) -> User:
    records = [data for _, data in identities]
    return User(
        id=person_id,
        openid=next(
            (identity.openid for identity, _ in identities if identity.appid == account_appid),
            None,
        ),
        unionid=person.get("unionid")
        or next((d["unionid"] for d in records if d.get("unionid")), None),
        first_login_at=min(float(d["first_login_at"]) for d in records),
        last_login_at=max(float(d["last_login_at"]) for d in records),
        login_count=sum(int(d["login_count"]) for d in records),
        nickname=person.get("nickname") or None,
        headimgurl=person.get("headimgurl") or None,
        identities=tuple(identity for identity, _ in identities),
    )
