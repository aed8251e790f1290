"""People and their identities (UserStore) on the real Redis: one person across AppIDs by
unionid, links by hand, refusals, unlink, and records from before identities."""

import pytest

from app.login.users import IdentityConflict, IdentityTaken, LastIdentity, UserStore

OA = "wxOfficialAccount"
WEB = "wxWebsiteApp"


@pytest.fixture
def users(redis_client) -> UserStore:
    return UserStore(redis_client, appid=OA)


def test_a_website_login_with_the_unionid_of_an_oa_person_signs_in_as_them(users):
    oa = users.record_login("oOA1", method="scan", unionid="uPerson")

    web = users.record_login(
        "oWEB1",
        method="open_qr",
        appid=WEB,
        unionid="uPerson",
        profile={"nickname": "小明", "headimgurl": "https://thirdwx.qlogo.cn/x/132"},
    )

    assert web.id == oa.id
    assert web.openid == "oOA1"  # the Official Account's openid, whoever proved it
    assert {(i.method, i.appid, i.openid) for i in web.identities} == {
        ("scan", OA, "oOA1"),
        ("open_qr", WEB, "oWEB1"),
    }
    assert (web.nickname, web.headimgurl) == ("小明", "https://thirdwx.qlogo.cn/x/132")
    assert users.get("oOA1") == users.get("oWEB1") == users.by_id(oa.id)
    assert web.login_count == 2


def test_a_unionid_learned_later_joins_the_two_records_and_the_old_id_still_finds_them(users):
    web = users.record_login("oWEB1", method="open_qr", appid=WEB, unionid="uPerson")
    oa = users.record_login("oOA1")  # the scan: no unionid yet (user/info runs after)
    assert oa.id != web.id

    users.set_unionid("oOA1", "uPerson")

    joined = users.get("oOA1")
    assert joined.id == web.id  # the unionid's holder keeps their id
    assert users.by_id(oa.id) == joined  # a session or token holding the other id follows
    assert {i.openid for i in joined.identities} == {"oOA1", "oWEB1"}


def test_a_unionid_never_merges_two_people_with_identities_of_one_appid(users):
    first = users.record_login("oOA1", unionid="uPerson")
    second = users.record_login("oOA2")  # another OA identity (WeChat says: another person)

    users.set_unionid("oOA2", "uPerson")
    third = users.record_login("oOA3", unionid="uPerson")

    assert users.get("oOA1").id == first.id
    assert users.get("oOA2").id == second.id
    assert third.id not in (first.id, second.id)
    assert len(users.get("oOA1").identities) == 1


def test_link_attaches_an_identity_by_hand(users):
    person = users.record_login("oOA1")  # no unionid: not bound to one Open Platform account

    linked = users.link(person.id, "oWEB1", method="open_qr", appid=WEB, profile={"nickname": "A"})

    assert linked.id == person.id and linked.nickname == "A"
    assert users.get("oWEB1").id == person.id
    # Its next login signs in as the same person.
    assert users.record_login("oWEB1", method="open_qr", appid=WEB).id == person.id


def test_link_refuses_an_identity_that_is_another_persons(users):
    me = users.record_login("oOA1")
    other = users.record_login("oWEB1", method="open_qr", appid=WEB)

    with pytest.raises(IdentityTaken) as refused:
        users.link(me.id, "oWEB1", method="open_qr", appid=WEB)

    assert "另一个账号" in refused.value.reason
    assert users.get("oWEB1").id == other.id  # nothing moved
    assert len(users.by_id(me.id).identities) == 1


@pytest.mark.parametrize(
    ("openid", "appid", "unionid"),
    [("oOA2", OA, None), ("oWEB1", WEB, "uSomeoneElse")],
    ids=["second-identity-of-one-appid", "other-unionid"],
)
def test_link_refuses_what_would_make_two_people_one(users, openid, appid, unionid):
    me = users.record_login("oOA1", unionid="uMe")

    with pytest.raises(IdentityConflict):
        users.link(me.id, openid, method="scan", appid=appid, unionid=unionid)

    assert users.get(openid) is None


def test_unlink_detaches_one_and_its_next_login_is_someone_new(users):
    me = users.record_login("oOA1")
    users.link(me.id, "oWEB1", method="open_qr", appid=WEB)

    left = users.unlink(me.id, "oWEB1")

    assert [i.openid for i in left.identities] == ["oOA1"]
    assert users.get("oWEB1") is None
    assert users.record_login("oWEB1", method="open_qr", appid=WEB).id != me.id


def test_unlink_keeps_the_last_identity(users):
    me = users.record_login("oOA1")

    with pytest.raises(LastIdentity):
        users.unlink(me.id, "oOA1")

    assert users.get("oOA1").id == me.id


def test_unlink_refuses_an_identity_that_shares_the_persons_unionid(users):
    me = users.record_login("oOA1", unionid="uMe")
    users.record_login("oWEB1", method="open_qr", appid=WEB, unionid="uMe")

    with pytest.raises(IdentityConflict):
        users.unlink(me.id, "oWEB1")


def test_unlink_of_an_identity_not_theirs_is_a_lookup_error(users):
    me = users.record_login("oOA1")
    users.record_login("oOA2")
    users.link(me.id, "oWEB1", method="open_qr", appid=WEB)

    with pytest.raises(LookupError):
        users.unlink(me.id, "oOA2")


def test_a_record_from_before_identities_is_migrated_on_read_and_keeps_its_id(users, redis_client):
    redis_client.hset(
        "user:oOA1",
        mapping={
            "openid": "oOA1",
            "id": "old-id",
            "unionid": "uOld",
            "first_login_at": "1",
            "last_login_at": "2",
            "login_count": "3",
        },
    )
    redis_client.set("user:id:old-id", "oOA1")

    user = users.by_id("old-id")

    assert (user.id, user.openid, user.unionid, user.login_count) == ("old-id", "oOA1", "uOld", 3)
    assert [(i.appid, i.openid) for i in user.identities] == [(OA, "oOA1")]
    assert redis_client.type("user:id:old-id") == "hash"
    assert users.record_login("oOA1").id == "old-id"
    # Its unionid now finds it from the website application.
    assert users.record_login("oWEB1", method="open_qr", appid=WEB, unionid="uOld").id == "old-id"


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("openid", {}),
        ("openid profile", {"name": "小明", "picture": "https://thirdwx.qlogo.cn/x/132"}),
    ],
)
def test_profile_claims_come_from_the_website_login(users, scope, expected):
    from app.oidc.server import user_claims

    user = users.record_login(
        "oWEB1",
        method="open_qr",
        appid=WEB,
        profile={"nickname": "小明", "headimgurl": "https://thirdwx.qlogo.cn/x/132"},
    )

    assert dict(user_claims(user, scope)) == {"sub": user.id, **expected}
    # The Official Account's flows give no profile: no name, no picture.
    plain = users.record_login("oOA1")
    assert dict(user_claims(plain, "openid profile")) == {"sub": plain.id}
