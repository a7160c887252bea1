//! GraphQL over WebSocket: the events subscription (replay, live, lag),
//! authentication at `connection_init`, tenant isolation, and garbage on the
//! socket. Clients are graphql-ws-client (graphql-transport-ws) and raw
//! sockets.

use std::time::Duration;

use ferrite_e2e::{
    Backend, TestApp, metric_sample, on_both_backends,
    ws::{
        Inbox, Op, RawSocket, close_code, close_frame, next_json, next_text, run_once, send_json,
    },
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

on_both_backends!(
    a_filtered_subscription_gets_exactly_the_matching_events_in_order,
    a_bad_token_closes_the_socket_with_4403,
    connection_init_takes_every_shape_clients_send,
    a_members_subscription_never_sees_another_members_events,
    reconnecting_with_after_receives_everything_missed,
    replay_switches_to_live_without_gap_or_duplicate_under_load,
    a_subscriber_that_stops_reading_gets_every_event_exactly_once,
    garbage_on_the_socket_gets_the_protocols_close_codes,
    queries_and_mutations_run_over_the_socket,
    the_legacy_protocol_works,
    a_connection_closes_when_its_token_expires_unless_renewed,
    revoking_an_api_key_closes_its_connections,
    resuming_below_retention_gets_the_gap_signal_first,
    subscriptions_send_events_exactly_as_queries_render_them,
    device_and_command_subscriptions_send_exactly_what_async_graphql_sends,
);

const EVENTS: &str = "subscription($f: EventFilter, $after: ID) { events(filter: $f, after: $after) { id deviceId service payload } }";

/// Reads `n` events from a subscription stream, failing after 60 s.
async fn take_events<S>(stream: &mut S, n: usize) -> Vec<Value>
where
    S: futures_util::Stream<Item = Result<Value, graphql_ws_client::Error>> + Unpin,
{
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived", events.len()))
            .expect("the subscription is open")
            .expect("a response");
        assert!(item.get("errors").is_none(), "{item}");
        events.push(item["data"]["events"].clone());
    }
    events
}

fn ids(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Publishes events with payloads `{"n": from}` … `{"n": from + count - 1}`,
/// 1000 per call (the default batch limit).
async fn publish_batch(
    app: &TestApp,
    token: &str,
    device: &str,
    service: &str,
    from: usize,
    count: usize,
) {
    let numbers: Vec<usize> = (from..from + count).collect();
    for chunk in numbers.chunks(1000) {
        let inputs: Vec<Value> = chunk
            .iter()
            .map(|n| json!({"deviceId": device, "service": service, "payload": {"n": n}}))
            .collect();
        app.gql(
            Some(token),
            "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
            json!({"i": inputs}),
        )
        .await
        .data();
    }
}

async fn a_filtered_subscription_gets_exactly_the_matching_events_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let thermo = app.register_device(&admin, "thermo").await;
    let switch = app.register_device(&admin, "switch").await;

    let subscriber = app.ws_client(&admin, None).await.expect("the socket opens");
    let mut stream = subscriber
        .subscribe(Op::new(
            EVENTS,
            json!({"f": {"deviceIds": [thermo], "services": ["temperature"]}, "after": "0"}),
        ))
        .await
        .expect("subscribed");
    // Publish from another socket, interleaving matching and other events.
    let publisher = app.ws_client(&admin, None).await.unwrap();
    let publish = "mutation($i: EventInput!) { publishEvent(input: $i) { id } }";
    for n in 0..10 {
        for (device, service) in [
            (&thermo, "temperature"),
            (&switch, "temperature"),
            (&thermo, "humidity"),
        ] {
            let mut result = publisher
                .subscribe(Op::new(
                    publish,
                    json!({"i": {"deviceId": device, "service": service, "payload": {"n": n}}}),
                ))
                .await
                .unwrap();
            let answer = result.next().await.unwrap().unwrap();
            assert!(answer.get("errors").is_none(), "{answer}");
        }
    }
    let events = take_events(&mut stream, 10).await;
    let numbers: Vec<i64> = events
        .iter()
        .map(|e| e["payload"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (0..10).collect::<Vec<_>>());
    assert!(
        events
            .iter()
            .all(|e| e["deviceId"] == thermo.as_str() && e["service"] == "temperature")
    );
    // And nothing else arrives.
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(extra.is_err(), "an unexpected event arrived: {extra:?}");
}

/// Apollo's `authToken`, Hasura's `headers`, lower case, a bare token: each
/// opens a session, for an access token and an API key alike; another
/// scheme is refused with a reason naming what is expected.
async fn connection_init_takes_every_shape_clients_send(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let key = app.create_api_key(&admin, "READ").await;
    for token in [admin.as_str(), key.as_str()] {
        let bearer = format!("Bearer {token}");
        for payload in [
            json!({"Authorization": bearer}),
            json!({"authorization": bearer}),
            json!({"Authorization": token}),
            json!({"authToken": token}),
            json!({"token": bearer}),
            json!({"headers": {"Authorization": bearer}}),
            json!({"headers": {"authorization": token}}),
        ] {
            let mut socket = app.raw_socket("graphql-transport-ws").await;
            send_json(
                &mut socket,
                json!({"type": "connection_init", "payload": payload}),
            )
            .await;
            let answer = next_json(&mut socket).await;
            assert_eq!(answer["type"], "connection_ack", "{payload}: {answer}");
            let me = run_raw(&mut socket, "{ me { user { username } } }").await;
            assert_eq!(me["data"]["me"]["user"]["username"], "admin", "{payload}");
        }
    }
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Basic {admin}")}}),
    )
    .await;
    let closed = socket.next().await;
    match closed {
        Some(Ok(tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4403);
            assert!(frame.reason.contains("authToken"), "{}", frame.reason);
        }
        other => panic!("expected a 4403 close, got {other:?}"),
    }
}

/// Runs one query over an initialised raw socket; its `next` payload.
async fn run_raw(socket: &mut RawSocket, query: &str) -> Value {
    send_json(
        socket,
        json!({"type": "subscribe", "id": "q", "payload": {"query": query}}),
    )
    .await;
    let answer = next_json(socket).await;
    assert_eq!(answer["type"], "next", "{answer}");
    assert_eq!(next_json(socket).await["type"], "complete");
    answer["payload"].clone()
}

async fn a_bad_token_closes_the_socket_with_4403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    // A revoked key is one of the bad tokens.
    let (key, key_id) = app.create_api_key_with_id(&admin, "READ").await;
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({"id": key_id}),
    )
    .await
    .data();
    for token in ["garbage", "a.b.c", key.as_str()] {
        match app.ws_client(token, None).await {
            Err(graphql_ws_client::Error::Close(code, _)) => {
                assert_eq!(code, 4403, "token {token}")
            }
            Err(other) => panic!("token {token}: expected close 4403, got {other}"),
            Ok(_) => panic!("token {token} was accepted"),
        }
    }
    // No token at all.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {}}),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(4403));
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, json!({"type": "connection_init"})).await;
    assert_eq!(close_code(&mut socket).await, Some(4403));
    // A good token with a connector id no gateway could mean.
    let too_long = "g".repeat(129);
    for connector_id in ["", too_long.as_str(), "gw\n1", "gw\u{0}", "gw\u{1b}[31m"] {
        match app.ws_client(&admin, Some(connector_id)).await {
            Err(graphql_ws_client::Error::Close(code, reason)) => {
                assert_eq!(code, 4403, "connectorId {connector_id:?}");
                assert!(reason.contains("connectorId"), "{reason}");
            }
            Err(other) => panic!("connectorId {connector_id:?}: expected 4403, got {other}"),
            Ok(_) => panic!("connectorId {connector_id:?} was accepted"),
        }
    }
    // The longest allowed one is a session.
    let longest = "g".repeat(128);
    assert!(app.ws_client(&admin, Some(&longest)).await.is_ok());
}

async fn a_members_subscription_never_sees_another_members_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.create_member("alice").await;
    let mallory = app.create_member("mallory").await;
    let alices_device = app.register_device(&alice, "door").await;
    let mallorys_device = app.register_device(&mallory, "probe").await;

    let spy = app.ws_client(&mallory, None).await.unwrap();
    // Even naming Alice's device in the filter shows nothing of hers.
    let mut everything = spy
        .subscribe(Op::new(EVENTS, json!({"after": "0"})))
        .await
        .unwrap();
    let mut targeted = spy
        .subscribe(Op::new(
            EVENTS,
            json!({"f": {"deviceIds": [alices_device]}, "after": "0"}),
        ))
        .await
        .unwrap();
    app.publish(&alice, &alices_device, "unlocked", json!(true))
        .await;
    app.publish(&mallory, &mallorys_device, "ping", json!(1))
        .await;
    app.publish(&alice, &alices_device, "locked", json!(true))
        .await;

    let seen = take_events(&mut everything, 1).await;
    assert_eq!(seen[0]["service"], "ping");
    let more = tokio::time::timeout(Duration::from_millis(300), everything.next()).await;
    assert!(more.is_err(), "mallory saw more: {more:?}");
    let targeted_seen = tokio::time::timeout(Duration::from_millis(300), targeted.next()).await;
    assert!(
        targeted_seen.is_err(),
        "mallory saw alice's device: {targeted_seen:?}"
    );
}

async fn reconnecting_with_after_receives_everything_missed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "meter").await;
    publish_batch(&app, &admin, &device, "kwh", 0, 5).await;

    let client = app.ws_client(&admin, None).await.unwrap();
    let mut stream = client
        .subscribe(Op::new(EVENTS, json!({"after": "0"})))
        .await
        .unwrap();
    let first = take_events(&mut stream, 5).await;
    let last_id = first.last().unwrap()["id"].clone();
    drop(stream);
    client.close(1000, "going away").await;

    // While the client is away.
    publish_batch(&app, &admin, &device, "kwh", 5, 1500).await;

    let client = app.ws_client(&admin, None).await.unwrap();
    let mut stream = client
        .subscribe(Op::new(EVENTS, json!({"after": last_id})))
        .await
        .unwrap();
    let missed = take_events(&mut stream, 1500).await;
    let numbers: Vec<i64> = missed
        .iter()
        .map(|e| e["payload"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (5..1505).collect::<Vec<_>>());
    // Then live.
    app.publish(&admin, &device, "kwh", json!({"n": 1505}))
        .await;
    let live = take_events(&mut stream, 1).await;
    assert_eq!(live[0]["payload"]["n"], 1505);
}

async fn replay_switches_to_live_without_gap_or_duplicate_under_load(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "busy").await;
    publish_batch(&app, &admin, &device, "tick", 0, 2000).await;

    // A publisher keeps going while the subscriber replays and switches to live.
    let publisher = app.spawn_publisher(&admin, &device, 2000, 50, |n| json!({"n": 2000 + n}));
    let client = app.ws_client(&admin, None).await.unwrap();
    let mut stream = client
        .subscribe(Op::new(EVENTS, json!({"after": "0"})))
        .await
        .unwrap();
    let events = take_events(&mut stream, 4000).await;
    publisher.await.unwrap();
    let numbers: Vec<i64> = events
        .iter()
        .map(|e| e["payload"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (0..4000).collect::<Vec<_>>(),
        "every event once, in order"
    );
    let ids = ids(&events);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(extra.is_err(), "a duplicate arrived: {extra:?}");
}

async fn a_subscriber_that_stops_reading_gets_every_event_exactly_once(backend: Backend) {
    // A small ring, so the slow subscriber is sure to lag.
    let app = TestApp::spawn_with(backend, |config| config.bus.capacity = 256).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "firehose").await;
    let client = app.ws_client(&admin, None).await.unwrap();
    // `after` makes the start independent of when the server begins the
    // subscription: everything from the first event on is replayed.
    let mut stream = client
        .subscribe(Op::new(EVENTS, json!({"after": "0"})))
        .await
        .unwrap();
    // Make sure the subscription is live before publishing.
    publish_batch(&app, &admin, &device, "warmup", 0, 1).await;
    take_events(&mut stream, 1).await;

    // The subscriber does not read while 50 000 events are published.
    const TOTAL: usize = 50_000;
    publish_batch(&app, &admin, &device, "burst", 0, TOTAL).await;
    let events = take_events(&mut stream, TOTAL).await;
    let numbers: Vec<i64> = events
        .iter()
        .map(|e| e["payload"]["n"].as_i64().unwrap())
        .collect();
    assert!(
        numbers.iter().copied().eq(0..TOTAL as i64),
        "events missing, duplicated or out of order"
    );
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(extra.is_err(), "a duplicate arrived: {extra:?}");
    // And the operator can see that it happened.
    let (_, metrics) = app.scrape_metrics(Some(&admin)).await;
    let catch_ups = metric_sample(&metrics, "ferrite_subscriber_catch_ups_total");
    assert!(catch_ups >= Some(1.0), "{catch_ups:?}");
}

async fn garbage_on_the_socket_gets_the_protocols_close_codes(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.websocket.init_timeout_seconds = 1;
        config.websocket.max_message_bytes = 64 * 1024;
        config.websocket.max_subscriptions = 2;
    })
    .await;
    let admin = app.admin_token().await;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {admin}")}});

    // Not JSON.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    socket
        .send(tungstenite::Message::Text("{{{ not json".into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, Some(4400));
    // An unknown message type, before and after init.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, json!({"type": "hello"})).await;
    assert_eq!(close_code(&mut socket).await, Some(4400));
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init.clone()).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send_json(
        &mut socket,
        json!({"type": "start", "id": "1", "payload": {"query": "{ __typename }"}}),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(4400));
    // Binary frames.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    socket
        .send(tungstenite::Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, Some(4400));
    // Subscribe before init.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(
        &mut socket,
        json!({"type": "subscribe", "id": "1", "payload": {"query": "{ __typename }"}}),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(4401));
    // A second init.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init.clone()).await;
    next_json(&mut socket).await;
    send_json(&mut socket, init.clone()).await;
    assert_eq!(close_code(&mut socket).await, Some(4429));
    // Duplicate operation ids.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init.clone()).await;
    next_json(&mut socket).await;
    let subscribe = json!({"type": "subscribe", "id": "same", "payload": {"query": "subscription { events { id } }"}});
    send_json(&mut socket, subscribe.clone()).await;
    send_json(&mut socket, subscribe).await;
    assert_eq!(close_code(&mut socket).await, Some(4409));
    // Too many operations: an error for the extra one, the socket stays.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init.clone()).await;
    next_json(&mut socket).await;
    for id in ["a", "b", "c"] {
        send_json(&mut socket, json!({"type": "subscribe", "id": id, "payload": {"query": "subscription { events { id } }"}})).await;
    }
    let refused = next_json(&mut socket).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["id"], "c");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    // A frame over the size limit.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init.clone()).await;
    next_json(&mut socket).await;
    let huge = json!({"type": "subscribe", "id": "1", "payload": {"query": "{ __typename }", "variables": {"pad": "x".repeat(100 * 1024)}}});
    let _ = socket
        .send(tungstenite::Message::Text(huge.to_string().into()))
        .await;
    assert_eq!(close_code(&mut socket).await, Some(1009));
    // No init at all.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    assert_eq!(close_code(&mut socket).await, Some(4408));
    // An invalid operation is an `error` message, and the socket stays open.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init).await;
    next_json(&mut socket).await;
    send_json(
        &mut socket,
        json!({"type": "subscribe", "id": "x", "payload": {"query": "subscription { nosuch }"}}),
    )
    .await;
    let error = next_json(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await["type"], "pong");

    // The server is healthy for everyone else.
    let client = app.ws_client(&admin, None).await.unwrap();
    let mut answer = client
        .subscribe(Op::new("{ me { permission } }", json!({})))
        .await
        .unwrap();
    let answer = answer.next().await.unwrap().unwrap();
    assert_eq!(answer["data"]["me"]["permission"], "ADMIN");
}

async fn queries_and_mutations_run_over_the_socket(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let client = app.ws_client(&admin, None).await.unwrap();
    let registered = run_once(
        &client,
        "mutation { registerDevice(input: {externalId: \"over-ws\"}) { id } }",
        json!({}),
    )
    .await;
    assert!(
        registered["data"]["registerDevice"]["id"].is_string(),
        "{registered}"
    );
    let mut listed = client
        .subscribe(Op::new("{ devices { totalCount } }", json!({})))
        .await
        .unwrap();
    assert_eq!(
        listed.next().await.unwrap().unwrap()["data"]["devices"]["totalCount"],
        1
    );
    // A query completes after its one result.
    assert!(listed.next().await.is_none());
    // A READ key's socket cannot mutate.
    let reader = app.create_api_key(&admin, "READ").await;
    let client = app.ws_client(&reader, None).await.unwrap();
    let refused = run_once(
        &client,
        "mutation { registerDevice(input: {externalId: \"nope\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(app.device_count(&admin).await, 1);
}

async fn the_legacy_protocol_works(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "old-client").await;
    let mut socket = app.raw_socket("graphql-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {admin}")}}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send_json(&mut socket, json!({"type": "start", "id": "1", "payload": {"query": "subscription { events(after: \"0\") { service } }"}})).await;
    app.publish(&admin, &device, "legacy", json!(1)).await;
    let data = loop {
        let message = next_json(&mut socket).await;
        if message["type"] != "ka" {
            break message;
        }
    };
    assert_eq!(
        data,
        json!({"type": "data", "id": "1", "payload": {"data": {"events": {"service": "legacy"}}}})
    );
    send_json(&mut socket, json!({"type": "stop", "id": "1"})).await;
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "complete", "id": "1"})
    );
    // A bad token: connection_error, then 4403.
    let mut socket = app.raw_socket("graphql-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {"authorization": "Bearer nope"}}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_error");
    assert_eq!(close_code(&mut socket).await, Some(4403));
}

async fn a_connection_closes_when_its_token_expires_unless_renewed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.access_token_ttl_seconds = 4).await;
    let admin = app.admin_token().await;
    let init = |token: &str| json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});

    // Not renewed: closed with 4403 once the token runs out, with a reason
    // that tells expiry (refresh, reconnect) from a bad credential (stop).
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init(&admin)).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let (code, reason) = close_frame(&mut socket).await.unwrap();
    assert_eq!(code, 4403);
    assert!(reason.starts_with("the token has expired"), "{reason}");
    // Presenting the expired token again: closed, saying why (at once, or
    // right after the ack while within the validation leeway).
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init(&admin)).await;
    let (code, reason) = close_frame(&mut socket).await.unwrap();
    assert_eq!(code, 4403);
    assert!(reason.contains("expired"), "{reason}");
    // A forged one: a different reason.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init("not-a-token")).await;
    let (code, reason) = close_frame(&mut socket).await.unwrap();
    assert_eq!(code, 4403);
    assert!(!reason.contains("expired"), "{reason}");

    // Renewed in time with a newer access token of the same user: the
    // connection outlives the token it was opened with.
    let admin = app.admin_token().await;
    let key = app.create_api_key(&admin, "READ").await;
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init(&admin)).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let newer = app.admin_token().await;
    let renew = "mutation($t: String!) { renewConnection(token: $t) }";
    send_json(&mut socket, json!({"type": "subscribe", "id": "renew", "payload": {"query": renew, "variables": {"t": newer}}})).await;
    let renewed = next_json(&mut socket).await;
    assert!(
        renewed["payload"]["data"]["renewConnection"].is_string(),
        "{renewed}"
    );
    assert_eq!(next_json(&mut socket).await["type"], "complete");
    // Past the first token's expiry, before the newer one's.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send_json(&mut socket, json!({"type": "subscribe", "id": "q", "payload": {"query": "{ me { user { username } } }"}})).await;
    let answer = next_json(&mut socket).await;
    assert_eq!(
        answer["payload"]["data"]["me"]["user"]["username"], "admin",
        "{answer}"
    );
    assert_eq!(next_json(&mut socket).await["type"], "complete");

    // An API key of the same user cannot make the connection permanent: it
    // is refused, and the connection still ends with its access token.
    send_json(&mut socket, json!({"type": "subscribe", "id": "key", "payload": {"query": renew, "variables": {"t": key}}})).await;
    let refused = next_json(&mut socket).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    assert_eq!(close_code(&mut socket).await, Some(4403));

    // A connection opened with an API key has nothing to renew.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init(&key)).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let admin = app.admin_token().await;
    send_json(&mut socket, json!({"type": "subscribe", "id": "renew", "payload": {"query": renew, "variables": {"t": admin}}})).await;
    let refused = next_json(&mut socket).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );

    // Another user's token is refused, and so is renewing over HTTP.
    let admin = app.admin_token().await;
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init(&admin)).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let alice = app.create_member("alice").await;
    send_json(&mut socket, json!({"type": "subscribe", "id": "other", "payload": {"query": renew, "variables": {"t": alice}}})).await;
    let refused = loop {
        let message = next_json(&mut socket).await;
        if message["id"] == "other" && message["type"] == "next" {
            break message;
        }
    };
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"],
        "FORBIDDEN"
    );
    let over_http = app.gql(Some(&alice), renew, json!({"t": alice})).await;
    assert_eq!(over_http.error_code(), "BAD_USER_INPUT");
}

async fn revoking_an_api_key_closes_its_connections(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let (secret, key_id) = app.create_api_key_with_id(&admin, "WRITE").await;
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {secret}")}})).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    // A session-based connection of the same user stays.
    let bystander = app.ws_client(&admin, None).await.unwrap();

    app.gql(
        Some(&admin),
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({"id": key_id}),
    )
    .await
    .data();
    assert_eq!(close_code(&mut socket).await, Some(4403));
    let still = ferrite_e2e::ws::run_once(&bystander, "{ me { permission } }", json!({})).await;
    assert_eq!(still["data"]["me"]["permission"], "ADMIN");
}

async fn resuming_below_retention_gets_the_gap_signal_first(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.retention.max_age_seconds = 3;
        config.retention.check_seconds = 1;
    })
    .await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "old").await;
    publish_batch(&app, &admin, &device, "n", 0, 5).await;
    // Retention deletes them after 3 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.event_count(&admin).await > 0 {
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The device's status history (OFFLINE since registration, older than
    // its events) went with them.
    let history = app
        .gql(
            Some(&admin),
            "query($id: ID!) { device(id: $id) { statusHistory { status } } }",
            json!({"id": device}),
        )
        .await;
    assert_eq!(history.data()["device"]["statusHistory"], json!([]));
    publish_batch(&app, &admin, &device, "n", 5, 3).await;

    let client = app.ws_client(&admin, None).await.unwrap();
    // Resuming from id 2: ids 3 to 5 are gone. The signal comes first.
    let mut stream = client
        .subscribe(Op::new(EVENTS, json!({"after": "2"})))
        .await
        .unwrap();
    let first = ferrite_e2e::ws::next_item(&mut stream).await;
    assert_eq!(
        first["errors"][0]["extensions"]["code"], "EVENTS_PRUNED",
        "{first}"
    );
    assert_eq!(first["errors"][0]["extensions"]["prunedThrough"], "5");
    assert_eq!(first["data"], Value::Null);
    assert_eq!(first["errors"][0]["path"], json!(["events"]));
    let column = EVENTS.find("events(").unwrap() + 1;
    assert_eq!(
        first["errors"][0]["locations"],
        json!([{"line": 1, "column": column}])
    );
    // The same signal from a subscription async-graphql executes (it asks
    // for the device) as from the compiled one above.
    let executed = EVENTS.replace("payload }", "payload device { id } }");
    let mut executed = client
        .subscribe(Op::new(&executed, json!({"after": "2"})))
        .await
        .unwrap();
    assert_eq!(ferrite_e2e::ws::next_item(&mut executed).await, first);
    let rest = take_events(&mut stream, 3).await;
    let numbers: Vec<i64> = rest
        .iter()
        .map(|e| e["payload"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [5, 6, 7]);
    // Resuming at or above what was deleted: no signal.
    let mut stream = client
        .subscribe(Op::new(EVENTS, json!({"after": "5"})))
        .await
        .unwrap();
    let first = ferrite_e2e::ws::next_item(&mut stream).await;
    assert!(first.get("errors").is_none(), "{first}");
    assert_eq!(first["data"]["events"]["payload"]["n"], 5);
}

/// Selection sets of `Event` (with the variables they declare) that the
/// server delivers without executing them per event (scalar fields,
/// aliases, fragments, `@skip`/`@include`), and one it executes
/// (`device`).
const SELECTIONS: &[(&str, &str, &str)] = &[
    (
        "",
        "{ id deviceId service payload occurredAt receivedAt idempotencyKey __typename }",
        "",
    ),
    ("", "{ a: payload b: id t: __typename }", ""),
    // The same again: a second subscriber sharing the first one's rendering.
    ("", "{ a: payload b: id t: __typename }", ""),
    (
        "$on: Boolean!",
        "{ ...F id ... on Event { service } ... @include(if: $on) { receivedAt } ... @skip(if: $on) { occurredAt } }",
        "fragment F on Event { payload id }",
    ),
    (
        "$off: Boolean",
        "{ id @include(if: $off) service @skip(if: $off) payload id ... { id } }",
        "",
    ),
    // Executed: async-graphql orders fields as they resolve (`device` reads
    // the store), so only the values are compared.
    ("", "{ id device { externalId } payload }", ""),
];

/// The selection of `SELECTIONS` that async-graphql executes.
const EXECUTED: usize = 5;

/// The object inside a response text: what follows `"<key>":` after
/// `"data":{`, up to the closing braces of `data` and the response.
fn data_object<'a>(text: &'a str, key: &str, closing: &str) -> &'a str {
    let start = format!("\"data\":{{\"{key}\":");
    let at = text
        .find(&start)
        .unwrap_or_else(|| panic!("no {start} in {text}"));
    text[at + start.len()..]
        .strip_suffix(closing)
        .unwrap_or_else(|| panic!("{text} does not end with {closing}"))
}

async fn subscriptions_send_events_exactly_as_queries_render_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "odd-payloads").await;
    let payloads = [
        json!({
            "text": "quote \" backslash \\ newline \n tab \t crab \u{1F980} bell \u{7} <script>",
            "negative zero": -0.0, "big": u64::MAX, "huge": 1.5e300, "tiny": 1e-7, "neg": -42,
            "list": [1, "x", null, true, {"k": []}],
            "nested": {"z": 1, "a": {"b": {}}},
        }),
        json!("just a string"),
        json!(42.25),
        json!([null, false]),
    ];
    let publish_all = |round: &'static str| {
        let (app, admin, device, payloads) = (&app, &admin, &device, payloads.clone());
        async move {
            let inputs: Vec<Value> = payloads
                .iter()
                .enumerate()
                .map(|(n, payload)| {
                    let mut input =
                        json!({"deviceId": device, "service": "odd", "payload": payload});
                    if n % 2 == 0 {
                        input["occurredAt"] = json!("2026-01-02T03:04:05.678+02:00");
                        input["idempotencyKey"] = json!(format!("{round}-{n}"));
                    }
                    input
                })
                .collect();
            let published = app
                .gql(
                    Some(admin),
                    "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
                    json!({"i": inputs}),
                )
                .await;
            assert!(published.body.get("errors").is_none(), "{}", published.body);
        }
    };
    // Stored before anyone subscribes: replayed from the store.
    publish_all("stored").await;

    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {admin}")}}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let variables = json!({"on": true, "off": false, "after": "0"});
    for (n, (declared, selection, fragments)) in SELECTIONS.iter().enumerate() {
        let declared = if declared.is_empty() {
            "$after: ID".to_owned()
        } else {
            format!("$after: ID, {declared}")
        };
        let query = format!(
            "subscription({declared}) {{ ev: events(after: $after) {selection} }} {fragments}"
        );
        send_json(
            &mut socket,
            json!({"type": "subscribe", "id": format!("s{n}"),
                   "payload": {"query": query, "variables": variables}}),
        )
        .await;
    }
    // Each subscription replays the stored events, then gets the ones
    // published now live.
    let mut received = Vec::new();
    let per_round = SELECTIONS.len() * payloads.len();
    while received.len() < per_round {
        received.push(next_text(&mut socket).await);
    }
    publish_all("live").await;
    while received.len() < 2 * per_round {
        received.push(next_text(&mut socket).await);
    }

    for text in &received {
        let message: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(message["type"], "next", "{text}");
        let n: usize = message["id"].as_str().unwrap()[1..].parse().unwrap();
        let event = &message["payload"]["data"]["ev"];
        let id = event
            .get("id")
            .or_else(|| event.get("b"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("every selection asks for the id: {text}"));
        let (declared, selection, fragments) = SELECTIONS[n];
        let declared = if declared.is_empty() {
            "$id: ID!".to_owned()
        } else {
            format!("$id: ID!, {declared}")
        };
        let query = format!("query({declared}) {{ event(id: $id) {selection} }} {fragments}");
        let mut query_variables = json!({"id": id});
        if declared.contains("$on") {
            query_variables["on"] = variables["on"].clone();
        }
        if declared.contains("$off") {
            query_variables["off"] = variables["off"].clone();
        }
        let expected = app.gql_text(&admin, &query, query_variables).await;
        let (sent, rendered) = (
            data_object(text, "ev", "}}}"),
            data_object(&expected, "event", "}}"),
        );
        let context =
            format!("selection {n} `{selection}`: subscription {text} vs query {expected}");
        if n == EXECUTED {
            let parse = |text| serde_json::from_str::<Value>(text).expect("JSON");
            assert_eq!(parse(sent), parse(rendered), "{context}");
        } else {
            assert_eq!(sent, rendered, "{context}");
        }
    }
}

/// Selection sets of `DeviceChange` the server delivers without executing
/// them per change (with the variables they declare).
const DEVICE_SELECTIONS: &[(&str, &str, &str)] = &[
    (
        "",
        "{ kind __typename device { id externalId name type location attributes status \
         connectorId lastSeenAt ownerId createdAt updatedAt __typename } }",
        "",
    ),
    (
        "",
        "{ k: kind d: device { ...D } device { name } }",
        "fragment D on Device { n: name id ... on Device { status } }",
    ),
    // The same again: a second subscriber sharing the first one's rendering.
    (
        "",
        "{ k: kind d: device { ...D } device { name } }",
        "fragment D on Device { n: name id ... on Device { status } }",
    ),
    (
        "$on: Boolean!",
        "{ ... @include(if: $on) { kind } device { id location @skip(if: $on) attributes \
         ... on Device @skip(if: $on) { name } ... on Device { lastSeenAt } } }",
        "",
    ),
];

/// Selection sets of `Command` the server delivers without executing them.
const COMMAND_SELECTIONS: &[(&str, &str, &str)] = &[
    (
        "",
        "{ id deviceId service payload status result createdAt updatedAt expiresAt \
         deliveredAt respondedAt __typename }",
        "",
    ),
    (
        "$on: Boolean!",
        "{ s: status ...C r: result @include(if: $on) id @skip(if: $on) ... { id } }",
        "fragment C on Command { payload status }",
    ),
];

/// Subscribes operation `id` on `socket`: `root` (a subscription field with
/// its arguments) with the selection, declaring `$on` and `extra` as given.
/// `executed`: with `@skip(if: false)` on the root field, which the server
/// leaves to async-graphql to execute, the reference to compare with.
async fn subscribe_selection(
    socket: &mut RawSocket,
    id: &str,
    root: &str,
    (declared, selection, fragments): (&str, &str, &str),
    extra: &str,
    variables: &Value,
    executed: bool,
) {
    let declared: Vec<&str> = [declared, extra]
        .into_iter()
        .filter(|d| !d.is_empty())
        .collect();
    let declared = if declared.is_empty() {
        String::new()
    } else {
        format!("({})", declared.join(", "))
    };
    let directive = if executed { " @skip(if: false)" } else { "" };
    let query = format!("subscription{declared} {{ {root}{directive} {selection} }} {fragments}");
    send_json(
        socket,
        json!({"type": "subscribe", "id": id, "payload": {"query": query, "variables": variables}}),
    )
    .await;
}

/// Runs a mutation over a raw session as operation `id`; returns its data.
async fn mutate(
    socket: &mut RawSocket,
    inbox: &mut Inbox,
    id: &str,
    query: &str,
    variables: Value,
) -> Value {
    send_json(
        socket,
        json!({"type": "subscribe", "id": id, "payload": {"query": query, "variables": variables}}),
    )
    .await;
    inbox
        .read_until(socket, |inbox| inbox.completed.contains(id))
        .await;
    let response: Value = serde_json::from_str(&inbox.of(id)[0]).expect("JSON");
    assert!(response.get("errors").is_none(), "{response}");
    response["data"].clone()
}

/// `deviceChanged`, `commands` and `commandUpdated` are delivered compiled
/// (see `events` above); what they send must be, byte for byte, what
/// async-graphql sends for the same selection: each compiled subscription
/// runs beside the same one executed by async-graphql, through every kind
/// of change, with awkward text and JSON.
async fn device_and_command_subscriptions_send_exactly_what_async_graphql_sends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let variables = json!({"on": true});
    let odd = json!({
        "text": "quote \" backslash \\ newline \n crab \u{1F980} bell \u{7} </script>",
        "negative zero": -0.0, "big": u64::MAX, "huge": 1.5e300, "list": [1, null, {"k": []}],
    });

    // Devices.
    let mut watcher = app.raw_session(&admin, None).await;
    let mut watched = Inbox::default();
    let mut ids = Vec::new();
    for (n, selection) in DEVICE_SELECTIONS.iter().enumerate() {
        for (id, executed) in [(format!("c{n}"), false), (format!("x{n}"), true)] {
            subscribe_selection(
                &mut watcher,
                &id,
                "d: deviceChanged",
                *selection,
                "",
                &variables,
                executed,
            )
            .await;
            ids.push(id);
        }
    }
    // A subscription is live once it reports a change.
    for attempt in 0.. {
        assert!(
            attempt < 40,
            "the subscriptions never became live: {watched:?}"
        );
        app.register_device(&admin, &format!("probe-{attempt}"))
            .await;
        watched
            .read_for(&mut watcher, Duration::from_millis(300))
            .await;
        if ids.iter().all(|id| !watched.of(id).is_empty()) {
            break;
        }
    }
    // From here on every subscription sees every change.
    let start = app.register_device(&admin, "start").await;

    let mut gateway = app.raw_session(&admin, Some("gateway-\u{e9}")).await;
    let mut answers = Inbox::default();
    let registered = mutate(
        &mut gateway,
        &mut answers,
        "register",
        "mutation($a: JSON) { registerDevice(input: {externalId: \"s\u{e9}nsor \\\"1\\\"\", \
         type: \"thermo\", location: \"lab <2>\", attributes: $a}) { id status } }",
        json!({"a": odd}),
    )
    .await;
    assert_eq!(registered["registerDevice"]["status"], "ONLINE");
    let device = registered["registerDevice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let updated = app
        .gql(
            Some(&admin),
            "mutation($id: ID!, $n: String, $a: JSON) { updateDevice(id: $id, input: \
             {name: $n, location: null, attributes: $a}) { id } }",
            json!({"id": device, "n": "say \"hi\" \\ \u{1F321} \u{2028}", "a": [1.5, -0.0, {}]}),
        )
        .await;
    assert!(updated.body.get("errors").is_none(), "{}", updated.body);
    for mutation in [
        "mutation($id: ID!) { disconnectDevice(id: $id) { id } }",
        "mutation($id: ID!) { deleteDevice(id: $id) }",
    ] {
        let done = app.gql(Some(&admin), mutation, json!({"id": device})).await;
        assert!(done.body.get("errors").is_none(), "{}", done.body);
    }
    let end = app.register_device(&admin, "end").await;
    watched
        .read_until(&mut watcher, |inbox| {
            ids.iter()
                .all(|id| inbox.of(id).iter().any(|p| p.contains(&end)))
        })
        .await;

    for (n, (_, selection, _)) in DEVICE_SELECTIONS.iter().enumerate() {
        let since_start = |id: String| -> Vec<String> {
            let payloads = watched.of(&id);
            let first = payloads
                .iter()
                .position(|p| p.contains(&start))
                .unwrap_or_else(|| panic!("{id} never saw the start: {payloads:?}"));
            payloads[first..].to_vec()
        };
        let (compiled, executed) = (since_start(format!("c{n}")), since_start(format!("x{n}")));
        assert_eq!(compiled, executed, "selection {n}: {selection}");
        // start, REGISTERED, UPDATED, STATUS, DELETED, end.
        assert_eq!(compiled.len(), 6, "{compiled:#?}");
    }
    let kinds: Vec<Value> = watched.of("c0")[watched.of("c0").len() - 6..]
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).unwrap()["data"]["d"]["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "REGISTERED",
            "REGISTERED",
            "UPDATED",
            "STATUS",
            "DELETED",
            "REGISTERED"
        ]
    );

    // Commands: two for the gateway's device, queued before it subscribes,
    // and one for a device no gateway hosts, which expires.
    let relay = mutate(
        &mut gateway,
        &mut answers,
        "relay",
        "mutation { registerDevice(input: {externalId: \"relay\"}) { id } }",
        json!({}),
    )
    .await["registerDevice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let orphan = app.register_device(&admin, "orphan").await;
    let send = |device: String, payload: Value, timeout: i64| {
        let (app, admin) = (&app, &admin);
        async move {
            let sent = app
                .gql(
                    Some(admin),
                    "mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }",
                    json!({"i": {"deviceId": device, "service": "s\u{e9}t \"x\"", "payload": payload,
                                 "timeoutSeconds": timeout}}),
                )
                .await;
            sent.data()["sendCommand"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let succeeding = send(relay.clone(), odd.clone(), 300).await;
    let failing = send(relay.clone(), json!(null), 300).await;
    let expiring = send(orphan, json!([true]), 4).await;
    let commands = [&succeeding, &failing, &expiring];

    let mut ids = Vec::new();
    for (c, command) in commands.iter().enumerate() {
        let vars = json!({"on": true, "id": command});
        for (n, selection) in COMMAND_SELECTIONS.iter().enumerate() {
            for (id, executed) in [(format!("c{c}-{n}"), false), (format!("x{c}-{n}"), true)] {
                subscribe_selection(
                    &mut watcher,
                    &id,
                    "c: commandUpdated(id: $id)",
                    *selection,
                    "$id: ID!",
                    &vars,
                    executed,
                )
                .await;
                ids.push(id);
            }
        }
    }
    // Each starts with the command as it is (PENDING): wait for all before
    // anything changes.
    watched
        .read_until(&mut watcher, |inbox| {
            ids.iter().all(|id| !inbox.of(id).is_empty())
        })
        .await;

    // The gateway takes its two queued commands, each compared with what a
    // query renders (nothing changes them until they are answered).
    subscribe_selection(
        &mut gateway,
        "work",
        "w: commands",
        COMMAND_SELECTIONS[0],
        "",
        &json!({}),
        false,
    )
    .await;
    answers
        .read_until(&mut gateway, |inbox| inbox.of("work").len() == 2)
        .await;
    for payload in answers.of("work") {
        let command: Value = serde_json::from_str(payload).unwrap();
        let id = command["data"]["w"]["id"].clone();
        let query = format!(
            "query($id: ID!) {{ command(id: $id) {} }}",
            COMMAND_SELECTIONS[0].1
        );
        let expected = app.gql_text(&admin, &query, json!({"id": id})).await;
        assert_eq!(
            data_object(payload, "w", "}}"),
            data_object(&expected, "command", "}}")
        );
        assert_eq!(command["data"]["w"]["status"], "DELIVERED");
    }
    let respond = "mutation($id: ID!, $ok: Boolean!, $r: JSON) { respondCommand(id: $id, success: $ok, result: $r) { id } }";
    mutate(
        &mut gateway,
        &mut answers,
        "ok",
        respond,
        json!({"id": succeeding, "ok": true, "r": odd}),
    )
    .await;
    mutate(
        &mut gateway,
        &mut answers,
        "fail",
        respond,
        json!({"id": failing, "ok": false, "r": null}),
    )
    .await;

    // Every commandUpdated completes once its command is final.
    watched
        .read_until(&mut watcher, |inbox| {
            ids.iter().all(|id| inbox.completed.contains(id))
        })
        .await;
    for (c, command) in commands.iter().enumerate() {
        for n in 0..COMMAND_SELECTIONS.len() {
            let (compiled, executed) = (
                watched.of(&format!("c{c}-{n}")),
                watched.of(&format!("x{c}-{n}")),
            );
            assert_eq!(compiled, executed, "command {command}, selection {n}");
        }
        let statuses: Vec<Value> = watched
            .of(&format!("c{c}-0"))
            .iter()
            .map(|p| serde_json::from_str::<Value>(p).unwrap()["data"]["c"]["status"].clone())
            .collect();
        let expected: &[&str] = match c {
            0 => &["PENDING", "DELIVERED", "SUCCEEDED"],
            1 => &["PENDING", "DELIVERED", "FAILED"],
            _ => &["PENDING", "EXPIRED"],
        };
        assert_eq!(statuses, expected, "command {command}");
    }
}

/// The subprotocol is the client's first choice among the two the server
/// speaks (RFC 6455: offered "ordered by preference"), whatever order the
/// header lists others in. Python's gql offers the legacy one first and,
/// missing the lower-case response header, speaks it: that is what makes
/// gql work unconfigured (its own test: examples/typescript/test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_preferred_subprotocol_is_chosen() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(Backend::Sqlite).await;
    // A raw handshake: client libraries check the answer against their
    // own offer, and some would refuse a comma-separated header.
    let chosen = |offers: Vec<&'static str>| async move {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let mut request = format!(
            "GET /graphql HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            app.addr
        );
        for offer in offers {
            request.push_str(&format!("Sec-WebSocket-Protocol: {offer}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        head.lines()
            .find_map(|line| line.strip_prefix("sec-websocket-protocol: "))
            .map(str::to_owned)
    };
    for (offers, expected) in [
        (vec!["graphql-ws, graphql-transport-ws"], "graphql-ws"),
        (
            vec!["graphql-transport-ws, graphql-ws"],
            "graphql-transport-ws",
        ),
        (vec!["mqtt, graphql-ws"], "graphql-ws"),
        (
            vec!["mqtt", "graphql-transport-ws", "graphql-ws"],
            "graphql-transport-ws",
        ),
        (vec!["graphql-ws", "graphql-transport-ws"], "graphql-ws"),
    ] {
        assert_eq!(
            chosen(offers.clone()).await.as_deref(),
            Some(expected),
            "{offers:?}"
        );
    }
}
