//! Graceful shutdown: publishers are answered, acknowledged events survive,
//! sockets get a close frame.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use ferrite_e2e::{
    Backend, TestApp, on_both_backends,
    ws::{close_code, next_json, send_json},
};
use serde_json::{Value, json};

on_both_backends!(every_acknowledged_event_survives_a_shutdown_under_load);

async fn every_acknowledged_event_survives_a_shutdown_under_load(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.admin_token().await;
    let device = app.register_device(&token, "busy").await;

    // A subscriber, to see its socket closed properly.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");

    // Four publishers keep publishing until the server goes away, and note
    // every event the server acknowledged.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut publishers = Vec::new();
    for publisher in 0..4 {
        let url = app.url("/graphql");
        let token = token.clone();
        let device = device.clone();
        let acknowledged = acknowledged.clone();
        publishers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for round in 0.. {
                let inputs: Vec<Value> = (0..20)
                    .map(|i| json!({"deviceId": device, "service": "n", "payload": [publisher, round, i]}))
                    .collect();
                let body = json!({"query": "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }", "variables": {"i": inputs}});
                let Ok(response) = client.post(&url).bearer_auth(&token).json(&body).send().await else {
                    break;
                };
                let Ok(answer) = response.json::<Value>().await else {
                    break;
                };
                let Some(events) = answer["data"]["publishEvents"].as_array() else {
                    break;
                };
                let mut acked = acknowledged.lock().unwrap();
                for event in events {
                    acked.insert(event["id"].as_str().unwrap().parse::<i64>().unwrap());
                }
            }
        }));
    }
    // Let them run, then shut down in the middle of it.
    while acknowledged.lock().unwrap().len() < 400 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let app = app.restart().await;
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let code = close_code(&mut socket).await;
    assert_eq!(
        code,
        Some(1001),
        "the subscriber got a going-away close frame"
    );

    let acknowledged = acknowledged.lock().unwrap().clone();
    let token = app.admin_token().await;
    let mut stored = BTreeSet::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .gql(Some(&token), "query($a: String) { events(first: 500, after: $a) { nodes { id } pageInfo { hasNextPage endCursor } } }", json!({"a": after}))
            .await;
        let events = &page.data()["events"];
        for node in events["nodes"].as_array().unwrap() {
            stored.insert(node["id"].as_str().unwrap().parse::<i64>().unwrap());
        }
        if events["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = events["pageInfo"]["endCursor"].clone();
    }
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events were lost: {lost:?}",
        lost.len()
    );
    assert!(acknowledged.len() >= 400);
}
