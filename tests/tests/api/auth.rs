//! Logging in, tokens, API keys, permissions and tenant isolation of users.

use ferrite_e2e::{
    ADMIN_PASSWORD, Backend, JWT_SECRET, MEMBER_PASSWORD, TestApp, on_both_backends,
};
use serde_json::json;

on_both_backends!(
    wrong_password_and_unknown_user_are_unauthenticated_alike,
    expired_forged_and_garbage_jwts_are_rejected,
    refresh_rotates_and_a_replayed_token_revokes_the_session,
    logout_ends_the_session,
    a_revoked_api_key_stops_working,
    a_read_key_cannot_mutate,
    a_members_keys_are_capped_at_write,
    only_an_admin_manages_users,
    an_admin_resets_passwords_and_roles_but_keeps_one_admin,
    change_password_needs_the_current_one_and_ends_other_sessions,
    repeated_failed_logins_are_rate_limited,
    me_describes_the_caller,
    data_needs_a_token_but_the_schema_does_not,
);

async fn wrong_password_and_unknown_user_are_unauthenticated_alike(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let login =
        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }";

    let wrong = app
        .gql(None, login, json!({"u": "admin", "p": "not the password"}))
        .await;
    let unknown = app
        .gql(None, login, json!({"u": "nobody", "p": "whatever1"}))
        .await;

    assert_eq!(wrong.error_code(), "UNAUTHENTICATED");
    assert_eq!(unknown.error_code(), "UNAUTHENTICATED");
    assert_eq!(wrong.error_message(), unknown.error_message());
    assert!(wrong.body["data"].is_null());
    // The right password still works: nothing was changed by the failures.
    app.login("admin", ADMIN_PASSWORD).await;
}

fn sign(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn expired_forged_and_garbage_jwts_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let me = app
        .gql(Some(&admin), "{ me { user { id } } }", json!({}))
        .await;
    let admin_id = me.data()["me"]["user"]["id"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().timestamp();

    let expired = sign(
        json!({"sub": admin_id, "iss": "ferrite", "iat": now - 7200, "exp": now - 3600}),
        JWT_SECRET,
    );
    let forged = sign(
        json!({"sub": admin_id, "iss": "ferrite", "iat": now, "exp": now + 600}),
        "someone else's secret, 32 bytes long",
    );
    let from_the_future = sign(
        json!({"sub": admin_id, "iss": "ferrite", "iat": now + 3600, "exp": now + 7200}),
        JWT_SECRET,
    );
    let no_issuer = sign(
        json!({"sub": admin_id, "iat": now, "exp": now + 600}),
        JWT_SECRET,
    );
    let unknown_user = sign(
        json!({"sub": uuid::Uuid::new_v4().to_string(), "iss": "ferrite", "iat": now, "exp": now + 600}),
        JWT_SECRET,
    );
    // alg=none with no signature.
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64_url(
            &json!({"sub": admin_id, "iss": "ferrite", "iat": now, "exp": now + 600}).to_string()
        )
    );

    for token in [
        expired.as_str(),
        forged.as_str(),
        from_the_future.as_str(),
        no_issuer.as_str(),
        unknown_user.as_str(),
        unsigned.as_str(),
        "garbage",
        "a.b.c",
    ] {
        let response = app
            .gql(Some(token), "{ me { permission } }", json!({}))
            .await;
        assert_eq!(response.status, 401, "token {token}: {:?}", response.body);
        assert_eq!(response.error_code(), "UNAUTHENTICATED", "token {token}");
    }
    let expired_answer = app
        .gql(Some(&expired), "{ me { permission } }", json!({}))
        .await;
    assert!(expired_answer.error_message().contains("expired"));

    // On a WebSocket the close reason says the same: expired (refresh and
    // reconnect) apart from not valid (stop).
    for (token, expected) in [
        (expired.as_str(), "Forbidden: the access token has expired"),
        (forged.as_str(), "Forbidden: the access token is not valid"),
    ] {
        let mut socket = app.raw_socket("graphql-transport-ws").await;
        ferrite_e2e::ws::send_json(
            &mut socket,
            json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
        )
        .await;
        let closed = ferrite_e2e::ws::close_frame(&mut socket).await;
        assert_eq!(closed, Some((4403, expected.to_owned())));
    }

    // A malformed Authorization header is refused too.
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .body(json!({"query": "{ me { permission } }"}).to_string())
        .send()
        .await
        .unwrap();
    let response = TestApp::read(response).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
}

fn base64_url(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

const LOGIN_FULL: &str = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken refreshToken expiresAt user { username } } }";
const REFRESH: &str =
    "mutation($t: String!) { refresh(refreshToken: $t) { accessToken refreshToken } }";

async fn refresh_rotates_and_a_replayed_token_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let login = app
        .gql(None, LOGIN_FULL, json!({"u": "admin", "p": ADMIN_PASSWORD}))
        .await;
    let first = login.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let rotated = app.gql(None, REFRESH, json!({"t": first})).await;
    let second = rotated.data()["refresh"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let access = rotated.data()["refresh"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first, second);
    app.gql(Some(&access), "{ me { permission } }", json!({}))
        .await
        .data();

    // The spent token is refused, and presenting it revokes its successor.
    let replay = app.gql(None, REFRESH, json!({"t": first})).await;
    assert_eq!(replay.error_code(), "UNAUTHENTICATED");
    let successor = app.gql(None, REFRESH, json!({"t": second})).await;
    assert_eq!(successor.error_code(), "UNAUTHENTICATED");

    let garbage = app.gql(None, REFRESH, json!({"t": "not-a-token"})).await;
    assert_eq!(garbage.error_code(), "UNAUTHENTICATED");
}

async fn logout_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let login = app
        .gql(None, LOGIN_FULL, json!({"u": "admin", "p": ADMIN_PASSWORD}))
        .await;
    let refresh = login.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let logout = "mutation($t: String!) { logout(refreshToken: $t) }";

    assert_eq!(
        app.gql(None, logout, json!({"t": refresh})).await.data()["logout"],
        true
    );
    assert_eq!(
        app.gql(None, logout, json!({"t": refresh})).await.data()["logout"],
        false
    );
    let after = app.gql(None, REFRESH, json!({"t": refresh})).await;
    assert_eq!(after.error_code(), "UNAUTHENTICATED");
}

async fn a_revoked_api_key_stops_working(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let created = app
        .gql(
            Some(&admin),
            "mutation { createApiKey(name: \"gateway\", permission: WRITE) { secret apiKey { id prefix } } }",
            json!({}),
        )
        .await;
    let secret = created.data()["createApiKey"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_id = created.data()["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("frt_"));
    assert!(
        secret.starts_with(
            created.data()["createApiKey"]["apiKey"]["prefix"]
                .as_str()
                .unwrap()
        )
    );
    let device = app.register_device(&secret, "sensor-1").await;

    let revoked = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
            json!({"id": key_id}),
        )
        .await;
    assert!(revoked.data()["revokeApiKey"]["revokedAt"].is_string());

    let refused = app
        .gql(
            Some(&secret),
            "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
            json!({"i": {"deviceId": device, "service": "t", "payload": 1}}),
        )
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.error_code(), "UNAUTHENTICATED");
    assert_eq!(app.event_count(&admin).await, 0);

    // Listing keys never shows secrets.
    let keys = app
        .gql(
            Some(&admin),
            "{ apiKeys { id name prefix revokedAt } }",
            json!({}),
        )
        .await;
    assert!(!keys.body.to_string().contains(&secret));
    let unknown = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
            json!({"id": uuid::Uuid::new_v4().to_string()}),
        )
        .await;
    assert_eq!(unknown.error_code(), "NOT_FOUND");
}

async fn a_read_key_cannot_mutate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "sensor-1").await;
    let reader = app.create_api_key(&admin, "READ").await;

    // Reading works.
    app.gql(Some(&reader), "{ devices { totalCount } }", json!({}))
        .await
        .data();
    // Every kind of write is refused.
    let attempts = [
        (
            "mutation { registerDevice(input: {externalId: \"x\"}) { id } }",
            json!({}),
        ),
        (
            "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
            json!({"i": {"deviceId": device, "service": "t", "payload": 1}}),
        ),
        (
            "mutation($id: ID!) { deleteDevice(id: $id) }",
            json!({"id": device}),
        ),
        (
            "mutation($id: ID!) { sendCommand(input: {deviceId: $id, service: \"set\"}) { id } }",
            json!({"id": device}),
        ),
        (
            "mutation { createApiKey(name: \"k\", permission: READ) { secret } }",
            json!({}),
        ),
    ];
    for (query, variables) in attempts {
        let response = app.gql(Some(&reader), query, variables).await;
        assert_eq!(response.error_code(), "FORBIDDEN", "{query}");
    }
    assert_eq!(app.device_count(&admin).await, 1);
    assert_eq!(app.event_count(&admin).await, 0);
}

async fn a_members_keys_are_capped_at_write(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let member = app.create_member("alice").await;
    let admin_key = app
        .gql(
            Some(&member),
            "mutation { createApiKey(name: \"k\", permission: ADMIN) { secret } }",
            json!({}),
        )
        .await;
    assert_eq!(admin_key.error_code(), "FORBIDDEN");
    let write_key = app.create_api_key(&member, "WRITE").await;
    // A WRITE key cannot mint keys.
    let minted = app
        .gql(
            Some(&write_key),
            "mutation { createApiKey(name: \"k\", permission: READ) { secret } }",
            json!({}),
        )
        .await;
    assert_eq!(minted.error_code(), "FORBIDDEN");
    let me = app
        .gql(
            Some(&write_key),
            "{ me { permission credential } }",
            json!({}),
        )
        .await;
    assert_eq!(
        me.data()["me"],
        json!({"permission": "WRITE", "credential": "API_KEY"})
    );
}

async fn only_an_admin_manages_users(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let member = app.create_member("alice").await;
    let create = "mutation($u: String!) { createUser(input: {username: $u, password: \"long enough\"}) { id } }";

    let refused = app
        .gql(Some(&member), create, json!({"u": "mallory"}))
        .await;
    assert_eq!(refused.error_code(), "FORBIDDEN");
    let listing = app
        .gql(Some(&member), "{ users { username } }", json!({}))
        .await;
    assert_eq!(listing.error_code(), "FORBIDDEN");

    let admin = app.admin_token().await;
    let duplicate = app.gql(Some(&admin), create, json!({"u": "alice"})).await;
    assert_eq!(duplicate.error_code(), "CONFLICT");
    for bad in ["ab", "with space", &"x".repeat(65), "émile"] {
        let response = app.gql(Some(&admin), create, json!({"u": bad})).await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{bad}");
    }
    let short = app
        .gql(
            Some(&admin),
            "mutation { createUser(input: {username: \"bob\", password: \"short\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(short.error_code(), "BAD_USER_INPUT");
    let users = app
        .gql(Some(&admin), "{ users { username role } }", json!({}))
        .await;
    assert_eq!(
        users.data()["users"],
        json!([{"username": "admin", "role": "ADMIN"}, {"username": "alice", "role": "MEMBER"}])
    );
}

async fn an_admin_resets_passwords_and_roles_but_keeps_one_admin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let member = app.create_member("alice").await;
    let admin = app.admin_token().await;
    let users = app
        .gql(Some(&admin), "{ users { id username } }", json!({}))
        .await;
    let id_of = |name: &str| {
        users.data()["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (alice, admin_id) = (id_of("alice"), id_of("admin"));
    let reset = "mutation($id: ID!, $p: String!) { setUserPassword(id: $id, newPassword: $p) }";
    let role = "mutation($id: ID!, $r: Role!) { setUserRole(id: $id, role: $r) { username role } }";
    let alices_session = app
        .gql(
            None,
            LOGIN_FULL,
            json!({"u": "alice", "p": MEMBER_PASSWORD}),
        )
        .await;
    let alices_refresh = alices_session.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();

    // A member may do neither, not even to herself.
    for (query, vars) in [
        (reset, json!({"id": alice, "p": "a brand new one"})),
        (role, json!({"id": alice, "r": "ADMIN"})),
    ] {
        let refused = app.gql(Some(&member), query, vars).await;
        assert_eq!(refused.error_code(), "FORBIDDEN");
    }
    // Bad input is refused before anything changes.
    let short = app
        .gql(Some(&admin), reset, json!({"id": alice, "p": "short"}))
        .await;
    assert_eq!(short.error_code(), "BAD_USER_INPUT");
    let garbage = app
        .gql(
            Some(&admin),
            reset,
            json!({"id": "x".repeat(10_000), "p": "long enough"}),
        )
        .await;
    assert_eq!(garbage.error_code(), "BAD_USER_INPUT");
    let unknown = app
        .gql(
            Some(&admin),
            role,
            json!({"id": uuid::Uuid::nil().to_string(), "r": "ADMIN"}),
        )
        .await;
    assert_eq!(unknown.error_code(), "NOT_FOUND");
    app.login("alice", MEMBER_PASSWORD).await;

    // The reset: the new password works, the old one and her sessions do not.
    let done = app
        .gql(
            Some(&admin),
            reset,
            json!({"id": alice, "p": "reset by admin"}),
        )
        .await;
    assert_eq!(done.data()["setUserPassword"], true);
    app.login("alice", "reset by admin").await;
    let old = app
        .gql(
            None,
            LOGIN_FULL,
            json!({"u": "alice", "p": MEMBER_PASSWORD}),
        )
        .await;
    assert_eq!(old.error_code(), "UNAUTHENTICATED");
    let replayed = app.gql(None, REFRESH, json!({"t": alices_refresh})).await;
    assert_eq!(replayed.error_code(), "UNAUTHENTICATED");

    // The only administrator cannot demote itself.
    let last = app
        .gql(Some(&admin), role, json!({"id": admin_id, "r": "MEMBER"}))
        .await;
    assert_eq!(last.error_code(), "CONFLICT");
    // Promoted, alice manages users at once with the token she already has.
    let alice_token = app.login("alice", "reset by admin").await;
    let promoted = app
        .gql(Some(&admin), role, json!({"id": alice, "r": "ADMIN"}))
        .await;
    assert_eq!(
        promoted.data()["setUserRole"],
        json!({"username": "alice", "role": "ADMIN"})
    );
    let listing = app
        .gql(Some(&alice_token), "{ users { username } }", json!({}))
        .await;
    assert_eq!(listing.data()["users"].as_array().unwrap().len(), 2);
    // Now there are two: alice demotes admin, and is then the last one.
    let demoted = app
        .gql(
            Some(&alice_token),
            role,
            json!({"id": admin_id, "r": "MEMBER"}),
        )
        .await;
    assert_eq!(demoted.data()["setUserRole"]["role"], "MEMBER");
    let refused = app
        .gql(Some(&admin), "{ users { username } }", json!({}))
        .await;
    assert_eq!(refused.error_code(), "FORBIDDEN");
    let alone = app
        .gql(
            Some(&alice_token),
            role,
            json!({"id": alice, "r": "MEMBER"}),
        )
        .await;
    assert_eq!(alone.error_code(), "CONFLICT");
}

async fn change_password_needs_the_current_one_and_ends_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_member("alice").await;
    let login = app
        .gql(
            None,
            LOGIN_FULL,
            json!({"u": "alice", "p": MEMBER_PASSWORD}),
        )
        .await;
    let access = login.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh = login.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let change = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";

    let wrong = app
        .gql(
            Some(&access),
            change,
            json!({"c": "not it at all", "n": "a new password"}),
        )
        .await;
    assert_eq!(wrong.error_code(), "FORBIDDEN");
    let too_short = app
        .gql(
            Some(&access),
            change,
            json!({"c": MEMBER_PASSWORD, "n": "short"}),
        )
        .await;
    assert_eq!(too_short.error_code(), "BAD_USER_INPUT");
    app.login("alice", MEMBER_PASSWORD).await;

    let changed = app
        .gql(
            Some(&access),
            change,
            json!({"c": MEMBER_PASSWORD, "n": "a new password"}),
        )
        .await;
    assert_eq!(changed.data()["changePassword"], true);
    assert_eq!(
        app.gql(None, REFRESH, json!({"t": refresh}))
            .await
            .error_code(),
        "UNAUTHENTICATED"
    );
    app.login("alice", "a new password").await;
}

async fn repeated_failed_logins_are_rate_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.limits.login_attempts = 3).await;
    app.create_member("alice").await;
    let login =
        "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken } }";
    for _ in 0..3 {
        let response = app.gql(None, login, json!({"p": "wrong password"})).await;
        assert_eq!(response.error_code(), "UNAUTHENTICATED");
    }
    // Even the right password is refused until the window passes.
    let limited = app.gql(None, login, json!({"p": ADMIN_PASSWORD})).await;
    assert_eq!(limited.error_code(), "RATE_LIMITED");
    assert!(
        limited.body["errors"][0]["extensions"]["retryAfterSeconds"]
            .as_u64()
            .unwrap()
            > 0
    );
    // Other usernames are not affected.
    app.login("alice", MEMBER_PASSWORD).await;
}

async fn me_describes_the_caller(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let me = app
        .gql(
            Some(&admin),
            "{ me { permission credential apiKeyId user { username role } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        me.data()["me"],
        json!({"permission": "ADMIN", "credential": "SESSION", "apiKeyId": null, "user": {"username": "admin", "role": "ADMIN"}})
    );
}

async fn data_needs_a_token_but_the_schema_does_not(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for query in [
        "{ me { permission } }",
        "{ devices { totalCount } }",
        "{ events { totalCount } }",
        "{ users { id } }",
    ] {
        let response = app.gql(None, query, json!({})).await;
        assert_eq!(response.error_code(), "UNAUTHENTICATED", "{query}");
    }
    let mutation = app
        .gql(
            None,
            "mutation { registerDevice(input: {externalId: \"x\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(mutation.error_code(), "UNAUTHENTICATED");
    let typename = app.gql(None, "{ __typename }", json!({})).await;
    assert_eq!(typename.data()["__typename"], "Query");
    let admin = app.admin_token().await;
    assert_eq!(app.device_count(&admin).await, 0);
}
