//! Connector sessions: presence (ONLINE/OFFLINE with the session, keep-alive
//! timeout, takeover, restart), deviceChanged, and commands delivered to the
//! gateway hosting the device.

use std::time::{Duration, Instant};

use ferrite_e2e::{
    Backend, TestApp, eventually, on_both_backends,
    ws::{
        Op, close_code, next_item, next_json, run_once, send_json, until_device_changes_are_live,
    },
};
use futures_util::StreamExt;
use serde_json::{Value, json};

on_both_backends!(
    presence_follows_the_connector_session,
    the_status_history_records_every_change_in_order,
    a_late_close_of_an_old_session_does_not_mark_the_device_offline,
    a_silent_gateway_is_dropped_after_the_keepalive_timeout,
    devices_left_online_by_a_dead_node_go_offline_at_start,
    a_members_device_changes_stay_private,
    commands_are_delivered_answered_and_streamed,
    commands_queued_while_the_gateway_was_away_arrive_when_it_returns,
    only_the_hosting_session_may_answer,
    a_device_taken_over_takes_its_commands_along,
    an_unanswered_command_streams_expired,
);

const REGISTER: &str =
    "mutation($e: String!) { registerDevice(input: {externalId: $e}) { id status connectorId } }";
const CHANGES: &str =
    "subscription { deviceChanged { kind device { externalId status connectorId lastSeenAt } } }";
const COMMANDS: &str = "subscription { commands { id deviceId service payload status } }";
const SEND: &str = "mutation($d: ID!, $s: String!, $t: Int) { sendCommand(input: {deviceId: $d, service: $s, payload: {level: 3}, timeoutSeconds: $t}) { id status } }";
const RESPOND: &str = "mutation($id: ID!, $ok: Boolean!, $r: JSON) { respondCommand(id: $id, success: $ok, result: $r) { status result } }";

async fn register(client: &graphql_ws_client::Client, external_id: &str) -> String {
    let answer = run_once(client, REGISTER, json!({"e": external_id})).await;
    answer["data"]["registerDevice"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("registered: {answer}"))
        .to_owned()
}

async fn status_of(app: &TestApp, token: &str, device: &str) -> Value {
    app.gql(
        Some(token),
        "query($id: ID!) { device(id: $id) { status lastSeenAt connectorId } }",
        json!({"id": device}),
    )
    .await
    .data()["device"]
        .clone()
}

/// Polls until the device has `status`, for up to 20 s.
async fn wait_for_status(app: &TestApp, token: &str, device: &str, status: &str) -> Value {
    eventually(
        &format!("the device to become {status}"),
        Duration::from_secs(20),
        || async {
            let current = status_of(app, token, device).await;
            (current["status"] == status).then_some(current)
        },
    )
    .await
}

async fn presence_follows_the_connector_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let watcher = app.ws_client(&admin, None).await.unwrap();
    let mut changes = watcher
        .subscribe(Op::new(CHANGES, json!({})))
        .await
        .unwrap();
    until_device_changes_are_live(&app, &admin, &mut changes).await;

    let gateway = app.ws_client(&admin, Some("kitchen-pi")).await.unwrap();
    let device = register(&gateway, "thermo").await;
    let registered = next_item(&mut changes).await;
    assert_eq!(registered["data"]["deviceChanged"]["kind"], "REGISTERED");
    assert_eq!(
        registered["data"]["deviceChanged"]["device"]["status"],
        "ONLINE"
    );
    assert_eq!(
        registered["data"]["deviceChanged"]["device"]["connectorId"],
        "kitchen-pi"
    );

    gateway.close(1000, "bye").await;
    let offline = next_item(&mut changes).await;
    assert_eq!(offline["data"]["deviceChanged"]["kind"], "STATUS");
    assert_eq!(
        offline["data"]["deviceChanged"]["device"]["status"],
        "OFFLINE"
    );
    assert!(offline["data"]["deviceChanged"]["device"]["lastSeenAt"].is_string());
    let stored = status_of(&app, &admin, &device).await;
    assert_eq!(stored["status"], "OFFLINE");

    // Registering over HTTP does not make a device ONLINE.
    let http = app.register_device(&admin, "thermo").await;
    assert_eq!(http, device);
    assert_eq!(status_of(&app, &admin, &device).await["status"], "OFFLINE");
    let updated = next_item(&mut changes).await;
    assert_eq!(updated["data"]["deviceChanged"]["kind"], "UPDATED");
}

async fn the_status_history_records_every_change_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let member = app.create_member("mallory").await;
    let history = |since: Option<String>, first: i64| {
        let app = &app;
        let admin = admin.clone();
        async move {
            app.gql(
                Some(&admin),
                "query($s: DateTime, $f: Int!) { devices { nodes { statusHistory(since: $s, first: $f) { status connectorId at } } } }",
                json!({"s": since, "f": first}),
            )
            .await
        }
    };

    let first = app.ws_client(&admin, Some("pi-1")).await.unwrap();
    let device = register(&first, "meter").await;
    first.close(1000, "bye").await;
    wait_for_status(&app, &admin, &device, "OFFLINE").await;
    let second = app.ws_client(&admin, Some("pi-2")).await.unwrap();
    register(&second, "meter").await;
    // Registering again on the same session changes nothing.
    register(&second, "meter").await;
    let disconnected = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { disconnectDevice(id: $id) { status } }",
            json!({"id": device}),
        )
        .await;
    assert_eq!(
        disconnected.data()["disconnectDevice"]["status"],
        "DISCONNECTED"
    );
    second.close(1000, "bye").await;

    let all = history(None, 100).await;
    let changes = all.data()["devices"]["nodes"][0]["statusHistory"]
        .as_array()
        .unwrap()
        .clone();
    let seen: Vec<(&str, Option<&str>)> = changes
        .iter()
        .map(|c| (c["status"].as_str().unwrap(), c["connectorId"].as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("DISCONNECTED", None),
            ("ONLINE", Some("pi-2")),
            ("OFFLINE", Some("pi-1")),
            ("ONLINE", Some("pi-1")),
        ],
        "newest first: {changes:?}"
    );
    let times: Vec<chrono::DateTime<chrono::Utc>> = changes
        .iter()
        .map(|c| c["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // `since` the second ONLINE: it and what came after, plus the change
    // before it (the status at `since`).
    let since = changes[1]["at"].as_str().unwrap().to_owned();
    let recent = history(Some(since), 100).await;
    let recent = recent.data()["devices"]["nodes"][0]["statusHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(recent, ["DISCONNECTED", "ONLINE", "OFFLINE"]);
    assert_eq!(
        history(None, 2).await.data()["devices"]["nodes"][0]["statusHistory"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for bad in [0, -1, 501, i64::from(i32::MAX)] {
        assert_eq!(
            history(None, bad).await.error_code(),
            "BAD_USER_INPUT",
            "{bad}"
        );
    }
    // Another member cannot reach the device, so not its history either.
    let hidden = app
        .gql(
            Some(&member),
            "query($id: ID!) { device(id: $id) { statusHistory { status } } }",
            json!({"id": device}),
        )
        .await;
    assert_eq!(hidden.error_code(), "NOT_FOUND");
}

async fn a_late_close_of_an_old_session_does_not_mark_the_device_offline(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let old = app.ws_client(&admin, Some("gw")).await.unwrap();
    let device = register(&old, "lamp").await;
    // The gateway reconnected before its old socket was noticed as gone.
    let new = app.ws_client(&admin, Some("gw")).await.unwrap();
    assert_eq!(register(&new, "lamp").await, device);

    old.close(1000, "stale").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of(&app, &admin, &device).await["status"], "ONLINE");

    new.close(1000, "bye").await;
    wait_for_status(&app, &admin, &device, "OFFLINE").await;
}

async fn a_silent_gateway_is_dropped_after_the_keepalive_timeout(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.websocket.keepalive_seconds = 1;
        config.websocket.idle_timeout_seconds = 2;
    })
    .await;
    let admin = app.admin_token().await;
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {admin}"), "connectorId": "mute"}})).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send_json(&mut socket, json!({"type": "subscribe", "id": "1", "payload": {"query": REGISTER, "variables": {"e": "mute-device"}}})).await;
    let answer = next_json(&mut socket).await;
    let device = answer["payload"]["data"]["registerDevice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(status_of(&app, &admin, &device).await["status"], "ONLINE");

    // The gateway hangs: it stops reading, so it never answers the pings.
    let stopped_at = Instant::now();
    let went = wait_for_status(&app, &admin, &device, "OFFLINE").await;
    assert!(went["lastSeenAt"].is_string());
    assert!(
        stopped_at.elapsed() >= Duration::from_secs(1),
        "dropped before any ping went unanswered"
    );
    // The server closed the socket, with 1001 — unless the client's own
    // queued pong replies fail first on the dead connection, in which case
    // the read ends with an error instead of the close frame.
    let code = close_code(&mut socket).await;
    assert!(matches!(code, Some(1001) | None), "closed with {code:?}");
}

async fn devices_left_online_by_a_dead_node_go_offline_at_start(backend: Backend) {
    use ferrite_server::store::entity::{DeviceStatus, device};
    use sea_orm::{ActiveModelTrait, Database, EntityTrait, Set};
    let first = TestApp::spawn(backend).await;
    let admin = first.admin_token().await;
    let device = first.register_device(&admin, "orphan").await;
    // A node that crashed left the device ONLINE, bound to its session.
    let db = Database::connect(&first.database_url).await.unwrap();
    let row = device::Entity::find_by_id(uuid::Uuid::parse_str(&device).unwrap())
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    let mut row: device::ActiveModel = row.into();
    row.status = Set(DeviceStatus::Online);
    row.connector_id = Set(Some("gone".into()));
    row.session_id = Set(Some(uuid::Uuid::new_v4()));
    row.node_id = Set(Some(uuid::Uuid::new_v4()));
    row.update(&db).await.unwrap();
    db.close().await.unwrap();
    assert_eq!(status_of(&first, &admin, &device).await["status"], "ONLINE");

    // The next start is a new node: it finds no live node hosting the device.
    let second = first.restart().await;
    let admin = second.admin_token().await;
    let after = status_of(&second, &admin, &device).await;
    assert_eq!(after["status"], "OFFLINE", "{after}");
    assert!(after["lastSeenAt"].is_string());
}

async fn a_members_device_changes_stay_private(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.create_member("alice").await;
    let mallory = app.create_member("mallory").await;
    let spy = app.ws_client(&mallory, None).await.unwrap();
    let mut changes = spy.subscribe(Op::new(CHANGES, json!({}))).await.unwrap();
    until_device_changes_are_live(&app, &mallory, &mut changes).await;
    let gateway = app.ws_client(&alice, Some("alice-gw")).await.unwrap();
    register(&gateway, "door").await;
    gateway.close(1000, "bye").await;
    app.register_device(&mallory, "mine").await;
    let seen = next_item(&mut changes).await;
    assert_eq!(
        seen["data"]["deviceChanged"]["device"]["externalId"],
        "mine"
    );
    let more = tokio::time::timeout(Duration::from_millis(300), changes.next()).await;
    assert!(more.is_err(), "mallory saw more: {more:?}");
}

async fn commands_are_delivered_answered_and_streamed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let gateway = app.ws_client(&admin, Some("relay-gw")).await.unwrap();
    let device = register(&gateway, "relay").await;

    let sent = app
        .gql(
            Some(&admin),
            SEND,
            json!({"d": device, "s": "dim", "t": 60}),
        )
        .await;
    let id = sent.data()["sendCommand"]["id"].clone();
    // A watcher follows the command from its first state on.
    let watcher = app.ws_client(&admin, None).await.unwrap();
    let mut updates = watcher
        .subscribe(Op::new(
            "subscription($id: ID!) { commandUpdated(id: $id) { status result } }",
            json!({"id": id}),
        ))
        .await
        .unwrap();
    let first = next_item(&mut updates).await;
    assert_eq!(first["data"]["commandUpdated"]["status"], "PENDING");

    let mut inbox = gateway
        .subscribe(Op::new(COMMANDS, json!({})))
        .await
        .unwrap();
    let delivered = next_item(&mut inbox).await;
    assert_eq!(delivered["data"]["commands"]["id"], id);
    assert_eq!(delivered["data"]["commands"]["status"], "DELIVERED");
    assert_eq!(
        delivered["data"]["commands"]["payload"],
        json!({"level": 3})
    );
    let answer = run_once(
        &gateway,
        RESPOND,
        json!({"id": id, "ok": true, "r": {"level": 3}}),
    )
    .await;
    assert_eq!(
        answer["data"]["respondCommand"]["status"], "SUCCEEDED",
        "{answer}"
    );

    // The watcher sees every later state, in order, then the stream completes.
    let mut states = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .unwrap()
    {
        states.push(
            item.unwrap()["data"]["commandUpdated"]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(states, ["DELIVERED", "SUCCEEDED"]);
    let stored = app
        .gql(
            Some(&admin),
            "query($id: ID!) { command(id: $id) { status deliveredAt result } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(stored.data()["command"]["status"], "SUCCEEDED");
    assert!(stored.data()["command"]["deliveredAt"].is_string());
}

async fn commands_queued_while_the_gateway_was_away_arrive_when_it_returns(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let first = app.ws_client(&admin, Some("pi")).await.unwrap();
    let device = register(&first, "valve").await;
    first.close(1000, "power cut").await;
    wait_for_status(&app, &admin, &device, "OFFLINE").await;

    let mut queued = Vec::new();
    for service in ["open", "close", "open"] {
        let sent = app
            .gql(
                Some(&admin),
                SEND,
                json!({"d": device, "s": service, "t": 300}),
            )
            .await;
        queued.push(sent.data()["sendCommand"]["id"].clone());
    }

    // The gateway comes back: registers its device, then asks for commands.
    let back = app.ws_client(&admin, Some("pi")).await.unwrap();
    register(&back, "valve").await;
    let mut inbox = back.subscribe(Op::new(COMMANDS, json!({}))).await.unwrap();
    let mut arrived = Vec::new();
    for _ in 0..3 {
        arrived.push(next_item(&mut inbox).await["data"]["commands"]["id"].clone());
    }
    assert_eq!(arrived, queued, "queued commands arrive, oldest first");
    // A gateway that subscribes first and registers afterwards gets them too.
    let sent = app
        .gql(
            Some(&admin),
            SEND,
            json!({"d": device, "s": "later", "t": 300}),
        )
        .await;
    let later = sent.data()["sendCommand"]["id"].clone();
    assert_eq!(next_item(&mut inbox).await["data"]["commands"]["id"], later);
}

async fn only_the_hosting_session_may_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let host = app.ws_client(&admin, Some("host")).await.unwrap();
    let device = register(&host, "pump").await;
    let sent = app
        .gql(
            Some(&admin),
            SEND,
            json!({"d": device, "s": "run", "t": 60}),
        )
        .await;
    let id = sent.data()["sendCommand"]["id"].clone();

    let other = app.ws_client(&admin, Some("impostor")).await.unwrap();
    let refused = run_once(&other, RESPOND, json!({"id": id, "ok": true, "r": null})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let not_a_gateway = app.ws_client(&admin, None).await.unwrap();
    let refused = run_once(
        &not_a_gateway,
        RESPOND,
        json!({"id": id, "ok": true, "r": null}),
    )
    .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let inbox = run_once(
        &not_a_gateway,
        "subscription { commands { id } }",
        json!({}),
    )
    .await;
    assert_eq!(inbox["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let read = app
        .gql(
            Some(&admin),
            "query($id: ID!) { command(id: $id) { status } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(read.data()["command"]["status"], "PENDING");

    let answered = run_once(
        &host,
        RESPOND,
        json!({"id": id, "ok": false, "r": {"error": "dry"}}),
    )
    .await;
    assert_eq!(
        answered["data"]["respondCommand"],
        json!({"status": "FAILED", "result": {"error": "dry"}})
    );
}

async fn a_device_taken_over_takes_its_commands_along(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let old = app.ws_client(&admin, Some("old-gw")).await.unwrap();
    let new = app.ws_client(&admin, Some("new-gw")).await.unwrap();
    // A third gateway of the same user, hosting another device, listens too.
    let bystander = app.ws_client(&admin, Some("other-gw")).await.unwrap();
    register(&bystander, "lamp").await;
    let mut old_inbox = old.subscribe(Op::new(COMMANDS, json!({}))).await.unwrap();
    let mut new_inbox = new.subscribe(Op::new(COMMANDS, json!({}))).await.unwrap();
    let mut bystander_inbox = bystander
        .subscribe(Op::new(COMMANDS, json!({})))
        .await
        .unwrap();
    let device = register(&old, "heater").await;
    let send = |service: &'static str| {
        let (app, admin, device) = (&app, &admin, &device);
        async move {
            app.gql(
                Some(admin),
                SEND,
                json!({"d": device, "s": service, "t": 300}),
            )
            .await
            .data()["sendCommand"]["id"]
                .clone()
        }
    };
    let first = send("warm").await;
    let delivered = next_item(&mut old_inbox).await;
    assert_eq!(delivered["data"]["commands"]["id"], first);
    assert_eq!(delivered["data"]["commands"]["status"], "DELIVERED");

    // The device moves to the new gateway before the old one answered: the
    // unanswered command goes with it (delivery is at least once), and the
    // new gateway may answer it.
    register(&new, "heater").await;
    let moved = next_item(&mut new_inbox).await;
    assert_eq!(moved["data"]["commands"]["id"], first, "{moved}");
    let second = send("cool").await;
    assert_eq!(
        next_item(&mut new_inbox).await["data"]["commands"]["id"],
        second
    );
    let answered = run_once(&new, RESPOND, json!({"id": first, "ok": true, "r": null})).await;
    assert_eq!(
        answered["data"]["respondCommand"]["status"], "SUCCEEDED",
        "{answered}"
    );
    let refused = run_once(&old, RESPOND, json!({"id": second, "ok": true, "r": null})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");

    // Neither the old gateway nor the bystander got anything more.
    for inbox in [&mut old_inbox, &mut bystander_inbox] {
        let extra = tokio::time::timeout(Duration::from_millis(500), inbox.next()).await;
        assert!(extra.is_err(), "a command went astray: {extra:?}");
    }
}

async fn an_unanswered_command_streams_expired(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let host = app.ws_client(&admin, Some("slow")).await.unwrap();
    let device = register(&host, "sloth").await;
    let sent = app
        .gql(
            Some(&admin),
            SEND,
            json!({"d": device, "s": "wake", "t": 1}),
        )
        .await;
    let id = sent.data()["sendCommand"]["id"].clone();
    let mut updates = host
        .subscribe(Op::new(
            "subscription($id: ID!) { commandUpdated(id: $id) { status } }",
            json!({"id": id}),
        ))
        .await
        .unwrap();
    let mut last = Value::Null;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), updates.next())
        .await
        .unwrap()
    {
        last = item.unwrap()["data"]["commandUpdated"]["status"].clone();
    }
    assert_eq!(last, "EXPIRED");
}
