//! Events: publishing, idempotency, history pages, filters, payload limits.

use ferrite_e2e::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    a_retried_idempotency_key_stores_the_event_once,
    events_page_newest_first_with_correct_page_info,
    a_garbage_cursor_is_bad_user_input,
    an_oversized_payload_is_refused_and_nothing_is_stored,
    json_with_a_nul_character_is_refused_on_both_backends,
    the_payload_limit_is_configurable,
    publish_events_is_all_or_nothing,
    events_filter_by_service_location_and_time,
    an_event_reads_back_with_its_fields,
);

const PUBLISH_MANY: &str = "mutation($inputs: [EventInput!]!) { publishEvents(inputs: $inputs) { id service idempotencyKey } }";

async fn a_retried_idempotency_key_stores_the_event_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "meter").await;
    let batch = json!({"inputs": [
        {"deviceId": device, "service": "kwh", "payload": 1.5, "idempotencyKey": "m-1"},
        {"deviceId": device, "service": "kwh", "payload": 1.7, "idempotencyKey": "m-2"},
        {"deviceId": device, "service": "kwh", "payload": 1.9},
    ]});

    let first = app.gql(Some(&admin), PUBLISH_MANY, batch.clone()).await;
    let first_ids: Vec<Value> = first.data()["publishEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    // The gateway did not hear the answer and retries the whole batch.
    let retry = app.gql(Some(&admin), PUBLISH_MANY, batch).await;
    let retry_ids: Vec<Value> = retry.data()["publishEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();

    assert_eq!(
        first_ids[..2],
        retry_ids[..2],
        "keyed events come back as stored"
    );
    assert_ne!(
        first_ids[2], retry_ids[2],
        "an event without a key is stored again"
    );
    assert_eq!(app.event_count(&admin).await, 4);

    // The same key twice within one batch is stored once too.
    let twice = app
        .gql(
            Some(&admin),
            PUBLISH_MANY,
            json!({"inputs": [
                {"deviceId": device, "service": "kwh", "payload": 2.0, "idempotencyKey": "m-3"},
                {"deviceId": device, "service": "kwh", "payload": 2.0, "idempotencyKey": "m-3"},
            ]}),
        )
        .await;
    let events = twice.data()["publishEvents"].as_array().unwrap();
    assert_eq!(events[0]["id"], events[1]["id"]);
    assert_eq!(app.event_count(&admin).await, 5);

    // Keys are per device: another device may use the same one.
    let other = app.register_device(&admin, "meter-2").await;
    app.gql(Some(&admin), PUBLISH_MANY, json!({"inputs": [{"deviceId": other, "service": "kwh", "payload": 0, "idempotencyKey": "m-1"}]}))
        .await
        .data();
    assert_eq!(app.event_count(&admin).await, 6);
}

async fn events_page_newest_first_with_correct_page_info(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "counter").await;
    let inputs: Vec<Value> = (0..23)
        .map(|i| json!({"deviceId": device, "service": "count", "payload": {"n": i}}))
        .collect();
    app.gql(Some(&admin), PUBLISH_MANY, json!({"inputs": inputs}))
        .await
        .data();

    let forward = "query($after: String) { events(first: 5, after: $after) { totalCount edges { cursor node { id payload } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let response = app
            .gql(Some(&admin), forward, json!({"after": after}))
            .await;
        let events = &response.data()["events"];
        assert_eq!(events["totalCount"], 23);
        let edges = events["edges"].as_array().unwrap();
        assert_eq!(events["pageInfo"]["startCursor"], edges[0]["cursor"]);
        assert_eq!(
            events["pageInfo"]["endCursor"],
            edges[edges.len() - 1]["cursor"]
        );
        assert_eq!(events["pageInfo"]["hasPreviousPage"], pages > 0);
        seen.extend(
            edges
                .iter()
                .map(|e| e["node"]["payload"]["n"].as_i64().unwrap()),
        );
        pages += 1;
        if events["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = events["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(pages, 5);
    assert_eq!(
        seen,
        (0..23).rev().collect::<Vec<_>>(),
        "newest first, no gap, no duplicate"
    );

    // Backward from the oldest end.
    let backward = "query($before: String) { events(last: 10, before: $before) { nodes { payload } pageInfo { hasNextPage hasPreviousPage startCursor } } }";
    let last = app
        .gql(Some(&admin), backward, json!({"before": null}))
        .await;
    let events = &last.data()["events"];
    let numbers = payload_numbers(events);
    assert_eq!(numbers, (0..10).rev().collect::<Vec<_>>());
    assert_eq!(events["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(events["pageInfo"]["hasNextPage"], false);
    let before = events["pageInfo"]["startCursor"].clone();
    let newer = app
        .gql(Some(&admin), backward, json!({"before": before}))
        .await;
    let events = &newer.data()["events"];
    let numbers = payload_numbers(events);
    assert_eq!(numbers, (10..20).rev().collect::<Vec<_>>());
    assert_eq!(events["pageInfo"]["hasNextPage"], true);

    let both = app
        .gql(
            Some(&admin),
            "{ events(first: 1, last: 1) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(both.error_code(), "BAD_USER_INPUT");
}

async fn a_garbage_cursor_is_bad_user_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "d").await;
    app.publish(&admin, &device, "s", json!(1)).await;
    let device_cursor = app
        .gql(Some(&admin), "{ devices { edges { cursor } } }", json!({}))
        .await
        .data()["devices"]["edges"][0]["cursor"]
        .clone();
    for cursor in [json!("garbage"), json!("!!!"), json!(""), device_cursor] {
        let response = app
            .gql(
                Some(&admin),
                "query($c: String) { events(after: $c) { totalCount } }",
                json!({"c": cursor}),
            )
            .await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "cursor {cursor}");
        assert!(response.body["data"].is_null());
    }
    let commands = app
        .gql(
            Some(&admin),
            "{ commands(after: \"Zm9v\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(commands.error_code(), "BAD_USER_INPUT");
    assert_eq!(app.event_count(&admin).await, 1);
}

async fn an_oversized_payload_is_refused_and_nothing_is_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "camera").await;
    let big = json!({"blob": "x".repeat(64 * 1024)});
    let just_fits = json!("y".repeat(64 * 1024 - 2));

    let single = app
        .gql(
            Some(&admin),
            "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
            json!({"i": {"deviceId": device, "service": "frame", "payload": big}}),
        )
        .await;
    assert_eq!(single.error_code(), "BAD_USER_INPUT");
    assert!(
        single.error_message().contains("65536"),
        "{}",
        single.error_message()
    );
    // In a batch, the good events are not stored either.
    let batch = app
        .gql(
            Some(&admin),
            PUBLISH_MANY,
            json!({"inputs": [
                {"deviceId": device, "service": "ok", "payload": 1},
                {"deviceId": device, "service": "frame", "payload": big},
            ]}),
        )
        .await;
    assert_eq!(batch.error_code(), "BAD_USER_INPUT");
    assert!(
        batch.error_message().starts_with("inputs[1]"),
        "{}",
        batch.error_message()
    );
    let command = app
        .gql(
            Some(&admin),
            "mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }",
            json!({"i": {"deviceId": device, "service": "x", "payload": big}}),
        )
        .await;
    assert_eq!(command.error_code(), "BAD_USER_INPUT");
    assert_eq!(app.event_count(&admin).await, 0);

    app.publish(&admin, &device, "edge", just_fits).await;
    assert_eq!(app.event_count(&admin).await, 1);
}

/// PostgreSQL's `jsonb` cannot hold U+0000; before the check, PostgreSQL
/// answered INTERNAL and SQLite stored it. Now both refuse it up front.
async fn json_with_a_nul_character_is_refused_on_both_backends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "nul").await;
    for payload in [
        json!("a\u{0}b"),
        json!({"nested": ["ok", {"deep": "\u{0}"}]}),
        json!({"key\u{0}": 1}),
    ] {
        let refused = app
            .gql(
                Some(&admin),
                "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
                json!({"i": {"deviceId": device, "service": "s", "payload": payload}}),
            )
            .await;
        assert_eq!(refused.error_code(), "BAD_USER_INPUT", "{payload}");
        assert!(
            refused.error_message().contains("U+0000"),
            "{}",
            refused.error_message()
        );
    }
    let attributes = app
        .gql(
            Some(&admin),
            "mutation($i: RegisterDeviceInput!) { registerDevice(input: $i) { id } }",
            json!({"i": {"externalId": "other", "attributes": {"name": "\u{0}"}}}),
        )
        .await;
    assert_eq!(attributes.error_code(), "BAD_USER_INPUT");
    let command = app
        .gql(
            Some(&admin),
            "mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }",
            json!({"i": {"deviceId": device, "service": "x", "payload": ["\u{0}"]}}),
        )
        .await;
    assert_eq!(command.error_code(), "BAD_USER_INPUT");
    assert_eq!(app.event_count(&admin).await, 0);
    assert_eq!(app.device_count(&admin).await, 1);
    // A backslash followed by `u0000` is just text.
    app.publish(&admin, &device, "s", json!("\\u0000")).await;
    assert_eq!(app.event_count(&admin).await, 1);
}

async fn the_payload_limit_is_configurable(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.limits.payload_bytes = 100).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "tiny").await;
    let refused = app
        .gql(
            Some(&admin),
            "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
            json!({"i": {"deviceId": device, "service": "s", "payload": "z".repeat(100)}}),
        )
        .await;
    assert_eq!(refused.error_code(), "BAD_USER_INPUT");
    app.publish(&admin, &device, "s", json!("z".repeat(90)))
        .await;
    assert_eq!(app.event_count(&admin).await, 1);
}

async fn publish_events_is_all_or_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.limits.batch_events = 10).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "d").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let mixed = app
        .gql(
            Some(&admin),
            PUBLISH_MANY,
            json!({"inputs": [
                {"deviceId": device, "service": "ok", "payload": 1},
                {"deviceId": unknown, "service": "ok", "payload": 2},
            ]}),
        )
        .await;
    assert_eq!(mixed.error_code(), "NOT_FOUND");
    let inputs: Vec<Value> = (0..11)
        .map(|_| json!({"deviceId": device, "service": "s", "payload": 0}))
        .collect();
    let too_many = app
        .gql(Some(&admin), PUBLISH_MANY, json!({"inputs": inputs}))
        .await;
    assert_eq!(too_many.error_code(), "BAD_USER_INPUT");
    assert_eq!(app.event_count(&admin).await, 0);
    let empty = app
        .gql(Some(&admin), PUBLISH_MANY, json!({"inputs": []}))
        .await;
    assert_eq!(empty.data()["publishEvents"], json!([]));
}

async fn events_filter_by_service_location_and_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let kitchen = app
        .gql(
            Some(&admin),
            "mutation { registerDevice(input: {externalId: \"k\", location: \"kitchen\"}) { id } }",
            json!({}),
        )
        .await
        .data()["registerDevice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hall = app
        .gql(
            Some(&admin),
            "mutation { registerDevice(input: {externalId: \"h\", location: \"hall\"}) { id } }",
            json!({}),
        )
        .await
        .data()["registerDevice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.publish(&admin, &kitchen, "temperature", json!(21.5))
        .await;
    app.publish(&admin, &hall, "temperature", json!(19.0)).await;
    app.publish(&admin, &hall, "motion", json!(true)).await;
    let query =
        "query($f: EventFilter) { events(filter: $f) { totalCount nodes { service payload } } }";

    let temperatures = app
        .gql(
            Some(&admin),
            query,
            json!({"f": {"services": ["temperature"]}}),
        )
        .await;
    assert_eq!(temperatures.data()["events"]["totalCount"], 2);
    let in_hall = app
        .gql(Some(&admin), query, json!({"f": {"locations": ["hall"]}}))
        .await;
    assert_eq!(
        in_hall.data()["events"]["nodes"],
        json!([{"service": "motion", "payload": true}, {"service": "temperature", "payload": 19.0}])
    );
    let both = app
        .gql(
            Some(&admin),
            query,
            json!({"f": {"deviceIds": [hall], "services": ["temperature"]}}),
        )
        .await;
    assert_eq!(both.data()["events"]["totalCount"], 1);

    let received_at = app
        .gql(
            Some(&admin),
            "{ events(first: 1) { nodes { receivedAt } } }",
            json!({}),
        )
        .await
        .data()["events"]["nodes"][0]["receivedAt"]
        .clone();
    let since = app
        .gql(Some(&admin), query, json!({"f": {"since": received_at}}))
        .await;
    assert!(since.data()["events"]["totalCount"].as_u64().unwrap() >= 1);
    let future = app
        .gql(
            Some(&admin),
            query,
            json!({"f": {"since": "2999-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(future.data()["events"]["totalCount"], 0);
    let past = app
        .gql(
            Some(&admin),
            query,
            json!({"f": {"until": "2000-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(past.data()["events"]["totalCount"], 0);
    let everything = app
        .gql(
            Some(&admin),
            query,
            json!({"f": {"since": "2000-01-01T00:00:00Z", "until": "2999-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(everything.data()["events"]["totalCount"], 3);
    let bad_time = app
        .gql(Some(&admin), query, json!({"f": {"since": "yesterday"}}))
        .await;
    assert_eq!(bad_time.error_code(), "BAD_USER_INPUT");
}

async fn an_event_reads_back_with_its_fields(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "probe").await;
    let published = app
        .gql(
            Some(&admin),
            "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
            json!({"i": {
                "deviceId": device, "service": "reading", "payload": {"v": [1, 2, 3], "ok": true},
                "occurredAt": "2026-11-01T12:00:00Z", "idempotencyKey": "r-1"
            }}),
        )
        .await;
    let id = published.data()["publishEvent"]["id"].clone();
    let read = app
        .gql(Some(&admin), "query($id: ID!) { event(id: $id) { id deviceId service payload occurredAt idempotencyKey device { externalId } } }", json!({"id": id}))
        .await;
    let event = &read.data()["event"];
    assert_eq!(event["deviceId"], device);
    assert_eq!(event["payload"], json!({"v": [1, 2, 3], "ok": true}));
    assert!(
        event["occurredAt"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-01T12:00:00")
    );
    assert_eq!(event["device"]["externalId"], "probe");
    let missing = app
        .gql(Some(&admin), "{ event(id: \"999999\") { id } }", json!({}))
        .await;
    assert_eq!(missing.error_code(), "NOT_FOUND");
    let malformed = app
        .gql(Some(&admin), "{ event(id: \"abc\") { id } }", json!({}))
        .await;
    assert_eq!(malformed.error_code(), "BAD_USER_INPUT");
}

/// The `payload.n` of each node of a connection.
fn payload_numbers(connection: &Value) -> Vec<i64> {
    connection["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["payload"]["n"].as_i64().unwrap())
        .collect()
}
