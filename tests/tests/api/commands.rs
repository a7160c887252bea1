//! Commands over HTTP: queued PENDING, answered once (by the gateway session
//! hosting the device), expired when unanswered. Delivery to gateways is
//! tested in `gateways`.

use std::time::Duration;

use ferrite_e2e::{Backend, TestApp, eventually, on_both_backends, ws::run_once};
use serde_json::{Value, json};

on_both_backends!(
    a_command_is_queued_and_answered_once,
    an_unanswered_command_expires,
    command_input_is_checked,
);

const SEND: &str = "mutation($i: SendCommandInput!) { sendCommand(input: $i) { id status service payload expiresAt result } }";
const RESPOND: &str = "mutation($id: ID!, $ok: Boolean!, $r: JSON) { respondCommand(id: $id, success: $ok, result: $r) { id status result respondedAt } }";

/// A gateway session that registered `external_id`; returns the client and
/// the device id.
async fn gateway(
    app: &TestApp,
    token: &str,
    external_id: &str,
) -> (graphql_ws_client::Client, String) {
    let client = app
        .ws_client(token, Some("gateway-1"))
        .await
        .expect("the gateway connects");
    let registered = run_once(
        &client,
        "mutation($e: String!) { registerDevice(input: {externalId: $e}) { id status } }",
        json!({"e": external_id}),
    )
    .await;
    assert_eq!(
        registered["data"]["registerDevice"]["status"], "ONLINE",
        "{registered}"
    );
    let id = registered["data"]["registerDevice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (client, id)
}

async fn respond(client: &graphql_ws_client::Client, id: &Value, ok: bool, result: Value) -> Value {
    run_once(client, RESPOND, json!({"id": id, "ok": ok, "r": result})).await
}

async fn a_command_is_queued_and_answered_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let (gateway, device) = gateway(&app, &admin, "relay").await;
    let sent = app
        .gql(
            Some(&admin),
            SEND,
            json!({"i": {"deviceId": device, "service": "set", "payload": {"on": true}}}),
        )
        .await;
    let command = &sent.data()["sendCommand"];
    assert_eq!(command["status"], "PENDING");
    assert_eq!(command["payload"], json!({"on": true}));
    let id = command["id"].clone();

    // Only the hosting session may answer: not the admin over HTTP.
    let over_http = app
        .gql(
            Some(&admin),
            RESPOND,
            json!({"id": id, "ok": true, "r": null}),
        )
        .await;
    assert_eq!(over_http.error_code(), "FORBIDDEN");

    let answered = respond(&gateway, &id, true, json!({"state": "on"})).await;
    assert_eq!(
        answered["data"]["respondCommand"]["status"], "SUCCEEDED",
        "{answered}"
    );
    assert_eq!(
        answered["data"]["respondCommand"]["result"],
        json!({"state": "on"})
    );

    let again = respond(&gateway, &id, false, Value::Null).await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "CONFLICT");
    let read = app
        .gql(
            Some(&admin),
            "query($id: ID!) { command(id: $id) { status result } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(
        read.data()["command"],
        json!({"status": "SUCCEEDED", "result": {"state": "on"}})
    );

    // A failure is recorded as such; listing filters by status, newest first.
    let second = app
        .gql(
            Some(&admin),
            SEND,
            json!({"i": {"deviceId": device, "service": "reboot"}}),
        )
        .await;
    let second_id = second.data()["sendCommand"]["id"].clone();
    let failed = respond(&gateway, &second_id, false, json!("busy")).await;
    assert_eq!(
        failed["data"]["respondCommand"]["status"], "FAILED",
        "{failed}"
    );
    let listed = app
        .gql(Some(&admin), "{ commands { totalCount nodes { service status } } failed: commands(filter: {statuses: [FAILED]}) { totalCount } }", json!({}))
        .await;
    assert_eq!(
        listed.data()["commands"],
        json!({"totalCount": 2, "nodes": [{"service": "reboot", "status": "FAILED"}, {"service": "set", "status": "SUCCEEDED"}]})
    );
    assert_eq!(listed.data()["failed"]["totalCount"], 1);

    // Another member cannot see or answer it.
    let mallory = app.create_member("mallory").await;
    let foreign = app
        .gql(
            Some(&mallory),
            RESPOND,
            json!({"id": id, "ok": true, "r": null}),
        )
        .await;
    assert_eq!(foreign.error_code(), "NOT_FOUND");
    let foreign_read = app
        .gql(
            Some(&mallory),
            "query($id: ID!) { command(id: $id) { id } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(foreign_read.error_code(), "NOT_FOUND");
}

async fn an_unanswered_command_expires(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let (gateway, device) = gateway(&app, &admin, "sleepy").await;
    let sent = app
        .gql(
            Some(&admin),
            SEND,
            json!({"i": {"deviceId": device, "service": "wake", "timeoutSeconds": 1}}),
        )
        .await;
    let id = sent.data()["sendCommand"]["id"].clone();

    // The expiry sweeper runs every second; poll rather than assume a timing.
    eventually("the command to expire", Duration::from_secs(20), || async {
        let read = app
            .gql(
                Some(&admin),
                "query($id: ID!) { command(id: $id) { status } }",
                json!({"id": id}),
            )
            .await;
        (read.data()["command"]["status"] == "EXPIRED").then_some(())
    })
    .await;
    let late = respond(&gateway, &id, true, Value::Null).await;
    assert_eq!(late["errors"][0]["extensions"]["code"], "CONFLICT");
}

async fn command_input_is_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "d").await;
    for input in [
        json!({"deviceId": device, "service": "s", "timeoutSeconds": 0}),
        json!({"deviceId": device, "service": "s", "timeoutSeconds": 999_999_999}),
        json!({"deviceId": device, "service": ""}),
        json!({"deviceId": "nope", "service": "s"}),
    ] {
        let response = app.gql(Some(&admin), SEND, json!({"i": input})).await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{input}");
    }
    let unknown = app
        .gql(
            Some(&admin),
            SEND,
            json!({"i": {"deviceId": uuid::Uuid::new_v4().to_string(), "service": "s"}}),
        )
        .await;
    assert_eq!(unknown.error_code(), "NOT_FOUND");
    let respond_unknown = app
        .gql(
            Some(&admin),
            RESPOND,
            json!({"id": uuid::Uuid::new_v4().to_string(), "ok": true, "r": null}),
        )
        .await;
    assert_eq!(respond_unknown.error_code(), "NOT_FOUND");
    let listed = app
        .gql(Some(&admin), "{ commands { totalCount } }", json!({}))
        .await;
    assert_eq!(listed.data()["commands"]["totalCount"], 0);
}
