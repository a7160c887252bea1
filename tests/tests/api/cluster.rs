//! Two nodes on one PostgreSQL database: events, device changes and commands
//! cross from one node to the other through LISTEN/NOTIFY, revocations
//! through the store.

use std::time::Duration;

use ferrite_e2e::{
    Backend, TestApp,
    ws::{Op, close_code, next_item, run_once, until_device_changes_are_live},
};
use futures_util::StreamExt;
use serde_json::{Value, json};

const EVENTS: &str = "subscription($after: ID) { events(after: $after) { id payload } }";

async fn two_nodes() -> (TestApp, TestApp) {
    let a = TestApp::spawn(Backend::Postgres).await;
    let b = a.spawn_peer().await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_node_sees_events_published_on_both_in_id_order() {
    let (a, b) = two_nodes().await;
    let token = a.admin_token().await;
    let device = a.register_device(&token, "shared").await;
    let subscriber = a.ws_client(&token, None).await.unwrap();
    let mut stream = subscriber
        .subscribe(Op::new(EVENTS, json!({"after": "0"})))
        .await
        .unwrap();

    // Both nodes publish at the same time.
    let on_a = a.spawn_publisher(&token, &device, 500, 25, |n| json!(n));
    let on_b = b.spawn_publisher(&token, &device, 500, 25, |n| json!(10_000 + n));
    on_a.await.unwrap();
    on_b.await.unwrap();

    let mut ids = Vec::new();
    let mut payloads = Vec::new();
    for _ in 0..1000 {
        let item = next_item(&mut stream).await;
        ids.push(
            item["data"]["events"]["id"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap(),
        );
        payloads.push(item["data"]["events"]["payload"].as_i64().unwrap());
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids arrive in increasing order"
    );
    payloads.sort_unstable();
    let expected: Vec<i64> = (0..500).chain(10_000..10_500).collect();
    assert_eq!(payloads, expected, "every event from both nodes, once");
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(extra.is_err(), "a duplicate arrived: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_changes_cross_nodes() {
    let (a, b) = two_nodes().await;
    let token = a.admin_token().await;
    let watcher = b.ws_client(&token, None).await.unwrap();
    let mut changes = watcher
        .subscribe(Op::new(
            "subscription { deviceChanged { kind device { externalId status } } }",
            json!({}),
        ))
        .await
        .unwrap();
    until_device_changes_are_live(&b, &token, &mut changes).await;
    let gateway = a.ws_client(&token, Some("gw-a")).await.unwrap();
    run_once(
        &gateway,
        "mutation { registerDevice(input: {externalId: \"lamp\"}) { id } }",
        json!({}),
    )
    .await;
    let registered = next_item(&mut changes).await;
    assert_eq!(
        registered["data"]["deviceChanged"],
        json!({"kind": "REGISTERED", "device": {"externalId": "lamp", "status": "ONLINE"}})
    );
    gateway.close(1000, "bye").await;
    let offline = next_item(&mut changes).await;
    assert_eq!(
        offline["data"]["deviceChanged"],
        json!({"kind": "STATUS", "device": {"externalId": "lamp", "status": "OFFLINE"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_on_one_node_reaches_the_gateway_on_the_other() {
    let (a, b) = two_nodes().await;
    let token = a.admin_token().await;
    let gateway = a.ws_client(&token, Some("gw-a")).await.unwrap();
    let registered = run_once(
        &gateway,
        "mutation { registerDevice(input: {externalId: \"relay\"}) { id } }",
        json!({}),
    )
    .await;
    let device = registered["data"]["registerDevice"]["id"].clone();
    let mut inbox = gateway
        .subscribe(Op::new(
            "subscription { commands { id service } }",
            json!({}),
        ))
        .await
        .unwrap();

    // Even if the subscription starts after the command is sent, the
    // command is delivered: open commands come first.
    let sent = b
        .gql(
            Some(&token),
            "mutation($d: ID!) { sendCommand(input: {deviceId: $d, service: \"toggle\"}) { id } }",
            json!({"d": device}),
        )
        .await;
    let id = sent.data()["sendCommand"]["id"].clone();
    let watcher = b.ws_client(&token, None).await.unwrap();
    let mut updates = watcher
        .subscribe(Op::new(
            "subscription($id: ID!) { commandUpdated(id: $id) { status } }",
            json!({"id": id}),
        ))
        .await
        .unwrap();

    let received = next_item(&mut inbox).await;
    assert_eq!(received["data"]["commands"]["id"], id);
    let answer = run_once(
        &gateway,
        "mutation($id: ID!) { respondCommand(id: $id, success: true, result: {on: true}) { status } }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(
        answer["data"]["respondCommand"]["status"], "SUCCEEDED",
        "{answer}"
    );
    let mut last = Value::Null;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .unwrap()
    {
        last = item.unwrap()["data"]["commandUpdated"]["status"].clone();
    }
    assert_eq!(last, "SUCCEEDED", "node b saw the answer given on node a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_closes_the_sockets_on_the_other() {
    let (a, b) = two_nodes().await;
    let alice = a.create_member("alice").await;
    let (key, key_id) = a.create_api_key_with_id(&alice, "WRITE").await;
    let mut on_b = b.raw_session(&key, None).await;
    let mut alice_on_b = b.raw_session(&alice, None).await;
    let admin = a.admin_token().await;
    let revoked = a
        .gql(
            Some(&admin),
            "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
            json!({"id": key_id}),
        )
        .await;
    assert!(revoked.data()["revokeApiKey"]["revokedAt"].is_string());
    assert_eq!(close_code(&mut on_b).await, Some(4403));
    // Her session is another credential: its socket stays until her
    // password is reset (on node A).
    let users = a
        .gql(Some(&admin), "{ users { id username } }", json!({}))
        .await;
    let alice_id = users.data()["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "alice")
        .unwrap()["id"]
        .clone();
    a.gql(
        Some(&admin),
        "mutation($id: ID!) { setUserPassword(id: $id, newPassword: \"reset on node a\") }",
        json!({"id": alice_id}),
    )
    .await
    .data();
    assert_eq!(close_code(&mut alice_on_b).await, Some(4403));
}
