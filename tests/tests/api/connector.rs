//! The gateway library (`ferrite-connector`) against the real server:
//! device lifecycle, acknowledged events, commands, event subscriptions,
//! and restarts of either side. The faults a gateway meets in the field
//! (a wrong URL, a revoked key, a silent or misbehaving server, TLS) are in
//! `connector_faults`, which shares the helpers here.

use std::time::Duration;

use ferrite_connector::{
    ConnectionState, Connector, ConnectorOptions, DeviceSpec, DeviceStatus, DeviceUpdate, Error,
    Event, EventFilter,
};
use ferrite_e2e::{
    Backend, TestApp, eventually, on_both_backends,
    ws::{Op, next_item, until_device_changes_are_live},
};
use futures_util::StreamExt;
use serde_json::{Value, json};

on_both_backends!(
    the_device_lifecycle_reaches_the_platform,
    events_are_acknowledged_once_committed,
    commands_are_received_and_answered,
    a_restarted_server_gets_every_accepted_event_exactly_once,
);

/// A gateway as most tests start one: the admin's token, a WRITE key, and a
/// connector `gw` with its outbox in a fresh directory (kept while the
/// struct lives).
pub(crate) struct Gateway {
    pub(crate) token: String,
    pub(crate) key: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) connector: Connector,
}

pub(crate) async fn gateway(app: &TestApp) -> Gateway {
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

pub(crate) fn options(
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
pub(crate) fn options_at(
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

pub(crate) async fn device(app: &TestApp, token: &str, external_id: &str) -> Option<Value> {
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
pub(crate) async fn stored_payloads(app: &TestApp, token: &str, filter: Value) -> Vec<i64> {
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
pub(crate) async fn send_command(
    app: &TestApp,
    token: &str,
    device_id: &str,
    service: &str,
) -> String {
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
pub(crate) async fn next_disconnect_reason(
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
