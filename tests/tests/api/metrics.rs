//! `/metrics`: who may read it, and that its figures follow real traffic.

use std::time::Duration;

use ferrite_e2e::{
    Backend, TestApp, eventually, metric_sample, on_both_backends,
    ws::{next_json, send_json},
};
use serde_json::{Value, json};

on_both_backends!(
    metrics_need_an_admin_unless_public,
    metrics_follow_events_sockets_and_devices,
);

fn code_of(body: &str) -> String {
    let body: Value = serde_json::from_str(body).expect("a JSON error");
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn metrics_need_an_admin_unless_public(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let member = app.create_member("mallory").await;
    let admin_read_key = app.create_api_key(&admin, "READ").await;
    let member_key = app.create_api_key(&member, "WRITE").await;

    for (token, status, code) in [
        (None, 401, "UNAUTHENTICATED"),
        (Some("garbage"), 401, "UNAUTHENTICATED"),
        (Some("frt_not-a-key"), 401, "UNAUTHENTICATED"),
        (Some(member.as_str()), 403, "FORBIDDEN"),
        (Some(member_key.as_str()), 403, "FORBIDDEN"),
    ] {
        let (got, body) = app.scrape_metrics(token).await;
        assert_eq!(
            (got, code_of(&body).as_str()),
            (status, code),
            "{token:?}: {body}"
        );
        assert!(!body.contains("ferrite_"), "{token:?} saw metrics");
    }
    for token in [&admin, &admin_read_key] {
        let (status, body) = app.scrape_metrics(Some(token)).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("# TYPE ferrite_events_stored counter"),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"));
    }

    let public = TestApp::spawn_with(backend, |config| config.metrics.public = true).await;
    let (status, body) = public.scrape_metrics(None).await;
    assert_eq!(status, 200, "{body}");
    assert!(metric_sample(&body, "ferrite_events_stored_total").is_some());
}

async fn metrics_follow_events_sockets_and_devices(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let before = app.scrape_metrics(Some(&admin)).await.1;
    assert_eq!(
        metric_sample(&before, "ferrite_events_stored_total"),
        Some(0.0)
    );
    assert_eq!(
        metric_sample(&before, "ferrite_websocket_connections"),
        Some(0.0)
    );
    assert_eq!(
        metric_sample(&before, "ferrite_devices{status=\"ONLINE\"}"),
        Some(0.0)
    );
    assert!(metric_sample(&before, "ferrite_resident_memory_bytes").unwrap() > 1e6);

    // A gateway connects and registers a device; three events, one of them
    // an idempotent retry that stores nothing new.
    let mut gateway = app.raw_socket("graphql-transport-ws").await;
    let init = json!({"Authorization": format!("Bearer {admin}"), "connectorId": "gw"});
    send_json(
        &mut gateway,
        json!({"type": "connection_init", "payload": init}),
    )
    .await;
    assert_eq!(next_json(&mut gateway).await["type"], "connection_ack");
    let register = "mutation { registerDevice(input: {externalId: \"meter\"}) { id } }";
    send_json(
        &mut gateway,
        json!({"type": "subscribe", "id": "1", "payload": {"query": register}}),
    )
    .await;
    let device = next_json(&mut gateway).await["payload"]["data"]["registerDevice"]["id"].clone();
    let publish = "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }";
    let events = json!({"i": [
        {"deviceId": device, "service": "kwh", "payload": 1, "idempotencyKey": "a"},
        {"deviceId": device, "service": "kwh", "payload": 2},
    ]});
    app.gql(Some(&admin), publish, events.clone()).await.data();
    let retry = json!({"i": [events["i"][0].clone()]});
    app.gql(Some(&admin), publish, retry).await.data();

    let during = app.scrape_metrics(Some(&admin)).await.1;
    assert_eq!(
        metric_sample(&during, "ferrite_events_stored_total"),
        Some(2.0)
    );
    assert_eq!(
        metric_sample(&during, "ferrite_ingest_batches_total"),
        Some(2.0)
    );
    assert_eq!(
        metric_sample(&during, "ferrite_ingest_commit_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        metric_sample(&during, "ferrite_websocket_connections"),
        Some(1.0)
    );
    assert_eq!(
        metric_sample(&during, "ferrite_connector_sessions"),
        Some(1.0)
    );
    assert_eq!(
        metric_sample(&during, "ferrite_devices{status=\"ONLINE\"}"),
        Some(1.0)
    );

    // The gateway goes away: its session, its socket and its device follow.
    // The socket is counted until the server has finished closing it, a
    // moment after the device went OFFLINE, so all three are awaited.
    gateway.close(None).await.ok();
    drop(gateway);
    let gone = "the session and the socket closed and the device OFFLINE";
    let after = eventually(gone, Duration::from_secs(10), || async {
        let text = app.scrape_metrics(Some(&admin)).await.1;
        (metric_sample(&text, "ferrite_connector_sessions") == Some(0.0)
            && metric_sample(&text, "ferrite_websocket_connections") == Some(0.0)
            && metric_sample(&text, "ferrite_devices{status=\"OFFLINE\"}") == Some(1.0))
        .then_some(text)
    })
    .await;
    assert_eq!(
        metric_sample(&after, "ferrite_devices{status=\"ONLINE\"}"),
        Some(0.0)
    );

    // Someone guesses passwords: five wrong ones, then the throttle.
    let guess = "mutation { login(username: \"admin\", password: \"guess-1234\") { accessToken } }";
    for _ in 0..6 {
        app.gql(None, guess, json!({})).await;
    }
    let guessed = app.scrape_metrics(Some(&admin)).await.1;
    assert_eq!(
        metric_sample(&guessed, "ferrite_logins_failed_total"),
        Some(5.0)
    );
    assert_eq!(
        metric_sample(&guessed, "ferrite_logins_throttled_total"),
        Some(1.0)
    );
}
