//! The gateway library (`ferrite-connector`) against the real server:
//! device lifecycle, acknowledged events, commands, event subscriptions,
//! reconnects, and the faults a gateway meets in the field.

use std::time::Duration;

use ferrite_connector::{
    ConnectionState, Connector, ConnectorOptions, DeviceSpec, DeviceStatus, DeviceUpdate, Error,
    Event, EventFilter,
};
use ferrite_e2e::{
    Backend, TestApp, eventually, on_both_backends,
    ws::{Op, next_item, until_device_changes_are_live},
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

on_both_backends!(
    the_device_lifecycle_reaches_the_platform,
    events_are_acknowledged_once_committed,
    commands_are_received_and_answered,
    a_restarted_server_gets_every_accepted_event_exactly_once,
);

/// Options for a gateway of `app` with a fresh outbox in `dir`, and quick
/// reconnects so tests do not wait long.
/// A gateway as most tests start one: the admin's token, a WRITE key, and a
/// connector `gw` with its outbox in a fresh directory (kept while the
/// struct lives).
struct Gateway {
    token: String,
    key: String,
    dir: tempfile::TempDir,
    connector: Connector,
}

async fn gateway(app: &TestApp) -> Gateway {
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "WRITE").await;
    let dir = tempfile::tempdir().unwrap();
    let connector = Connector::start(options(app, &key, "gw", &dir))
        .await
        .unwrap();
    Gateway {
        token,
        key,
        dir,
        connector,
    }
}

fn options(
    app: &TestApp,
    key: &str,
    connector_id: &str,
    dir: &tempfile::TempDir,
) -> ConnectorOptions {
    options_at(
        &app.url("/graphql"),
        key,
        connector_id,
        dir.path().join("outbox.db"),
    )
}

/// Options for a gateway of the server at `url` with its outbox at `outbox`,
/// and quick reconnects.
fn options_at(
    url: &str,
    key: &str,
    connector_id: &str,
    outbox: std::path::PathBuf,
) -> ConnectorOptions {
    ConnectorOptions::new(url, key, connector_id)
        .unwrap()
        .outbox_path(outbox)
        .unwrap()
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(500))
        .unwrap()
}

async fn device(app: &TestApp, token: &str, external_id: &str) -> Option<Value> {
    let answer = app
        .gql(
            Some(token),
            "query($f: DeviceFilter) { devices(filter: $f) { nodes { id externalId name type location attributes status connectorId } } }",
            json!({"f": {"externalIds": [external_id]}}),
        )
        .await;
    answer.data()["devices"]["nodes"].get(0).cloned()
}

/// The integer payloads of every stored event matching `filter`, in event
/// id order (the API lists newest first; this reads every page).
async fn stored_payloads(app: &TestApp, token: &str, filter: Value) -> Vec<i64> {
    let mut events: Vec<(i64, i64)> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .gql(
                Some(token),
                "query($f: EventFilter, $a: String) { events(filter: $f, first: 500, after: $a) { nodes { id payload } pageInfo { endCursor hasNextPage } } }",
                json!({"f": filter, "a": after}),
            )
            .await;
        let page = &page.data()["events"];
        events.extend(
            page["nodes"]
                .as_array()
                .expect("a list of events")
                .iter()
                .map(|node| {
                    (
                        node["id"].as_str().unwrap().parse::<i64>().unwrap(),
                        node["payload"].as_i64().unwrap(),
                    )
                }),
        );
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    events.sort();
    events.into_iter().map(|(_, payload)| payload).collect()
}

/// Sends a command to a device over HTTP; returns its id.
async fn send_command(app: &TestApp, token: &str, device_id: &str, service: &str) -> String {
    app.gql(
        Some(token),
        "mutation($d: ID!, $s: String!) { sendCommand(input: {deviceId: $d, service: $s, payload: {on: true}}) { id } }",
        json!({"d": device_id, "s": service}),
    )
    .await
    .data()["sendCommand"]["id"]
        .as_str()
        .expect("a command id")
        .to_owned()
}

/// The reason of the session's next disconnection after what `state` has
/// seen, within 10 s.
async fn next_disconnect_reason(
    state: &mut tokio::sync::watch::Receiver<ConnectionState>,
) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            state.changed().await.unwrap();
            if let ConnectionState::Disconnected { reason } = &*state.borrow_and_update() {
                break reason.clone();
            }
        }
    })
    .await
    .expect("a disconnection within 10 s")
}

async fn the_device_lifecycle_reaches_the_platform(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.create_member("gardener").await;
    let key = app.create_api_key(&token, "WRITE").await;
    let watcher = app.ws_client(&token, None).await.unwrap();
    let mut changes = watcher
        .subscribe(Op::new(
            "subscription { deviceChanged { kind device { externalId name location status } } }",
            json!({}),
        ))
        .await
        .unwrap();
    until_device_changes_are_live(&app, &token, &mut changes).await;

    let dir = tempfile::tempdir().unwrap();
    let connector = Connector::start(options(&app, &key, "greenhouse", &dir))
        .await
        .unwrap();
    let registered = connector
        .register(
            DeviceSpec::new("thermo-1")
                .name("Thermometer")
                .device_type("thermometer")
                .location("greenhouse")
                .attributes(json!({"unit": "celsius"})),
        )
        .await
        .unwrap();
    assert_eq!(registered.status, DeviceStatus::Online);
    assert_eq!(registered.connector_id.as_deref(), Some("greenhouse"));
    let stored = device(&app, &token, "thermo-1").await.unwrap();
    assert_eq!(stored["name"], "Thermometer");
    assert_eq!(stored["type"], "thermometer");
    assert_eq!(stored["attributes"], json!({"unit": "celsius"}));
    assert_eq!(stored["status"], "ONLINE");
    let change = next_item(&mut changes).await;
    assert_eq!(
        change["data"]["deviceChanged"]["kind"], "REGISTERED",
        "{change}"
    );

    let updated = connector
        .update(
            "thermo-1",
            DeviceUpdate {
                name: Some("Greenhouse thermometer".into()),
                location: Some(None),
                ..DeviceUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "Greenhouse thermometer");
    assert_eq!(updated.location, None);
    let stored = device(&app, &token, "thermo-1").await.unwrap();
    assert_eq!(stored["name"], "Greenhouse thermometer");
    assert_eq!(stored["location"], Value::Null);
    assert_eq!(
        stored["status"], "ONLINE",
        "an update keeps the device online"
    );
    let change = next_item(&mut changes).await;
    assert_eq!(
        change["data"]["deviceChanged"]["kind"], "UPDATED",
        "{change}"
    );

    let disconnected = connector.disconnect("thermo-1").await.unwrap();
    assert_eq!(disconnected.status, DeviceStatus::Disconnected);
    assert_eq!(
        device(&app, &token, "thermo-1").await.unwrap()["status"],
        "DISCONNECTED"
    );
    let change = next_item(&mut changes).await;
    assert_eq!(
        change["data"]["deviceChanged"]["kind"], "STATUS",
        "{change}"
    );

    // Registering again brings it back online.
    let back = connector
        .register(DeviceSpec::new("thermo-1"))
        .await
        .unwrap();
    assert_eq!(back.status, DeviceStatus::Online);
    let change = next_item(&mut changes).await;
    assert_eq!(
        change["data"]["deviceChanged"]["device"]["status"],
        "ONLINE"
    );

    connector.delete("thermo-1").await.unwrap();
    assert!(device(&app, &token, "thermo-1").await.is_none());
    let change = next_item(&mut changes).await;
    assert_eq!(
        change["data"]["deviceChanged"]["kind"], "DELETED",
        "{change}"
    );
    assert!(connector.devices().await.is_empty());

    // Descriptions the server would refuse are refused locally, before
    // they are kept for every reconnect.
    for bad in [
        DeviceSpec::new("thermo\n2"),
        DeviceSpec::new("thermo-2").name("Hall\u{7}"),
        DeviceSpec::new("thermo-2").attributes(json!({"floor": "\u{0}"})),
    ] {
        let error = connector.register(bad.clone()).await.unwrap_err();
        assert!(matches!(error, Error::InvalidInput(_)), "{bad:?}: {error}");
    }
    assert!(device(&app, &token, "thermo-2").await.is_none());

    // Unknown devices are refused locally, with a clear error.
    let error = connector.disconnect("thermo-1").await.unwrap_err();
    assert!(matches!(error, Error::InvalidInput(_)), "{error}");
    let error = connector
        .event("thermo-1", "t", json!(1))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidInput(_)), "{error}");
    connector.shutdown().await.unwrap();
}

async fn events_are_acknowledged_once_committed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let Gateway {
        token,
        key: _,
        dir: _outbox,
        connector,
    } = gateway(&app).await;
    let thermo = connector.register(DeviceSpec::new("thermo")).await.unwrap();

    let ack = connector
        .event("thermo", "temperature", json!({"celsius": 21.5}))
        .await
        .unwrap();
    // Acknowledged means stored: the platform has it right away.
    let stored = app
        .gql(
            Some(&token),
            "query { events(first: 1) { nodes { id deviceId service payload idempotencyKey } } }",
            json!({}),
        )
        .await;
    let stored = &stored.data()["events"]["nodes"][0];
    assert_eq!(stored["id"], ack.id.to_string());
    assert_eq!(stored["deviceId"], thermo.id);
    assert_eq!(stored["payload"], json!({"celsius": 21.5}));
    assert_eq!(stored["idempotencyKey"], ack.idempotency_key);
    assert_eq!(connector.pending_events().await, 0);

    // Many at once, queued without waiting, arrive in order.
    let events = (0..300)
        .map(|n| Event::new("thermo", "count", json!(n)))
        .collect();
    connector.queue(events).await.unwrap();
    connector.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        stored_payloads(&app, &token, json!({"services": ["count"]})).await,
        (0..300).collect::<Vec<_>>()
    );

    // The same idempotency key twice is stored once.
    let first = connector
        .publish(Event::new("thermo", "door", json!("open")).idempotency_key("door-1"))
        .await
        .unwrap();
    let again = connector
        .publish(Event::new("thermo", "door", json!("open")).idempotency_key("door-1"))
        .await
        .unwrap();
    assert_eq!(first.id, again.id);

    // Garbage is refused before it reaches the outbox.
    let huge = json!({"blob": "x".repeat(70_000)});
    let error = connector.event("thermo", "blob", huge).await.unwrap_err();
    assert!(
        matches!(&error, Error::InvalidInput(message) if message.contains("max_payload_bytes")),
        "{error}"
    );
    for bad_service in ["", &"s".repeat(129), "temp\nerature", "temp\u{0}"] {
        let error = connector
            .event("thermo", bad_service, json!(1))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::InvalidInput(_)), "{error}");
    }
    // The server could never store these (PostgreSQL's jsonb has no U+0000);
    // queued, they would only be rejected later.
    for bad_payload in [
        json!("a\u{0}b"),
        json!({"k\u{0}": 1}),
        json!([[{"k": "\u{0}"}]]),
    ] {
        let error = connector
            .queue(vec![Event::new("thermo", "t", bad_payload.clone())])
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::InvalidInput(message) if message.contains("U+0000")),
            "{bad_payload}: {error}"
        );
    }
    let error = connector
        .publish(Event::new("thermo", "t", json!(1)).idempotency_key("key\r\n"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidInput(_)), "{error}");
    assert_eq!(connector.pending_events().await, 0);
    assert_eq!(app.event_count(&token).await, 302);
    connector.shutdown().await.unwrap();
}

async fn commands_are_received_and_answered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let Gateway {
        token,
        key: _,
        dir: _outbox,
        connector,
    } = gateway(&app).await;
    let relay = connector.register(DeviceSpec::new("relay")).await.unwrap();
    let mut commands = connector.commands().await.unwrap();
    assert_eq!(
        connector.commands().await.unwrap_err(),
        Error::CommandsTaken
    );

    let command_id = send_command(&app, &token, &relay.id, "set").await;
    let command = tokio::time::timeout(Duration::from_secs(10), commands.next())
        .await
        .expect("a command within 10 s")
        .expect("the stream is open");
    assert_eq!(command.id, command_id);
    assert_eq!(command.device, "relay");
    assert_eq!(command.service, "set");
    assert_eq!(command.payload, json!({"on": true}));

    connector
        .respond(&command.id, Ok(json!({"on": true})))
        .await
        .unwrap();
    let state = app
        .gql(
            Some(&token),
            "query($id: ID!) { command(id: $id) { status result } }",
            json!({"id": command_id}),
        )
        .await;
    assert_eq!(state.data()["command"]["status"], "SUCCEEDED");
    assert_eq!(state.data()["command"]["result"], json!({"on": true}));

    // Answering twice or answering nonsense reports the server's error.
    let error = connector
        .respond(&command.id, Err(json!("again")))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Server { .. }), "{error}");
    let error = connector
        .respond("not-an-id", Ok(json!(1)))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Server { .. }), "{error}");
    connector.shutdown().await.unwrap();
}

/// A gateway publishing continuously while the server restarts: every
/// event it accepted is stored exactly once, in order.
async fn a_restarted_server_gets_every_accepted_event_exactly_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let Gateway {
        token,
        key: _,
        dir: _outbox,
        connector,
    } = gateway(&app).await;
    connector.register(DeviceSpec::new("meter")).await.unwrap();

    let publisher = {
        let connector = connector.clone();
        tokio::spawn(async move {
            for n in 0..1500_i64 {
                connector
                    .queue(vec![Event::new("meter", "n", json!(n))])
                    .await
                    .expect("the outbox accepts every event");
                if n % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let app = app.restart_in_place().await;
    publisher.await.unwrap();
    connector.flush(Duration::from_secs(30)).await.unwrap();

    let page = app
        .gql(
            Some(&token),
            "query { events(first: 500) { totalCount nodes { payload } pageInfo { endCursor hasNextPage } } }",
            json!({}),
        )
        .await;
    assert_eq!(page.data()["events"]["totalCount"], 1500);
    assert_eq!(
        stored_payloads(&app, &token, Value::Null).await,
        (0..1500).collect::<Vec<_>>(),
        "exactly once, in order"
    );
    // The device came back online on the new server.
    assert_eq!(
        device(&app, &token, "meter").await.unwrap()["status"],
        "ONLINE"
    );
    connector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_unreachable_at_start_gets_the_events_once_it_is_up() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "WRITE").await;
    let down = app.stop_for_now().await;

    // The gateway starts while the server is down: calls time out, events
    // wait in the outbox.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("ws://{}/graphql", down.addr());
    let options = options_at(&url, &key, "gw", dir.path().join("outbox.db"))
        .request_timeout(Duration::from_millis(500))
        .unwrap();
    let connector = Connector::start(options).await.unwrap();
    let taken_from = chrono::Utc::now();
    let error = connector
        .register(DeviceSpec::new("early"))
        .await
        .unwrap_err();
    assert_eq!(error, Error::Timeout(Duration::from_millis(500)));
    let error = connector.event("early", "n", json!(0)).await.unwrap_err();
    assert_eq!(error, Error::NotAcknowledged(Duration::from_millis(500)));
    connector
        .queue(
            (1..20)
                .map(|n| Event::new("early", "n", json!(n)))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(connector.pending_events().await, 20);
    let taken_until = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(matches!(
        *connector.state().borrow(),
        ConnectionState::Disconnected { .. } | ConnectionState::Reconnecting { .. }
    ));

    // The server comes up: the gateway connects, registers, and delivers.
    let app = down.start_again().await;
    connector.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        stored_payloads(&app, &token, Value::Null).await,
        (0..20).collect::<Vec<_>>()
    );
    let early = device(&app, &token, "early").await.unwrap();
    assert_eq!(early["status"], "ONLINE");

    // Each event carries the time it was taken, not the time it arrived.
    let times = app
        .gql(
            Some(&token),
            "{ events(first: 50) { nodes { occurredAt receivedAt } } }",
            json!({}),
        )
        .await;
    let parse = |value: &Value| {
        chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let nodes = times.data()["events"]["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 20);
    for node in &nodes {
        let (occurred, received) = (parse(&node["occurredAt"]), parse(&node["receivedAt"]));
        assert!(
            taken_from <= occurred && occurred <= taken_until && taken_until < received,
            "taken {taken_from}..{taken_until}, occurred {occurred}, received {received}"
        );
    }
    connector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_the_gateway_with_a_clear_error() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let (key, key_info) = app.create_api_key_with_id(&token, "WRITE").await;
    let dir = tempfile::tempdir().unwrap();
    let connector = Connector::start(options(&app, &key, "gw", &dir))
        .await
        .unwrap();
    connector.register(DeviceSpec::new("d")).await.unwrap();
    app.gql(
        Some(&token),
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({"id": key_info}),
    )
    .await
    .data();

    // The open socket is closed with 4403; the gateway stops instead of
    // reconnecting in a loop, and says why.
    let error = tokio::time::timeout(Duration::from_secs(10), connector.closed())
        .await
        .expect("the gateway gives up within 10 s");
    assert!(
        matches!(&error, Error::Unauthorized(message) if message.contains("revoked")),
        "{error}"
    );
    assert_eq!(
        *connector.state().borrow(),
        ConnectionState::Failed(error.clone())
    );
    assert_eq!(
        connector.event("d", "n", json!(1)).await.unwrap_err(),
        error
    );
    assert_eq!(connector.shutdown().await.unwrap_err(), error);

    // A gateway started with the revoked key fails the same way.
    let dir = tempfile::tempdir().unwrap();
    let connector = Connector::start(options(&app, &key, "gw", &dir))
        .await
        .unwrap();
    let error = connector
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unauthorized(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_cannot_run_a_gateway() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "READ").await;
    let dir = tempfile::tempdir().unwrap();
    let connector = Connector::start(options(&app, &key, "gw", &dir))
        .await
        .unwrap();
    // The first refusal ends the session: retrying cannot help.
    let error = connector.register(DeviceSpec::new("d")).await.unwrap_err();
    assert!(
        matches!(&error, Error::Unauthorized(message) if message.contains("may not manage devices") && message.contains("FORBIDDEN")),
        "{error}"
    );
    assert_eq!(connector.closed().await, error);
    assert_eq!(app.device_count(&token).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_url_is_retried_slowly_and_explained() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "WRITE").await;
    let dir = tempfile::tempdir().unwrap();
    // The right server, the wrong path.
    let options = options_at(
        &app.url("/not-graphql"),
        &key,
        "gw",
        dir.path().join("outbox.db"),
    )
    .reconnect_delay(Duration::from_millis(200), Duration::from_secs(1))
    .unwrap();
    let connector = Connector::start(options).await.unwrap();
    let mut state = connector.state();
    let mut attempts = 0;
    let mut reason = String::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        if tokio::time::timeout(Duration::from_millis(100), state.changed())
            .await
            .is_ok()
        {
            match &*state.borrow_and_update() {
                ConnectionState::Disconnected { reason: why } => reason = why.clone(),
                ConnectionState::Reconnecting { .. } => attempts += 1,
                ConnectionState::Connecting => {}
                other => panic!("unexpected state {other:?}"),
            }
        }
    }
    assert!(reason.contains("HTTP 404"), "{reason}");
    // Backoff, not a tight loop: at most a handful of attempts in 2 s.
    assert!((1..=8).contains(&attempts), "{attempts} attempts in 2 s");
    connector.shutdown().await.unwrap();
}

/// A thermostat following a light switch: the gateway subscribes to
/// another device's events, falls behind, loses its connection, and still
/// sees every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribed_events_survive_a_slow_reader_and_a_reconnect() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "WRITE").await;
    let switch = app.register_device(&token, "switch").await;
    let other = app.register_device(&token, "other").await;
    app.publish(&token, &switch, "toggle", json!(-1)).await;

    let dir = tempfile::tempdir().unwrap();
    let options = options(&app, &key, "thermostat-gw", &dir)
        .channel_capacity(4)
        .unwrap();
    let connector = Connector::start(options).await.unwrap();
    let mut events = connector
        .subscribe_events(EventFilter::new().device_ids([switch.clone()]), None)
        .await
        .unwrap();
    connector
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    // Wait until the subscription is live: probes until one comes through.
    let mut live = false;
    for probe in 0..50 {
        let probe = json!(format!("probe-{probe}"));
        app.publish(&token, &switch, "toggle", probe).await;
        let next = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
        if let Ok(Some(Ok(_))) = next {
            live = true;
            break;
        }
    }
    assert!(live, "the subscription never became live");

    // 200 toggles while the reader does not read (capacity 4): the
    // subscription pauses instead of dropping or buffering.
    for n in 0..200 {
        app.publish(&token, &switch, "toggle", json!(n)).await;
        if n % 3 == 0 {
            app.publish(&token, &other, "noise", json!(n)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut received = Vec::new();
    while received.len() < 100 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .expect("an event, not an error");
        assert_eq!(event.device_id, switch);
        assert_eq!(event.external_id.as_deref(), Some("switch"));
        // Probes that were still on their way are skipped.
        if let Some(n) = event.payload.as_i64() {
            received.push(n);
        }
    }

    // The server restarts; more toggles afterwards.
    let app = app.restart_in_place().await;
    connector
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    for n in 200..250 {
        app.publish(&token, &switch, "toggle", json!(n)).await;
    }
    while received.len() < 250 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .expect("an event, not an error");
        received.push(event.payload.as_i64().unwrap());
    }
    assert_eq!(received, (0..250).collect::<Vec<_>>());
    // Nothing more: no duplicate came after.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.next())
            .await
            .is_err()
    );
    connector.shutdown().await.unwrap();
}

/// The server refuses an event the gateway let through (its payload limit
/// is lower than the gateway's): that event is rejected and removed, not
/// retried forever, and the events around it are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_server_refuses_is_dropped_and_the_rest_flows() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, |config| config.limits.payload_bytes = 1024).await;
    let Gateway {
        token,
        key: _,
        dir: _outbox,
        connector,
    } = gateway(&app).await;
    connector.register(DeviceSpec::new("cam")).await.unwrap();

    let big = json!({"image": "x".repeat(2000)});
    let error = connector
        .event("cam", "snapshot", big.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Rejected { code, .. } if code == "BAD_USER_INPUT"),
        "{error}"
    );
    assert_eq!(connector.pending_events().await, 0);

    // A bad one in the middle of a batch: the others are stored, in order.
    let mut events: Vec<Event> = (0..5).map(|n| Event::new("cam", "n", json!(n))).collect();
    events.push(Event::new("cam", "snapshot", big));
    events.extend((5..10).map(|n| Event::new("cam", "n", json!(n))));
    connector.queue(events).await.unwrap();
    connector.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        stored_payloads(&app, &token, Value::Null).await,
        (0..10).collect::<Vec<_>>()
    );
    connector.shutdown().await.unwrap();
}

async fn next_command(commands: &mut ferrite_connector::Commands) -> ferrite_connector::Command {
    tokio::time::timeout(Duration::from_secs(10), commands.recv())
        .await
        .expect("a command within 10 s")
        .expect("the stream is open")
}

/// Commands survive both sides going away: one sent while the gateway is
/// stopped arrives when it starts again (its devices re-registered from the
/// outbox file, without the program registering them), and the command
/// subscription comes back after the server restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_a_gateway_after_it_or_the_server_restarts() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let Gateway {
        token,
        key,
        dir,
        connector,
    } = gateway(&app).await;
    let relay = connector.register(DeviceSpec::new("relay")).await.unwrap();
    connector.shutdown().await.unwrap();

    let while_away = send_command(&app, &token, &relay.id, "while-away").await;

    // The gateway starts again and only asks for commands.
    let connector = Connector::start(options(&app, &key, "gw", &dir))
        .await
        .unwrap();
    let mut commands = connector.commands().await.unwrap();
    let command = next_command(&mut commands).await;
    assert_eq!(
        (command.id.as_str(), command.device.as_str()),
        (while_away.as_str(), "relay")
    );
    connector
        .respond(&command.id, Ok(json!("done")))
        .await
        .unwrap();

    // The server restarts; the subscription comes back by itself.
    let app = app.restart_in_place().await;
    connector
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    eventually(
        "the relay is back online",
        Duration::from_secs(10),
        || async {
            let status = device(&app, &token, "relay").await.unwrap()["status"].clone();
            (status == "ONLINE").then_some(())
        },
    )
    .await;
    let after_restart = send_command(&app, &token, &relay.id, "after-restart").await;
    let command = next_command(&mut commands).await;
    assert_eq!(command.id, after_restart);
    assert_eq!(command.service, "after-restart");
    connector.shutdown().await.unwrap();
}

/// A minimal graphql-transport-ws endpoint standing in for a server that
/// misbehaves (the real one cannot be made to): it accepts every
/// connection, acknowledges `connection_init`, sends `after_ack` as text
/// frames, then reads and ignores everything (pings included). Each
/// acknowledged connection is reported on the returned channel.
async fn fake_server(
    after_ack: Vec<&'static str>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use tokio_tungstenite::tungstenite::{
        Message,
        handshake::server::{Request, Response},
        http::HeaderValue,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted_tx, accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let accepted_tx = accepted_tx.clone();
            let after_ack = after_ack.clone();
            tokio::spawn(async move {
                // tungstenite's callback signature: its error is an HTTP response.
                #[allow(clippy::result_large_err)]
                let agree = |_: &Request, mut response: Response| {
                    response.headers_mut().insert(
                        "sec-websocket-protocol",
                        HeaderValue::from_static("graphql-transport-ws"),
                    );
                    Ok(response)
                };
                let mut socket = tokio_tungstenite::accept_hdr_async(stream, agree)
                    .await
                    .unwrap();
                let _init = socket.next().await;
                socket
                    .send(Message::text(r#"{"type":"connection_ack"}"#))
                    .await
                    .unwrap();
                let _ = accepted_tx.send(());
                for text in after_ack {
                    if socket.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                while let Some(Ok(_)) = socket.next().await {}
            });
        }
    });
    (addr, accepted)
}

/// A server that accepts the session and then goes silent (a dead NAT
/// mapping, a hung process) is given up after the keep-alive timeout, and
/// the gateway reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_dropped_after_the_keepalive_timeout() {
    let (addr, mut accepted) = fake_server(Vec::new()).await;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("ws://{addr}/graphql");
    let options = options_at(&url, "frt_x", "gw", dir.path().join("outbox.db"))
        .keepalive(Duration::from_millis(100), Duration::from_millis(400))
        .unwrap()
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(100))
        .unwrap();
    let connector = Connector::start(options).await.unwrap();
    let mut state = connector.state();
    tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await
        .unwrap();
    let reason = next_disconnect_reason(&mut state).await;
    assert!(reason.contains("silent"), "{reason}");
    // …and the gateway connects again.
    tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await
        .expect("a new connection")
        .unwrap();
    connector.shutdown().await.unwrap();
}

/// Device changes made while the server is down are carried out when it is
/// back: an update (clearing a location), a disconnect and a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_changes_made_offline_reach_the_platform_on_reconnect() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "WRITE").await;
    let dir = tempfile::tempdir().unwrap();
    let options = options(&app, &key, "gw", &dir)
        .request_timeout(Duration::from_millis(1500))
        .unwrap();
    let connector = Connector::start(options).await.unwrap();
    for id in ["moved", "unplugged", "scrapped"] {
        connector
            .register(DeviceSpec::new(id).location("lab"))
            .await
            .unwrap();
    }
    let down = app.stop_for_now().await;

    let timeout = Error::Timeout(Duration::from_millis(1500));
    let clear_location = DeviceUpdate {
        location: Some(None),
        name: Some("Moved".into()),
        ..DeviceUpdate::default()
    };
    assert_eq!(
        connector.update("moved", clear_location).await.unwrap_err(),
        timeout
    );
    assert_eq!(
        connector.disconnect("unplugged").await.unwrap_err(),
        timeout
    );
    assert_eq!(connector.delete("scrapped").await.unwrap_err(), timeout);

    let app = down.start_again().await;
    connector
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    eventually(
        "the changes made offline to reach the platform",
        Duration::from_secs(10),
        || async {
            let moved = device(&app, &token, "moved").await.unwrap();
            let unplugged = device(&app, &token, "unplugged").await.unwrap();
            let scrapped = device(&app, &token, "scrapped").await;
            (moved["location"].is_null()
                && moved["name"] == "Moved"
                && moved["status"] == "ONLINE"
                && unplugged["status"] == "DISCONNECTED"
                && scrapped.is_none())
            .then_some(())
        },
    )
    .await;
    let managed: Vec<String> = connector
        .devices()
        .await
        .into_iter()
        .map(|spec| spec.external_id)
        .collect();
    assert_eq!(managed, ["moved", "unplugged"]);
    connector.shutdown().await.unwrap();
}

/// `wss://` to a server behind a TLS-terminating proxy (as nginx or Caddy
/// would be) with a self-signed certificate: refused (and retried, with the
/// reason) until the gateway trusts it with `tls_ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reaches_a_tls_server_it_was_told_to_trust() {
    use std::sync::Arc;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "WRITE").await;

    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("server.pem");
    std::fs::write(&ca_file, certified.cert.pem()).unwrap();
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![certified.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let backend = app.addr;
    tokio::spawn(async move {
        loop {
            let (client, _) = proxy.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let mut server = tokio::net::TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    let url = format!("wss://{proxy_addr}/graphql");

    // Not trusted: a TLS error, retried (the operator may fix the proxy).
    let untrusting = options_at(&url, &key, "gw", dir.path().join("first.db"));
    let connector = Connector::start(untrusting).await.unwrap();
    let mut state = connector.state();
    let reason = next_disconnect_reason(&mut state).await;
    assert!(
        reason.contains("TLS") && reason.contains("tls_ca_file"),
        "{reason}"
    );
    connector.shutdown().await.unwrap();

    // Trusted: the whole session runs over TLS.
    let trusting = options_at(&url, &key, "gw", dir.path().join("second.db"))
        .tls_ca_file(&ca_file)
        .unwrap();
    let connector = Connector::start(trusting).await.unwrap();
    let device = connector.register(DeviceSpec::new("secure")).await.unwrap();
    assert_eq!(device.status, DeviceStatus::Online);
    let ack = connector
        .event("secure", "temperature", json!({"celsius": 20}))
        .await
        .unwrap();
    assert!(ack.id > 0);
    assert_eq!(app.event_count(&token).await, 1);
    connector.shutdown().await.unwrap();
}

/// Garbage from the server (an answer to an operation never started, a
/// message outside the protocol, text that is not JSON) ends that
/// connection with a reason and a reconnect; queued events stay queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_server_costs_a_reconnect_not_an_event() {
    let cases = [
        r#"{"type":"mystery","id":"1"}"#,
        "this is not JSON",
        r#"{"type":"next"}"#,
    ];
    for garbage in cases {
        // An answer to an operation that was never started comes first: it
        // is ignored, the garbage after it is not.
        let (addr, mut accepted) = fake_server(vec![
            r#"{"type":"next","id":"999","payload":{"data":{"x":1}}}"#,
            garbage,
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("ws://{addr}/graphql");
        let options = options_at(&url, "frt_x", "gw", dir.path().join("outbox.db"))
            .request_timeout(Duration::from_millis(300))
            .unwrap();
        let connector = Connector::start(options).await.unwrap();
        let mut state = connector.state();
        let reason = next_disconnect_reason(&mut state).await;
        assert!(
            reason.contains("not graphql-transport-ws"),
            "{garbage}: {reason}"
        );
        // The fake never answers a registration; the device is managed
        // anyway, so an event can be queued for it, and it stays queued.
        let unanswered = connector.register(DeviceSpec::new("d")).await;
        assert_eq!(
            unanswered.unwrap_err(),
            Error::Timeout(Duration::from_millis(300))
        );
        connector
            .queue(vec![Event::new("d", "n", json!(1))])
            .await
            .unwrap();
        // …and it connects again, and again.
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(10), accepted.recv())
                .await
                .expect("a connection")
                .unwrap();
        }
        let reason = next_disconnect_reason(&mut state).await;
        assert!(
            reason.contains("not graphql-transport-ws"),
            "{garbage}: {reason}"
        );
        assert_eq!(connector.pending_events().await, 1);
        connector.shutdown().await.unwrap();
    }
}
