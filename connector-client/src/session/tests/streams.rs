//! Command and event streams: delivery, slow readers, resuming.

use super::*;

fn event_frame(id: &str, event_id: i64) -> Value {
    json!({"type": "next", "id": id, "payload": {"data": {"events": {
        "id": event_id.to_string(), "deviceId": "p", "device": {"externalId": "d"},
        "service": "temperature", "payload": event_id, "occurredAt": null,
        "receivedAt": "2026-12-03T10:00:00Z"}}}})
}

#[test]
fn commands_are_delivered_and_a_slow_reader_pauses_the_subscription() {
    let mut gateway = connected_with_device();
    let (sender, mut reader) = mpsc::channel::<Command>(1);
    gateway.request(Request::Commands { sender });
    let id = gateway.op("subscription { commands");
    let command = |n: u32| {
        json!({"type": "next", "id": id, "payload": {"data": {"commands": {
            "id": format!("c{n}"), "deviceId": "p", "service": "switch",
            "payload": {"on": true}, "expiresAt": "2026-12-03T10:00:00Z"}}}})
    };
    gateway.server(command(1)).unwrap();
    let delivered = reader.try_recv().unwrap();
    assert_eq!(
        (delivered.id.as_str(), delivered.device.as_str()),
        ("c1", "d")
    );
    gateway.server(command(2)).unwrap();
    gateway.take_sent();
    // The reader has not taken c2: c3 pauses the stream.
    gateway.server(command(3)).unwrap();
    assert_eq!(gateway.take_sent(), [json!({"type": "complete", "id": id})]);
    let effects = gateway.take_effects();
    let room = match &effects[..] {
        [Action::WatchRoom(room @ Room::Commands(_))] => room.resume(),
        other => panic!("{other:?}"),
    };
    assert_eq!(room, Resume::Commands);
    // Once the reader made room, the subscription starts again (the
    // server hands over every open command again).
    assert_eq!(reader.try_recv().unwrap().id, "c2");
    gateway.ok(Input::Resume(room));
    let again = gateway.op("subscription { commands");
    assert_ne!(again, id);
    // A reader that is gone ends the subscription.
    drop(reader);
    let id = again;
    gateway
        .server(
            json!({"type": "next", "id": id, "payload": {"data": {"commands": {
        "id": "c4", "deviceId": "p", "service": "switch", "payload": null,
        "expiresAt": "2026-12-03T10:00:00Z"}}}}),
        )
        .unwrap();
    assert_eq!(
        gateway.take_sent().last().unwrap(),
        &json!({"type": "complete", "id": id})
    );
    gateway.disconnect_and_reconnect();
    assert!(
        !gateway
            .take_sent()
            .iter()
            .any(|f| query(f).contains("subscription { commands"))
    );
}

#[test]
fn an_event_stream_resumes_after_the_last_event_it_delivered() {
    let mut gateway = connected_with_device();
    let (sender, mut reader) = mpsc::channel::<Result<ReceivedEvent, Error>>(1);
    gateway.request(Request::Events {
        filter: EventFilter::new(),
        after: None,
        sender,
    });
    // The latest event id pins where the stream starts.
    let latest = gateway.op("first: 1");
    gateway
        .answer(
            &latest,
            json!({"events": {"edges": [{"node": {"id": "41"}}]}}),
        )
        .unwrap();
    let sub = gateway.op("events(filter: $filter, after: $after)");
    assert_eq!(
        gateway.sent.last().unwrap()["payload"]["variables"]["after"],
        "41"
    );
    gateway.server(event_frame(&sub, 42)).unwrap();
    assert_eq!(reader.try_recv().unwrap().unwrap().id, 42);
    gateway.server(event_frame(&sub, 43)).unwrap();
    // The reader is behind: 44 is not delivered, the stream pauses.
    gateway.take_sent();
    gateway.server(event_frame(&sub, 44)).unwrap();
    assert_eq!(
        gateway.take_sent(),
        [json!({"type": "complete", "id": sub})]
    );
    let resume = match &gateway.take_effects()[..] {
        [Action::WatchRoom(room)] => room.resume(),
        other => panic!("{other:?}"),
    };
    assert_eq!(reader.try_recv().unwrap().unwrap().id, 43);
    // A reconnect while paused does not restart it…
    gateway.disconnect_and_reconnect();
    assert!(
        !gateway
            .sent
            .iter()
            .any(|f| query(f).contains("after: $after"))
    );
    // …the reader making room does, after the last event delivered.
    gateway.ok(Input::Resume(resume));
    let resumed = gateway.op("after: $after");
    assert_eq!(
        gateway.sent.last().unwrap()["payload"]["variables"]["after"],
        "43"
    );
    // The server ending the subscription starts it again from there too.
    gateway.server(event_frame(&resumed, 44)).unwrap();
    assert_eq!(reader.try_recv().unwrap().unwrap().id, 44);
    gateway.take_sent();
    gateway
        .server(json!({"type": "complete", "id": resumed}))
        .unwrap();
    gateway.op("after: $after");
    assert_eq!(
        gateway.sent.last().unwrap()["payload"]["variables"]["after"],
        "44"
    );
    // An error ends the stream with that error.
    let last = gateway.op("after: $after");
    let error = json!({"message": "no", "extensions": {"code": "FORBIDDEN"}});
    gateway
        .server(json!({"type": "error", "id": last, "payload": [error]}))
        .unwrap();
    match reader.try_recv().unwrap() {
        Err(Error::Server { code, .. }) => assert_eq!(code, "FORBIDDEN"),
        other => panic!("{other:?}"),
    }
    gateway.disconnect_and_reconnect();
    assert!(!gateway.sent.iter().any(|f| query(f).contains("events(")));
}

#[test]
fn an_event_that_does_not_parse_costs_a_reconnect() {
    let mut gateway = connected_with_device();
    let (sender, _reader) = mpsc::channel(4);
    gateway.request(Request::Events {
        filter: EventFilter::new(),
        after: Some(1),
        sender,
    });
    let sub = gateway.op("after: $after");
    let mut frame = event_frame(&sub, 2);
    frame["payload"]["data"]["events"]["id"] = json!("two");
    match gateway.server(frame) {
        Err(End::Lost(reason)) => assert!(reason.contains("not an integer"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
