//! A connection: what it brings up to date, keep-alive, garbage from the
//! server, the cap on operations in flight, losing it, ending for good.

use super::*;

#[test]
fn a_connection_brings_everything_asked_for_offline_up_to_date() {
    let mut gateway = Gateway::new(&[entry("d", None)]);
    assert_eq!(
        gateway.state.next_deadline(),
        None,
        "offline: nothing timed"
    );
    let (commands, _commands) = mpsc::channel(4);
    let (events, _events) = mpsc::channel(4);
    gateway.request(Request::Commands { sender: commands });
    gateway.request(Request::Events {
        filter: EventFilter::new().services(["temperature"]),
        after: None,
        sender: events,
    });
    let (reply, _answered) = oneshot::channel();
    gateway.request(Request::Respond(Respond {
        command_id: "c1".into(),
        success: true,
        result: Some(json!({"on": true})),
        reply,
    }));
    gateway.ok(Input::OutboxReady);
    assert!(gateway.take_sent().is_empty() && gateway.take_effects().is_empty());

    gateway.connect();
    let sent = gateway.take_sent();
    let queries: Vec<&str> = sent.iter().map(query).collect();
    assert_eq!(queries.len(), 4, "{queries:#?}");
    assert!(queries[0].contains("subscription { commands"));
    // The event stream pins its starting point before it subscribes.
    assert!(queries[1].contains("events(filter: $filter, first: 1)"));
    assert_eq!(
        sent[1]["payload"]["variables"]["filter"],
        json!({"services": ["temperature"]})
    );
    assert!(queries[2].contains("registerDevice"));
    assert_eq!(sent[2]["payload"]["variables"]["input"]["externalId"], "d");
    assert!(queries[3].contains("respondCommand"));
    assert_eq!(
        sent[3]["payload"]["variables"],
        json!({"id": "c1", "success": true, "result": {"on": true}})
    );
    let ids: Vec<&str> = sent
        .iter()
        .map(|frame| frame["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    assert_eq!(gateway.outbox_read(), Some(BATCH));

    gateway
        .answer("4", json!({"respondCommand": {"id": "c1"}}))
        .unwrap();
    assert!(matches!(
        gateway.take_effects().as_slice(),
        [Action::AnswerRespond { result: Ok(()), .. }]
    ));
}

#[test]
fn a_silent_server_is_pinged_then_given_up() {
    let mut gateway = connected_with_device();
    gateway.take_effects();
    let start = gateway.now;
    assert_eq!(gateway.state.next_deadline(), Some(start + KEEPALIVE));
    // Ticks before the interval do nothing.
    gateway.advance(KEEPALIVE / 2).unwrap();
    assert!(gateway.take_sent().is_empty());
    gateway.advance(KEEPALIVE / 2).unwrap();
    assert_eq!(gateway.take_sent(), [json!({"type": "ping"})]);
    // Any frame counts as a sign of life.
    gateway.state.heard(gateway.now);
    gateway.advance(KEEPALIVE).unwrap();
    gateway.advance(KEEPALIVE).unwrap();
    gateway.advance(KEEPALIVE).unwrap();
    assert_eq!(
        gateway.take_sent().len(),
        3,
        "pinged while within the allowance"
    );
    match gateway.advance(KEEPALIVE) {
        Err(End::Lost(reason)) => assert!(reason.contains("silent for 45s"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        gateway.state.next_deadline(),
        None,
        "the connection is forgotten"
    );
}

#[test]
fn a_server_ping_is_answered() {
    let mut gateway = connected_with_device();
    gateway
        .server(json!({"type": "ping", "payload": {"x": 1}}))
        .unwrap();
    assert_eq!(gateway.take_sent(), [json!({"type": "pong"})]);
}

/// Garbage from the server ends the connection with a reason; an answer
/// for nothing is ignored; in no case is an event lost.
#[test]
fn garbage_from_the_server_costs_a_reconnect_not_an_event() {
    let table: [(&str, Option<&str>); 9] = [
        (
            r#"{"type":"next","id":"999","payload":{"data":{"x":1}}}"#,
            None,
        ),
        (r#"{"type":"error","id":"999","payload":[]}"#, None),
        (r#"{"type":"complete","id":"999"}"#, None),
        (r#"{"type":"connection_ack"}"#, None),
        (
            r#"{"type":"mystery","id":"1"}"#,
            Some("not graphql-transport-ws"),
        ),
        ("this is not JSON", Some("not graphql-transport-ws")),
        (r#"{"type":"next"}"#, Some("not graphql-transport-ws")),
        (
            r#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["#,
            Some("not graphql-transport-ws"),
        ),
        ("", Some("not graphql-transport-ws")),
    ];
    for (text, ends) in table {
        let mut gateway = connected_with_device();
        let (_, _) = publish(&mut gateway, vec![row(1, "d")]);
        let result = gateway.input(Input::Text(text));
        match (ends, result) {
            (None, Ok(())) => assert!(gateway.state.next_deadline().is_some()),
            (Some(expected), Err(End::Lost(reason))) => {
                assert!(reason.contains(expected), "{text}: {reason}")
            }
            (_, other) => panic!("{text}: {other:?}"),
        }
        assert!(
            !gateway
                .take_effects()
                .iter()
                .any(|a| matches!(a, Action::RemoveEvents(_))),
            "{text}: an event left the outbox"
        );
    }
    // A million levels of nesting are refused by the decoder, not a stack.
    let deep = "[".repeat(1_000_000);
    let mut gateway = connected_with_device();
    assert!(matches!(
        gateway.input(Input::Text(&deep)),
        Err(End::Lost(_))
    ));
}

#[test]
fn answers_in_flight_on_a_lost_connection_are_sent_again() {
    let mut gateway = connected_with_device();
    let (reply, _answer) = oneshot::channel();
    gateway.request(Request::Respond(Respond {
        command_id: "c1".into(),
        success: false,
        result: None,
        reply,
    }));
    gateway.op("respondCommand");
    gateway.state.disconnected();
    gateway.take_sent();
    gateway.connect();
    let again: Vec<Value> = gateway
        .take_sent()
        .into_iter()
        .filter(|frame| query(frame).contains("respondCommand"))
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["payload"]["variables"]["id"], "c1");
    assert_eq!(again[0]["payload"]["variables"]["success"], false);
}

#[test]
fn at_most_max_in_flight_operations_and_the_rest_follow_as_answers_come() {
    let entries: Vec<DeviceEntry> = (0..100).map(|n| entry(&format!("d{n}"), None)).collect();
    let mut gateway = Gateway::new(&entries);
    gateway.connect();
    let sent = gateway.take_sent();
    assert_eq!(sent.len(), MAX_IN_FLIGHT);
    assert_eq!(gateway.outbox_read(), None, "no room for a publish either");
    // Answering one (next + complete) makes room for one more.
    let first = sent[0]["id"].as_str().unwrap().to_owned();
    let external_id = sent[0]["payload"]["variables"]["input"]["externalId"]
        .as_str()
        .unwrap()
        .to_owned();
    gateway
        .answer(
            &first,
            json!({"registerDevice": device("p0", &external_id)}),
        )
        .unwrap();
    assert_eq!(gateway.take_sent().len(), 1);
}

#[test]
fn finishing_answers_every_caller_with_the_reason() {
    let mut gateway = Gateway::new(&[entry("d", None)]);
    let _waiting = gateway.sync("d");
    let (reply, _answer) = oneshot::channel();
    gateway.request(Request::Respond(Respond {
        command_id: "c1".into(),
        success: true,
        result: None,
        reply,
    }));
    let (sender, mut reader) = mpsc::channel(4);
    gateway.request(Request::Events {
        filter: EventFilter::new(),
        after: None,
        sender,
    });
    let revoked = Error::Unauthorized("revoked".into());
    gateway.state.finish(&revoked);
    let actions = gateway.state.take_actions();
    assert_eq!(actions.len(), 2);
    assert!(actions.iter().all(|action| matches!(
        action,
        Action::AnswerSync {
            result: Err(Error::Unauthorized(_)),
            ..
        } | Action::AnswerRespond {
            result: Err(Error::Unauthorized(_)),
            ..
        }
    )));
    assert_eq!(reader.try_recv().unwrap(), Err(revoked));
}

/// The fuzz target's entry point runs in the test suite too, so it cannot
/// rot between fuzzing runs.
#[test]
fn the_fuzz_entry_takes_any_frame() {
    let frames = [
        r#"{"type":"next","id":"1","payload":{"data":{"commands":{"id":"c","deviceId":"1","service":"s","payload":1,"expiresAt":"2026-12-03T10:00:00Z"}}}}"#,
        r#"{"type":"next","payload":{"data":{"publishEvents":[{"id":"1","receivedAt":"x"}]}}}"#,
        r#"{"type":"error","payload":[{"message":"m","extensions":{"code":"FORBIDDEN"}}]}"#,
        r#"{"type":"complete"}"#,
        "not JSON",
    ];
    for frame in frames {
        crate::session::fuzz_server_text(frame);
    }
}
