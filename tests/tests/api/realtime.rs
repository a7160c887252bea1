//! The events subscription over WebSocket: a filter, tenant isolation,
//! replay from `after` switching to live with no gap or duplicate, a
//! subscriber that stops reading, and the gap signal below retention.
//! The WebSocket protocol itself (authentication, close codes, both
//! dialects) is tested in `websocket`; compiled subscriptions against
//! async-graphql's answers in `live_plans`.

use std::time::Duration;

use ferrite_e2e::{Backend, TestApp, eventually, metric_sample, on_both_backends, ws::Op};
use futures_util::StreamExt;
use serde_json::{Value, json};

on_both_backends!(
    a_filtered_subscription_gets_exactly_the_matching_events_in_order,
    a_members_subscription_never_sees_another_members_events,
    reconnecting_with_after_receives_everything_missed,
    replay_switches_to_live_without_gap_or_duplicate_under_load,
    a_subscriber_that_stops_reading_gets_every_event_exactly_once,
    resuming_below_retention_gets_the_gap_signal_first,
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
    eventually("retention to run", Duration::from_secs(30), || async {
        (app.event_count(&admin).await == 0).then_some(())
    })
    .await;
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
