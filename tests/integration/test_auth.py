"""Accounts and tokens against a real onaird: register, login, refresh, logout, me, the
admin API, token attacks, API keys, key rotation, WebSocket authentication, the
authorization matrix and --create-admin. Account tests run on both storage backends
(sqlite and CongoDB for mongodb). Passwords are hashed with auth.password_hash:
interactive to keep the suite fast.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import tempfile
import time

import pytest
import websockets
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from onair_harness import JWT_SECRET, ONAIRD, Server, b64url, make_token
from store_support import Congo, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]
PW = "correct horse battery staple"
API_KEY = "backend1"
API_SECRET = "api-secret-0123456789-abcdefghijklmnop"


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def congo():
    c = Congo().start()
    yield c
    c.stop()


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "mongodb":
        c = request.getfixturevalue("congo")
        return storage_config("mongodb", uri=c.uri, database=unique_db())
    return {"backend": "sqlite"}


def auth_core(**auth):
    a = {"password_hash": "interactive", "api_keys": [f"{API_KEY}:{API_SECRET}"]}
    a.update(auth)
    return a


@pytest.fixture
def acct(backend, server_factory):
    """onaird with accounts on this test's backend."""
    return server_factory(plugins={"testkit": {}},
                          core={"auth": auth_core(), "storage": backend}).start()


@pytest.fixture(scope="module")
def shared():
    """One server for the tests that do not change accounts (token attacks, validation)."""
    s = Server(plugins={"testkit": {}}, core={"auth": auth_core()}).start()
    yield s
    try:
        s.stop()
    finally:
        s.kill()


# ---- helpers -------------------------------------------------------------------------------
def problem(r, status, code):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
    body = r.json()
    assert body["code"] == code, body
    assert body.get("detail"), body
    return body


def register(s, username, password=PW, email=None, status=201, **extra):
    body = {"username": username, "email": email or f"{username}@example.com",
            "password": password}
    body.update(extra)
    r = s.http("POST", "/api/v1/auth/register", body=body)
    assert r.status == status, r
    return r.json()


def login(s, ident, password=PW):
    return s.http("POST", "/api/v1/auth/login", body={"login": ident, "password": password})


def api_token(roles=("admin",), sub="backend-service", secret=API_SECRET, iss=API_KEY, **kw):
    return make_token(sub=sub, roles=roles, secret=secret, iss=iss, **kw)


def admin_patch(s, uid, **fields):
    r = s.http("PATCH", f"/api/v1/admin/users/{uid}", body=fields, token=api_token())
    assert r.status == 200, r
    return r.json()["user"]


def jwt_sign(header, claims, key, alg=None):
    alg = alg or header["alg"]
    si = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
    if alg == "HS256":
        sig = hmac.new(key.encode(), si, hashlib.sha256).digest()
    elif alg == "RS256":
        sig = key.sign(si, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        r, s_ = decode_dss_signature(key.sign(si, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s_.to_bytes(32, "big")
    else:
        sig = b""
    return si.decode() + "." + b64url(sig)


def claims(sub="attacker", roles=("admin",), iss="onair", exp_in=900, **extra):
    now = int(time.time())
    c = {"iss": iss, "sub": sub, "iat": now, "exp": now + exp_in, "roles": list(roles),
         "verified": True}
    c.update(extra)
    return c


def decode_part(token, i):
    seg = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def ws_call(ws, type_, data=None, id_="1"):
    await ws.send(json.dumps({"type": type_, "id": id_, "data": data or {}}))
    while True:
        m = json.loads(await ws.recv())
        if m.get("id") == id_:
            return m


# ---- accounts, both backends -------------------------------------------------------------
def test_register_login_me_refresh_logout(acct):
    reg = register(acct, "Alice_1", display_name="Alice A.")
    u = reg["user"]
    assert u["username"] == "alice_1" and u["email"] == "alice_1@example.com"
    assert u["display_name"] == "Alice A." and u["roles"] == ["viewer", "streamer"]
    assert u["verified"] is False and u["disabled"] is False and "password_hash" not in u
    assert reg["token_type"] == "Bearer" and reg["expires_in"] == 900
    hdr, cl = decode_part(reg["access_token"], 0), decode_part(reg["access_token"], 1)
    assert hdr["alg"] == "HS256" and hdr["kid"] == "default"
    assert cl["sub"] == u["id"] and cl["iss"] == "onair" and cl["exp"] - cl["iat"] == 900
    assert cl["jti"] and cl["roles"] == ["viewer", "streamer"] and cl["verified"] is False

    me = acct.http("GET", "/api/v1/auth/me", token=reg["access_token"])
    assert me.status == 200 and me.json()["user"] == u
    # login by username (any case) and by email
    for ident in ("alice_1", "ALICE_1", "Alice_1@Example.com"):
        r = login(acct, ident)
        assert r.status == 200, r
        assert r.json()["user"]["id"] == u["id"]
    # refresh rotates
    r = acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": reg["refresh_token"]})
    assert r.status == 200, r
    pair = r.json()
    assert pair["refresh_token"] != reg["refresh_token"]
    assert acct.http("GET", "/api/v1/auth/me", token=pair["access_token"]).status == 200
    # logout ends that session's refresh tokens; the access token lives until it expires
    r = acct.http("POST", "/api/v1/auth/logout", body={"refresh_token": pair["refresh_token"]})
    assert r.status == 204, r
    problem(acct.http("POST", "/api/v1/auth/refresh",
                      body={"refresh_token": pair["refresh_token"]}), 401, "invalid_refresh_token")
    assert acct.http("GET", "/api/v1/auth/me", token=pair["access_token"]).status == 200


def test_duplicates(acct):
    register(acct, "bob")
    problem(acct.http("POST", "/api/v1/auth/register",
                      body={"username": "BOB", "email": "other@example.com", "password": PW}),
            409, "username_taken")
    problem(acct.http("POST", "/api/v1/auth/register",
                      body={"username": "bob2", "email": " Bob@EXAMPLE.com ", "password": PW}),
            409, "email_taken")
    assert login(acct, "bob").status == 200


def test_login_errors_are_generic(acct):
    uid = register(acct, "carol")["user"]["id"]
    unknown = problem(login(acct, "nobody", PW), 401, "invalid_credentials")
    wrong = problem(login(acct, "carol", "wrong password 123"), 401, "invalid_credentials")
    assert unknown["detail"] == wrong["detail"]
    problem(login(acct, "nobody@example.com", PW), 401, "invalid_credentials")
    problem(acct.http("POST", "/api/v1/auth/login", body={"password": PW}), 400, "missing_field")
    admin_patch(acct, uid, disabled=True)
    # disabled: still the generic error with a wrong password, 403 only after a right one
    problem(login(acct, "carol", "wrong password 123"), 401, "invalid_credentials")
    problem(login(acct, "carol"), 403, "account_disabled")
    assert "wrong password 123" not in acct.log() and PW not in acct.log()


def test_disabled_account_tokens_stop_at_next_request(acct):
    reg = register(acct, "dave")
    tok = reg["access_token"]
    assert acct.http("GET", "/api/v1/testkit/user", token=tok).status == 200
    admin_patch(acct, reg["user"]["id"], disabled=True)
    problem(acct.http("GET", "/api/v1/testkit/user", token=tok), 401, "account_disabled")
    problem(acct.http("GET", "/api/v1/auth/me", token=tok), 401, "account_disabled")
    problem(acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": reg["refresh_token"]}),
            401, "invalid_refresh_token")
    admin_patch(acct, reg["user"]["id"], disabled=False)
    # re-enabled: tokens issued before the disabling stay revoked, a new login works
    problem(acct.http("GET", "/api/v1/testkit/user", token=tok), 401, "token_revoked")
    r = login(acct, "dave")
    assert r.status == 200
    assert acct.http("GET", "/api/v1/testkit/user", token=r.json()["access_token"]).status == 200


def test_patch_me_and_password_change(acct):
    reg = register(acct, "erin")
    tok = reg["access_token"]
    r = acct.http("PATCH", "/api/v1/auth/me", body={"display_name": "Erin E."}, token=tok)
    assert r.status == 200 and r.json()["user"]["display_name"] == "Erin E."
    # role escalation and other fields: refused, naming the field
    for field, value in (("roles", ["admin"]), ("verified", True), ("disabled", False),
                         ("email", "x@example.com"), ("username", "root"), ("id", "x")):
        p = problem(acct.http("PATCH", "/api/v1/auth/me", body={field: value}, token=tok), 400,
                    "field_not_allowed")
        assert field in p["detail"]
    assert acct.http("GET", "/api/v1/testkit/admin", token=tok).status == 403
    problem(acct.http("PATCH", "/api/v1/auth/me", body={"display_name": "x" * 65}, token=tok),
            400, "invalid_display_name")
    problem(acct.http("PATCH", "/api/v1/auth/me", body={"password": "new password 4567"},
                      token=tok), 400, "missing_field")
    problem(acct.http("PATCH", "/api/v1/auth/me",
                      body={"password": "new password 4567", "current_password": "wrong one!!"},
                      token=tok), 403, "invalid_credentials")
    problem(acct.http("PATCH", "/api/v1/auth/me",
                      body={"password": "password123", "current_password": PW}, token=tok),
            400, "weak_password")
    r = acct.http("PATCH", "/api/v1/auth/me",
                  body={"password": "new password 4567", "current_password": PW}, token=tok)
    assert r.status == 200, r
    fresh = r.json()
    # every older token is revoked; the answer carries a new pair
    problem(acct.http("GET", "/api/v1/auth/me", token=tok), 401, "token_revoked")
    problem(acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": reg["refresh_token"]}),
            401, "invalid_refresh_token")
    assert acct.http("GET", "/api/v1/auth/me", token=fresh["access_token"]).status == 200
    problem(login(acct, "erin", PW), 401, "invalid_credentials")
    assert login(acct, "erin", "new password 4567").status == 200


def test_refresh_rotation_and_reuse_revokes_family(acct):
    reg = register(acct, "frank")
    other = login(acct, "frank").json()  # another session (family)
    r1 = acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": reg["refresh_token"]})
    assert r1.status == 200
    rt2 = r1.json()["refresh_token"]
    # the spent token again: the whole family is revoked
    problem(acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": reg["refresh_token"]}),
            401, "refresh_token_reused")
    problem(acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": rt2}), 401,
            "invalid_refresh_token")
    # the other session is untouched
    r = acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": other["refresh_token"]})
    assert r.status == 200
    problem(acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": "x" * 43}), 401,
            "invalid_refresh_token")
    problem(acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": "x" * 600}), 400,
            "invalid_field")
    problem(acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": 1}), 400,
            "invalid_field")


def test_logout_all(acct):
    reg = register(acct, "gina")
    s2 = login(acct, "gina").json()
    r = acct.http("POST", "/api/v1/auth/logout",
                  body={"refresh_token": reg["refresh_token"], "all": True})
    assert r.status == 204, r
    for t in (reg["access_token"], s2["access_token"]):
        problem(acct.http("GET", "/api/v1/auth/me", token=t), 401, "token_revoked")
    problem(acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": s2["refresh_token"]}),
            401, "invalid_refresh_token")
    problem(acct.http("POST", "/api/v1/auth/logout", body={"refresh_token": "nope" * 10}), 401,
            "invalid_refresh_token")
    problem(acct.http("POST", "/api/v1/auth/logout",
                      body={"refresh_token": s2["refresh_token"], "all": "yes"}), 400,
            "invalid_field")
    assert login(acct, "gina").status == 200


def test_admin_api(acct):
    ids = {}
    for n in ("henry", "hank", "ivy", "jack"):
        ids[n] = register(acct, n)
    adm = api_token()
    r = acct.http("GET", "/api/v1/admin/users?limit=2", token=adm)
    assert r.status == 200, r
    page1 = r.json()
    assert [u["username"] for u in page1["users"]] == ["hank", "henry"] and page1["next"]
    assert all("password_hash" not in u for u in page1["users"])
    r = acct.http("GET", "/api/v1/admin/users?limit=2&after=" + page1["next"], token=adm)
    assert [u["username"] for u in r.json()["users"]] == ["ivy", "jack"]
    r = acct.http("GET", "/api/v1/admin/users?q=h", token=adm)
    assert sorted(u["username"] for u in r.json()["users"]) == ["hank", "henry"]
    problem(acct.http("GET", "/api/v1/admin/users?limit=101", token=adm), 400, "invalid_query")
    problem(acct.http("GET", "/api/v1/admin/users?q=A*", token=adm), 400, "invalid_query")
    uid = ids["ivy"]["user"]["id"]
    r = acct.http("GET", f"/api/v1/admin/users/{uid}", token=adm)
    assert r.status == 200 and r.json()["user"]["username"] == "ivy"
    problem(acct.http("GET", "/api/v1/admin/users/" + "0" * 24, token=adm), 404, "not_found")
    problem(acct.http("GET", "/api/v1/admin/users/nope", token=adm), 404, "not_found")
    problem(acct.http("PATCH", "/api/v1/admin/users/" + "0" * 24, body={"verified": True},
                      token=adm), 404, "not_found")
    # role and verification changes apply to tokens already issued, at once
    tok = ids["ivy"]["access_token"]
    assert acct.http("GET", "/api/v1/testkit/admin", token=tok).status == 403
    assert acct.http("GET", "/api/v1/testkit/verified", token=tok).status == 403
    u = admin_patch(acct, uid, roles=["viewer", "admin"], verified=True, display_name="Ivy")
    assert u["roles"] == ["viewer", "admin"] and u["verified"] and u["display_name"] == "Ivy"
    assert acct.http("GET", "/api/v1/testkit/admin", token=tok).status == 200
    assert acct.http("GET", "/api/v1/testkit/verified", token=tok).status == 200
    # ivy is an admin now: she can use the admin API herself
    assert acct.http("GET", "/api/v1/admin/users", token=tok).status == 200
    for body, code in (({"roles": ["root"]}, "invalid_role"), ({"roles": "admin"}, "invalid_field"),
                       ({"disabled": "yes"}, "invalid_field"), ({"password": "x"},
                                                               "field_not_allowed"),
                       ({"email": "a@b.c"}, "field_not_allowed"), ({}, "missing_field"),
                       ({"display_name": "y" * 300}, "invalid_field")):
        problem(acct.http("PATCH", f"/api/v1/admin/users/{uid}", body=body, token=adm), 400, code)


# ---- validation (no store differences) -----------------------------------------------------
@pytest.mark.parametrize("field,value,code", [
    ("username", "ab", "invalid_username"),
    ("username", "a" * 33, "invalid_field"),
    ("username", "bad name", "invalid_username"),
    ("username", "ünï", "invalid_username"),
    ("email", "no-at-sign", "invalid_email"),
    ("email", "a@b", "invalid_email"),
    ("email", "a@@b.com", "invalid_email"),
    ("email", "x" * 300 + "@example.com", "invalid_field"),
    ("password", "short1!", "weak_password"),
    ("password", "1234567890", "weak_password"),
    ("password", "password123", "weak_password"),
    ("password", "Qwertyuiop", "weak_password"),
    ("password", "iloveyou12", "weak_password"),
    ("password", "aaaaaaaaaaaa", "weak_password"),
    ("password", "validuser1", "weak_password"),  # = username
    ("password", "x" * 2000, "invalid_field"),
    ("display_name", "", "invalid_display_name"),
    ("display_name", "z" * 65, "invalid_display_name"),
    ("roles", ["admin"], "unknown_field"),
    ("verified", True, "unknown_field"),
])
def test_register_validation(shared, field, value, code):
    body = {"username": "validuser1", "email": "valid@example.com", "password": PW}
    body[field] = value
    p = problem(shared.http("POST", "/api/v1/auth/register", body=body), 400, code)
    if code == "unknown_field":
        assert field in p["detail"]


def test_register_needs_fields_and_json(shared):
    problem(shared.http("POST", "/api/v1/auth/register", body={"username": "abc", "password": PW}),
            400, "missing_field")
    r = shared.http("POST", "/api/v1/auth/register", body="not json",
                    headers={"Content-Type": "application/json"})
    assert r.status == 400
    r = shared.http("POST", "/api/v1/auth/register", body={"username": "a" * 20000})
    assert r.status == 413


def test_no_key_configured(server_factory):
    s = server_factory(plugins={}, core={"auth": {"jwt_secret": ""}}).start()
    assert s.wait_log(r"no signing key")
    problem(s.http("POST", "/api/v1/auth/register",
                   body={"username": "abc", "email": "a@example.com", "password": PW}), 503,
            "auth_not_configured")
    problem(s.http("POST", "/api/v1/auth/login", body={"login": "abc", "password": PW}), 503,
            "auth_not_configured")
    problem(s.http("GET", "/api/v1/auth/me", token=make_token()), 401, "invalid_token")


# ---- token attacks: each one refused with 401 invalid_token --------------------------------
def assert_refused(s, token, path="/api/v1/testkit/user"):
    r = s.http("GET", path, token=token)
    problem(r, 401, "invalid_token")
    assert 'error="invalid_token"' in (r.header("WWW-Authenticate") or "")


def test_attack_forged_signature(shared):
    assert_refused(shared, make_token(secret="wrong-secret-wrong-secret-wrong-secret"))


def test_attack_alg_none(shared):
    assert_refused(shared, make_token(alg="none"))
    tok = jwt_sign({"alg": "none", "typ": "JWT", "kid": "default"}, claims(), None, alg="none")
    assert_refused(shared, tok)
    assert_refused(shared, jwt_sign({"alg": "None", "typ": "JWT"}, claims(), None, alg="none"))


def test_attack_alg_mismatch(shared):
    # HS256 key, RS256 header (signed with the HMAC secret: the classic confusion)
    tok = jwt_sign({"alg": "RS256", "typ": "JWT"}, claims(), JWT_SECRET, alg="HS256")
    assert_refused(shared, tok)
    tok = jwt_sign({"alg": "HS512", "typ": "JWT", "kid": "default"}, claims(), JWT_SECRET,
                   alg="HS256")
    assert_refused(shared, tok)


def test_attack_unknown_kid(shared):
    assert_refused(shared, jwt_sign({"alg": "HS256", "kid": "other"}, claims(), JWT_SECRET))
    assert_refused(shared, jwt_sign({"alg": "HS256", "kid": 5}, claims(), JWT_SECRET))


def test_attack_expired(shared):
    assert_refused(shared, make_token(exp_in=-3600))
    assert_refused(shared, jwt_sign({"alg": "HS256"}, {"iss": "onair", "sub": "x"}, JWT_SECRET))


def test_attack_not_yet_valid(shared):
    assert_refused(shared, make_token(nbf=int(time.time()) + 3600))


def test_attack_tampered_payload(shared):
    tok = make_token(roles=["viewer"])
    h, _, sig = tok.split(".")
    evil = b64url(json.dumps(claims(sub="user1", roles=["admin"])).encode())
    assert_refused(shared, f"{h}.{evil}.{sig}", "/api/v1/testkit/admin")
    assert_refused(shared, tok[:-2] + ("AA" if not tok.endswith("AA") else "BB"))
    assert_refused(shared, "garbage")
    assert_refused(shared, "a.b.c")
    assert_refused(shared, tok + "." + "x")


def test_attack_wrong_issuer(shared):
    assert_refused(shared, make_token(iss="someone-else"))
    # an API key's name as issuer but signed with our key: not that key's secret
    assert_refused(shared, make_token(iss=API_KEY))


def test_attack_bad_subject(shared):
    assert_refused(shared, make_token(sub="x" * 129))
    assert_refused(shared, make_token(sub=""))


def test_attack_bad_authorization_header(shared):
    r = shared.http("GET", "/api/v1/testkit/user", headers={"Authorization": "Basic abc"})
    problem(r, 401, "invalid_token")
    r = shared.http("GET", "/api/v1/testkit/user", headers={"Authorization": "Bearer " + "a" * 9000})
    assert r.status in (401, 431)


# ---- API keys, rotation, asymmetric keys -----------------------------------------------------
def test_api_key_token_calls_admin_api(acct):
    uid = register(acct, "kate")["user"]["id"]
    r = acct.http("GET", "/api/v1/admin/users", token=api_token())
    assert r.status == 200 and [u["id"] for u in r.json()["users"]] == [uid]
    assert admin_patch(acct, uid, verified=True)["verified"] is True
    # a backend mints a token for one of its own users (unknown sub): the claims stand
    t = api_token(roles=["streamer"], sub="ext-user-7", verified=True)
    assert acct.http("GET", "/api/v1/testkit/verified", token=t).status == 200
    problem(acct.http("GET", "/api/v1/admin/users", token=t), 403, "forbidden")
    assert_refused(acct, api_token(secret="not-the-api-secret-0123456789-abcdef"))
    assert_refused(acct, api_token(iss="unknown-key"))
    # for an existing account, its live status applies (disabled)
    t = api_token(roles=["viewer"], sub=uid)
    assert acct.http("GET", "/api/v1/testkit/user", token=t).status == 200
    admin_patch(acct, uid, disabled=True)
    problem(acct.http("GET", "/api/v1/testkit/user", token=t), 401, "account_disabled")


def test_key_rotation(server_factory):
    old, new = "old-secret-0123456789-0123456789-abc", "new-secret-0123456789-0123456789-xyz"
    core = {"auth": auth_core(jwt_secret="", signing_keys=[f"k2:HS256:{new}", f"k1:HS256:{old}"])}
    s = server_factory(plugins={"testkit": {}}, core=core).start()
    reg = register(s, "lena")
    assert decode_part(reg["access_token"], 0)["kid"] == "k2"
    t_old = jwt_sign({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims(sub="x"), old)
    t_new = jwt_sign({"alg": "HS256", "typ": "JWT", "kid": "k2"}, claims(sub="x"), new)
    assert s.http("GET", "/api/v1/testkit/user", token=t_old).status == 200
    assert s.http("GET", "/api/v1/testkit/user", token=t_new).status == 200
    # the kid decides: the old key's token under the new kid fails
    assert_refused(s, jwt_sign({"alg": "HS256", "kid": "k2"}, claims(sub="x"), old))
    # no kid: the first (signing) key
    assert s.http("GET", "/api/v1/testkit/user",
                  token=jwt_sign({"alg": "HS256"}, claims(sub="x"), new)).status == 200
    s.stop()
    # k1 removed: its tokens are refused, k2's still work
    s2 = server_factory(plugins={"testkit": {}},
                        core={"auth": auth_core(jwt_secret="", signing_keys=[f"k2:HS256:{new}"])})
    s2.start()
    assert_refused(s2, t_old)
    assert s2.http("GET", "/api/v1/testkit/user", token=t_new).status == 200


def write_pem(d, name, key, private=True):
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        if private:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        else:
            f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_asymmetric_keys(server_factory, alg):
    d = tempfile.mkdtemp(prefix="onair-keys-")
    key = (rsa.generate_private_key(65537, 2048) if alg == "RS256"
           else ec.generate_private_key(ec.SECP256R1()))
    priv, pub = write_pem(d, "k.pem", key), write_pem(d, "k.pub", key, private=False)
    core = {"auth": auth_core(jwt_secret="", signing_keys=[f"a1:{alg}:{priv}:{pub}"])}
    s = server_factory(plugins={"testkit": {}}, core=core).start()
    reg = register(s, "mona")
    assert decode_part(reg["access_token"], 0) == {"alg": alg, "kid": "a1", "typ": "JWT"}
    assert s.http("GET", "/api/v1/auth/me", token=reg["access_token"]).status == 200
    mine = jwt_sign({"alg": alg, "typ": "JWT", "kid": "a1"}, claims(sub="x"), key)
    assert s.http("GET", "/api/v1/testkit/user", token=mine).status == 200
    # an HMAC token "signed" with the public key text: refused (alg mismatch)
    with open(pub) as f:
        assert_refused(s, jwt_sign({"alg": "HS256", "kid": "a1"}, claims(), f.read()))
    other = (rsa.generate_private_key(65537, 2048) if alg == "RS256"
             else ec.generate_private_key(ec.SECP256R1()))
    assert_refused(s, jwt_sign({"alg": alg, "kid": "a1"}, claims(sub="x"), other))


@pytest.mark.parametrize("keys,message", [
    (["a:RS256:/nonexistent/key.pem"], "cannot read /nonexistent/key.pem"),
    (["a:HS384:" + "s" * 40], "not supported"),
    (["a:HS256:" + "s" * 40, "a:HS256:" + "t" * 40], "duplicate kid"),
    (["a:HS256:short"], "at least 32"),
    (["nocolon"], "expected"),
    (["default:HS256:" + "s" * 40], "duplicate kid"),  # auth.jwt_secret is kid "default"
])
def test_bad_keys_stop_startup(server_factory, keys, message):
    s = server_factory(plugins={}, core={"auth": auth_core(signing_keys=keys)})
    s.start(wait=False)
    assert s.proc.wait(30) == 1
    s._reader.join(5)
    assert message in s.log(), s.log()


# ---- WebSocket ---------------------------------------------------------------------------
def test_websocket_auth_paths(acct):
    reg = register(acct, "nina")
    tok, uid = reg["access_token"], reg["user"]["id"]

    async def scenario():
        hdr = {"Authorization": "Bearer " + tok}
        async with websockets.connect(acct.ws_url, extra_headers=hdr) as ws:
            assert (await ws_call(ws, "testkit.private"))["data"] == {"user": uid}
        async with websockets.connect(acct.ws_url) as ws:
            r = await ws_call(ws, "testkit.private")
            assert r["type"] == "error" and r["data"]["code"] == "unauthorized"
            r = await ws_call(ws, "auth", {"token": tok})
            assert r["type"] == "result" and r["data"] == {"user": uid, "verified": False}
            assert (await ws_call(ws, "testkit.private"))["data"] == {"user": uid}
            # disabling the account closes its connections on this node
            admin_patch(acct, uid, disabled=True)
            with pytest.raises(websockets.ConnectionClosed) as e:
                for _ in range(50):
                    await ws_call(ws, "testkit.whoami")
                    await asyncio.sleep(0.05)
            assert e.value.code == 1008
        async with websockets.connect(acct.ws_url) as ws:
            r = await ws_call(ws, "auth", {"token": tok})
            assert r["type"] == "error" and r["data"]["code"] == "account_disabled"
            assert r["data"]["status"] == 401
        for kw in ({"extra_headers": hdr},):
            async with websockets.connect(acct.ws_url, **kw) as ws:
                with pytest.raises(websockets.ConnectionClosed) as e:
                    await asyncio.wait_for(ws.recv(), 10)
                assert e.value.code == 1008
    run(scenario())


def test_websocket_ticket_in_subprotocol(shared):
    """Browsers cannot set headers on a WebSocket upgrade, and libwebsockets 4.1 cannot
    carry a whole JWT in Sec-WebSocket-Protocol: a short single-use ticket does it."""
    tok = make_token(sub="sp-user")
    r = shared.http("POST", "/api/v1/auth/ws-ticket", token=tok)
    assert r.status == 201, r
    ticket = r.json()["ticket"]
    assert len(ticket) == 22 and r.json()["expires_in"] == 30
    assert shared.http("POST", "/api/v1/auth/ws-ticket").status == 401  # needs a user

    async def scenario():
        async with websockets.connect(shared.ws_url,
                                      subprotocols=["onair", "ticket." + ticket]) as ws:
            assert ws.subprotocol == "onair"
            assert (await ws_call(ws, "testkit.private"))["data"] == {"user": "sp-user"}
        # single use, and a forged ticket is refused like a bad token
        for t in (ticket, "A" * 22):
            async with websockets.connect(shared.ws_url,
                                          subprotocols=["onair", "ticket." + t]) as ws:
                with pytest.raises(websockets.ConnectionClosed) as e:
                    await asyncio.wait_for(ws.recv(), 10)
                assert e.value.code == 1008
    run(scenario())


def test_websocket_bad_tokens(shared):
    async def scenario():
        for tok in ("garbage", "a.b.c", "x" * 60):
            async with websockets.connect(shared.ws_url,
                                          subprotocols=["onair", "access_token." + tok]) as ws:
                with pytest.raises(websockets.ConnectionClosed) as e:
                    await asyncio.wait_for(ws.recv(), 10)
                assert e.value.code == 1008
        async with websockets.connect(shared.ws_url) as ws:
            r = await ws_call(ws, "auth", {"token": make_token(secret="x" * 40)})
            assert r["data"]["code"] == "invalid_token" and r["data"]["status"] == 401
    run(scenario())


def test_query_string_token_not_logged(shared):
    secret = make_token(sub="query-user")
    shared.raw(f"GET /ws?access_token={secret} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), timeout=2)
    shared.http("GET", "/api/v1/testkit/user?access_token=" + secret)
    assert shared.wait_log(r"GET /api/v1/testkit/user ")
    log = shared.log()
    assert secret not in log and secret.split(".")[2] not in log


# ---- the authorization matrix --------------------------------------------------------------
ROUTES = [  # method, path, body, required: "user" | "admin" | "verified"
    ("GET", "/api/v1/auth/me", None, "user"),
    ("PATCH", "/api/v1/auth/me", {"display_name": "Someone"}, "user"),
    ("GET", "/api/v1/admin/users", None, "admin"),
    ("GET", "/api/v1/admin/users/{target}", None, "admin"),
    ("PATCH", "/api/v1/admin/users/{target}", {"display_name": "Target"}, "admin"),
    ("GET", "/api/v1/testkit/admin", None, "admin"),
    ("GET", "/api/v1/testkit/verified", None, "verified"),
    ("GET", "/api/v1/testkit/user", None, "user"),
]


def test_authorization_matrix(acct):
    target = register(acct, "target")["user"]["id"]
    who = {"anonymous": None}
    for name, roles, verified in (("viewer", ["viewer"], False),
                                  ("streamer", ["viewer", "streamer"], False),
                                  ("moderator", ["viewer", "moderator"], True),
                                  ("admin", ["viewer", "admin"], True),
                                  ("disabled", ["viewer", "admin"], True)):
        reg = register(acct, "m_" + name)
        admin_patch(acct, reg["user"]["id"], roles=roles, verified=verified)
        who[name] = reg["access_token"]
    admin_patch(acct, acct.http("GET", "/api/v1/admin/users?q=m_disabled", token=api_token())
                .json()["users"][0]["id"], disabled=True)
    for method, path, body, need in ROUTES:
        for name, tok in who.items():
            r = acct.http(method, path.format(target=target), body=body, token=tok)
            if name == "anonymous":
                problem(r, 401, "unauthorized")
            elif name == "disabled":
                problem(r, 401, "account_disabled")
            elif need == "admin" and name != "admin":
                problem(r, 403, "forbidden")
            elif need == "verified" and name not in ("moderator", "admin"):
                problem(r, 403, "verification_required")
            else:
                assert r.status == 200, (method, path, name, r)


# ---- onaird --create-admin -----------------------------------------------------------------
def test_create_admin(backend, server_factory):
    s = server_factory(plugins={"testkit": {}}, core={"auth": auth_core(), "storage": backend})

    def create(name, pw, stdin=None, *extra):
        env = dict(os.environ)
        if pw is not None:
            env["ONAIR_ADMIN_PASSWORD"] = pw
        else:
            env.pop("ONAIR_ADMIN_PASSWORD", None)
        return subprocess.run([ONAIRD, "-c", s.config_path, "--create-admin", name, *extra],
                              input=stdin, capture_output=True, text=True, env=env, timeout=60)

    r = create("boss", "admin password 2024x")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "created admin boss" in r.stdout
    r = create("weak", "password123")
    assert r.returncode == 1 and "too common" in r.stderr
    r = create("boss2", None, "stdin password 9876\n", "--email", "Boss2@Example.com")
    assert r.returncode == 0, r.stderr + r.stdout
    s.start()
    r = login(s, "boss", "admin password 2024x")
    assert r.status == 200, r
    u = r.json()["user"]
    assert set(u["roles"]) == {"viewer", "streamer", "moderator", "admin"}
    assert u["email"] == "boss@localhost"
    assert s.http("GET", "/api/v1/admin/users", token=r.json()["access_token"]).status == 200
    assert login(s, "boss2@example.com", "stdin password 9876").status == 200
    # an existing user: made admin, new password
    register(s, "promoted")
    s.stop()
    r = create("promoted", "fresh admin pass 77")
    assert r.returncode == 0 and "now an admin" in r.stdout, r.stderr + r.stdout
    s.start()
    r = login(s, "promoted", "fresh admin pass 77")
    assert r.status == 200 and "admin" in r.json()["user"]["roles"]
