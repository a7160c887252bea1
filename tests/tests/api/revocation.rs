//! Revocation that reaches open sockets, whoever revoked: a password reset
//! or change, a role change, a disabled or deleted user, a key revoked from
//! the CLI of another process. Each closes exactly the sockets it should
//! (4403; 1012 "reconnect" for a role change), and the credentials stop
//! working over HTTP too.

use ferrite_e2e::{
    ADMIN_PASSWORD, Backend, MEMBER_PASSWORD, TestApp, on_both_backends,
    process::{ferrite_cli, ferrite_cli_fails},
    ws::{
        Op, RawSocket, close_code, next_item, next_json, send_json, until_device_changes_are_live,
    },
};
use serde_json::{Value, json};

on_both_backends!(
    a_password_reset_closes_the_users_session_sockets_but_not_its_keys,
    a_role_change_tells_every_socket_of_the_user_to_reconnect,
    a_disabled_user_has_no_working_credential_until_enabled,
    a_deleted_user_takes_its_devices_and_sockets_with_it,
    the_cli_revokes_on_a_running_server,
);

const LOGIN: &str = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken refreshToken } }";
const REFRESH: &str = "mutation($t: String!) { refresh(refreshToken: $t) { accessToken } }";

/// The id of the user named `username`.
async fn user_id(app: &TestApp, username: &str) -> String {
    let admin = app.admin_token().await;
    let users = app
        .gql(Some(&admin), "{ users { id username } }", json!({}))
        .await;
    users.data()["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == username)
        .expect("the user exists")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Whether the socket still answers a query (`me`) as the same principal.
async fn still_answers(socket: &mut RawSocket) -> Value {
    send_json(
        socket,
        json!({"type": "subscribe", "id": "me", "payload": {"query": "{ me { user { username role } permission } }"}}),
    )
    .await;
    let answer = next_json(socket).await;
    assert_eq!(answer["type"], "next", "{answer}");
    assert_eq!(next_json(socket).await["type"], "complete");
    answer["payload"]["data"]["me"].clone()
}

async fn admin_mutation(app: &TestApp, query: &str, id: &str) -> ferrite_e2e::GqlResponse {
    let admin = app.admin_token().await;
    app.gql(Some(&admin), query, json!({"id": id})).await
}

async fn a_password_reset_closes_the_users_session_sockets_but_not_its_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let access = app.create_member("alice").await;
    let alice = user_id(&app, "alice").await;
    let key = app.create_api_key(&access, "WRITE").await;
    let mut by_session = app.raw_session(&access, None).await;
    let mut by_key = app.raw_session(&key, None).await;
    let admin = app.admin_token().await;
    let mut bystander = app.raw_session(&admin, None).await;

    let reset = "mutation($id: ID!, $p: String!) { setUserPassword(id: $id, newPassword: $p) }";
    let done = app
        .gql(
            Some(&admin),
            reset,
            json!({"id": alice, "p": "reset by admin"}),
        )
        .await;
    assert_eq!(done.data()["setUserPassword"], true);

    assert_eq!(close_code(&mut by_session).await, Some(4403));
    // The access token is dead at once, not when it expires.
    let stale = app
        .gql(Some(&access), "{ me { permission } }", json!({}))
        .await;
    assert_eq!(stale.error_code(), "UNAUTHENTICATED");
    assert!(
        stale.error_message().contains("sign in again"),
        "{}",
        stale.error_message()
    );
    // Keys are separate credentials: they and their sockets carry on.
    assert_eq!(
        still_answers(&mut by_key).await["user"]["username"],
        "alice"
    );
    assert_eq!(
        still_answers(&mut bystander).await["user"]["username"],
        "admin"
    );
    let fresh = app.login("alice", "reset by admin").await;
    let mut again = app.raw_session(&fresh, None).await;
    assert_eq!(still_answers(&mut again).await["user"]["username"], "alice");

    // Changing one's own password does the same to one's own sessions.
    let change = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";
    let changed = app
        .gql(
            Some(&fresh),
            change,
            json!({"c": "reset by admin", "n": "changed by alice"}),
        )
        .await;
    assert_eq!(changed.data()["changePassword"], true);
    assert_eq!(close_code(&mut again).await, Some(4403));
    assert_eq!(still_answers(&mut by_key).await["permission"], "WRITE");
}

async fn a_role_change_tells_every_socket_of_the_user_to_reconnect(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let access = app.create_member("alice").await;
    let alice = user_id(&app, "alice").await;
    let key = app.create_api_key(&access, "WRITE").await;
    let mut by_session = app.raw_session(&access, None).await;
    let mut by_key = app.raw_session(&key, None).await;
    assert_eq!(
        still_answers(&mut by_session).await["user"]["role"],
        "MEMBER"
    );

    let role = "mutation($id: ID!) { setUserRole(id: $id, role: ADMIN) { role } }";
    assert_eq!(
        admin_mutation(&app, role, &alice).await.data()["setUserRole"]["role"],
        "ADMIN"
    );
    // Not "forbidden" (a gateway would stop): "reconnect".
    assert_eq!(close_code(&mut by_session).await, Some(1012));
    assert_eq!(close_code(&mut by_key).await, Some(1012));
    // Over HTTP the same token works, in the new role.
    let users = app
        .gql(Some(&access), "{ users { username } }", json!({}))
        .await;
    assert_eq!(users.data()["users"].as_array().unwrap().len(), 2);
    let mut reconnected = app.raw_session(&access, None).await;
    assert_eq!(
        still_answers(&mut reconnected).await["user"]["role"],
        "ADMIN"
    );
}

async fn a_disabled_user_has_no_working_credential_until_enabled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_member("alice").await;
    let alice = user_id(&app, "alice").await;
    let session = app
        .gql(None, LOGIN, json!({"u": "alice", "p": MEMBER_PASSWORD}))
        .await;
    let access = session.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh = session.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = app.create_api_key(&access, "WRITE").await;
    let device = app.register_device(&key, "alice-sensor").await;
    let mut by_session = app.raw_session(&access, None).await;
    let mut by_key = app.raw_session(&key, None).await;

    // A member may not disable anyone.
    let disable = "mutation($id: ID!) { disableUser(id: $id) { username disabledAt } }";
    let refused = app.gql(Some(&access), disable, json!({"id": alice})).await;
    assert_eq!(refused.error_code(), "FORBIDDEN");
    let disabled = admin_mutation(&app, disable, &alice).await;
    assert!(
        disabled.data()["disableUser"]["disabledAt"].is_string(),
        "{:?}",
        disabled.body
    );

    assert_eq!(close_code(&mut by_session).await, Some(4403));
    assert_eq!(close_code(&mut by_key).await, Some(4403));
    for token in [&access, &key] {
        let refused = app
            .gql(Some(token), "{ me { permission } }", json!({}))
            .await;
        assert_eq!(refused.error_code(), "UNAUTHENTICATED");
    }
    assert_eq!(
        app.gql(None, REFRESH, json!({"t": refresh}))
            .await
            .error_code(),
        "UNAUTHENTICATED"
    );
    // The right password gets a clear answer; a wrong one the usual one.
    let login = app
        .gql(None, LOGIN, json!({"u": "alice", "p": MEMBER_PASSWORD}))
        .await;
    assert_eq!(login.error_code(), "FORBIDDEN");
    assert!(
        login.error_message().contains("disabled"),
        "{}",
        login.error_message()
    );
    let wrong = app
        .gql(None, LOGIN, json!({"u": "alice", "p": "not her password"}))
        .await;
    assert_eq!(wrong.error_code(), "UNAUTHENTICATED");
    // The only administrator cannot be disabled.
    let admin_id = user_id(&app, "admin").await;
    assert_eq!(
        admin_mutation(&app, disable, &admin_id).await.error_code(),
        "CONFLICT"
    );

    // Enabled again: the key works again, the data is all there.
    let enable = "mutation($id: ID!) { enableUser(id: $id) { disabledAt } }";
    assert!(
        admin_mutation(&app, enable, &alice).await.data()["enableUser"]["disabledAt"].is_null()
    );
    let devices = app
        .gql(Some(&key), "{ devices { nodes { id } } }", json!({}))
        .await;
    assert_eq!(devices.data()["devices"]["nodes"][0]["id"], device.as_str());
    app.login("alice", MEMBER_PASSWORD).await;
}

async fn a_deleted_user_takes_its_devices_and_sockets_with_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let access = app.create_member("alice").await;
    let alice = user_id(&app, "alice").await;
    let key = app.create_api_key(&access, "WRITE").await;
    let device = app.register_device(&key, "alice-sensor").await;
    for n in 0..3 {
        app.publish(&key, &device, "count", json!(n)).await;
    }
    let admin = app.admin_token().await;
    let watcher = app.ws_client(&admin, None).await.unwrap();
    let mut changes = watcher
        .subscribe(Op::new(
            "subscription { deviceChanged { kind device { id externalId } } }",
            json!({}),
        ))
        .await
        .unwrap();
    until_device_changes_are_live(&app, &admin, &mut changes).await;
    let mut by_key = app.raw_session(&key, None).await;

    let delete = "mutation($id: ID!) { deleteUser(id: $id) { username } }";
    let refused = app.gql(Some(&access), delete, json!({"id": alice})).await;
    assert_eq!(refused.error_code(), "FORBIDDEN");
    let deleted = admin_mutation(&app, delete, &alice).await;
    assert_eq!(deleted.data()["deleteUser"]["username"], "alice");

    assert_eq!(close_code(&mut by_key).await, Some(4403));
    let change = loop {
        let change = next_item(&mut changes).await;
        if change["data"]["deviceChanged"]["device"]["id"] == device.as_str() {
            break change;
        }
    };
    assert_eq!(change["data"]["deviceChanged"]["kind"], "DELETED");
    let gone = app
        .gql(
            Some(&admin),
            "query($id: ID!) { device(id: $id) { id } }",
            json!({"id": device}),
        )
        .await;
    assert_eq!(gone.error_code(), "NOT_FOUND");
    // The probes have none: every event went with alice's device.
    assert_eq!(app.event_count(&admin).await, 0);
    for token in [&access, &key] {
        let refused = app
            .gql(Some(token), "{ me { permission } }", json!({}))
            .await;
        assert_eq!(refused.error_code(), "UNAUTHENTICATED");
    }
    let login = app
        .gql(None, LOGIN, json!({"u": "alice", "p": MEMBER_PASSWORD}))
        .await;
    assert_eq!(login.error_code(), "UNAUTHENTICATED");
    // The name is free again; the only administrator cannot be deleted.
    app.create_member("alice").await;
    let admin_id = user_id(&app, "admin").await;
    assert_eq!(
        admin_mutation(&app, delete, &admin_id).await.error_code(),
        "CONFLICT"
    );
    assert_eq!(
        admin_mutation(&app, delete, &uuid::Uuid::nil().to_string())
            .await
            .error_code(),
        "NOT_FOUND"
    );
}

/// The CLI runs in its own process: no bus reaches the server from there,
/// only the database.
async fn the_cli_revokes_on_a_running_server(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let access = app.create_member("alice").await;
    let (key, key_id) = app.create_api_key_with_id(&access, "WRITE").await;
    let other_key = app.create_api_key(&access, "READ").await;
    let mut by_key = app.raw_session(&key, None).await;
    let mut by_other_key = app.raw_session(&other_key, None).await;
    let mut by_session = app.raw_session(&access, None).await;
    let url = app.database_url.clone();

    let out = ferrite_cli(&url, &["apikey", "revoke", key_id.as_str().unwrap()], "").await;
    assert!(out.contains("revoked API key"), "{out}");
    assert_eq!(close_code(&mut by_key).await, Some(4403));
    assert_eq!(still_answers(&mut by_other_key).await["permission"], "READ");
    assert_eq!(
        still_answers(&mut by_session).await["user"]["username"],
        "alice"
    );

    ferrite_cli(
        &url,
        &["user", "passwd", "alice", "--password-stdin"],
        "set by the cli\n",
    )
    .await;
    assert_eq!(close_code(&mut by_session).await, Some(4403));
    assert_eq!(still_answers(&mut by_other_key).await["permission"], "READ");

    ferrite_cli(&url, &["user", "disable", "alice"], "").await;
    assert_eq!(close_code(&mut by_other_key).await, Some(4403));
    ferrite_cli(&url, &["user", "enable", "alice"], "").await;
    let fresh = app.login("alice", "set by the cli").await;
    let device = app.register_device(&fresh, "cli-sensor").await;
    // Deleting a user that owns devices needs saying so.
    let refused = ferrite_cli_fails(&url, &["user", "delete", "alice"]).await;
    assert!(refused.contains("--with-devices"), "{refused}");
    let mut last = app.raw_session(&fresh, None).await;
    let out = ferrite_cli(&url, &["user", "delete", "alice", "--with-devices"], "").await;
    assert!(out.contains("1 devices"), "{out}");
    assert_eq!(close_code(&mut last).await, Some(4403));
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let gone = app
        .gql(
            Some(&admin),
            "query($id: ID!) { device(id: $id) { id } }",
            json!({"id": device}),
        )
        .await;
    assert_eq!(gone.error_code(), "NOT_FOUND");
}
