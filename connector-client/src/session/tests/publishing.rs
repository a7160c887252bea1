//! Publishing: acknowledged batches, refused batches by code, the bad
//! event isolated, passing failures retried, an unreadable outbox.

use super::*;

#[test]
fn an_acknowledged_batch_leaves_the_outbox_before_its_callers_hear() {
    let mut gateway = connected_with_device();
    let (id, events) = publish(&mut gateway, (1..=3).map(|seq| row(seq, "d")).collect());
    assert_eq!(events.len(), 3);
    // One batch in flight at a time.
    gateway.ok(Input::OutboxReady);
    assert_eq!(gateway.outbox_read(), None);

    gateway.answer(&id, acks(1..=3)).unwrap();
    let effects = gateway.take_effects();
    assert!(matches!(&effects[0], Action::RemoveEvents(seqs) if seqs == &[1, 2, 3]));
    for (seq, action) in (1..=3).zip(&effects[1..4]) {
        match action {
            Action::AnswerEvent {
                key,
                result: Ok(ack),
            } => {
                assert_eq!(key, &format!("key-{seq}"));
                assert_eq!(ack.id, 1000 + seq);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        matches!(effects[4], Action::ReadOutbox { .. }),
        "then the next batch"
    );
}

/// How the session takes each kind of refused batch.
#[test]
fn a_refused_batch_is_isolated_retried_or_fatal_by_its_code() {
    enum Expect {
        /// Sent again one event at a time.
        Isolate,
        /// Tried again after a pause.
        Retry,
        /// The key may not publish: the session stops.
        Fatal,
    }
    let table = [
        ("BAD_USER_INPUT", Expect::Isolate),
        ("NOT_FOUND", Expect::Isolate),
        ("CONFLICT", Expect::Isolate),
        ("INTERNAL_SERVER_ERROR", Expect::Retry),
        ("TOO_MANY_REQUESTS", Expect::Retry),
        ("UNKNOWN", Expect::Retry),
        ("FORBIDDEN", Expect::Fatal),
        ("UNAUTHENTICATED", Expect::Fatal),
    ];
    for (code, expect) in table {
        let mut gateway = connected_with_device();
        let (id, _) = publish(&mut gateway, (1..=3).map(|seq| row(seq, "d")).collect());
        let result = gateway.refuse(&id, code);
        match expect {
            Expect::Isolate => {
                result.unwrap();
                assert_eq!(gateway.outbox_read(), Some(1), "{code}");
                assert!(gateway.take_effects().is_empty(), "{code}: nothing removed");
            }
            Expect::Retry => {
                result.unwrap();
                assert_eq!(gateway.outbox_read(), None, "{code}");
                assert!(gateway.take_effects().is_empty(), "{code}: nothing removed");
            }
            Expect::Fatal => match result {
                Err(End::Fatal(Error::Unauthorized(message))) => {
                    assert!(message.contains("may not publish events"), "{message}")
                }
                other => panic!("{code}: {other:?}"),
            },
        }
    }
}

#[test]
fn the_event_that_spoils_a_batch_is_found_rejected_and_the_rest_flows() {
    let mut gateway = connected_with_device();
    let (id, _) = publish(&mut gateway, (1..=3).map(|seq| row(seq, "d")).collect());
    gateway.refuse(&id, "BAD_USER_INPUT").unwrap();
    // One at a time: the first is fine…
    assert_eq!(gateway.outbox_read(), Some(1));
    let (id, _) = publish(&mut gateway, vec![row(1, "d")]);
    gateway.answer(&id, acks([1])).unwrap();
    assert!(matches!(
        &gateway.take_effects()[..],
        [
            Action::RemoveEvents(_),
            Action::AnswerEvent { result: Ok(_), .. },
            Action::ReadOutbox { max_events: 1, .. }
        ]
    ));
    // …the second is refused alone: rejected and removed, not retried.
    let (id, _) = publish(&mut gateway, vec![row(2, "d")]);
    gateway.refuse(&id, "BAD_USER_INPUT").unwrap();
    let effects = gateway.take_effects();
    assert!(matches!(&effects[0], Action::RemoveEvents(seqs) if seqs == &[2]));
    match &effects[1] {
        Action::AnswerEvent {
            key,
            result: Err(Error::Rejected { code, message }),
        } => {
            assert_eq!(key, "key-2");
            assert_eq!(code, "BAD_USER_INPUT");
            assert!(message.contains("refused"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        effects[2],
        Action::ReadOutbox { max_events: 1, .. }
    ));
    // The last of the spoiled batch goes alone; after it, whole batches.
    let (id, _) = publish(&mut gateway, vec![row(3, "d")]);
    gateway.answer(&id, acks([3])).unwrap();
    assert_eq!(gateway.outbox_read(), Some(BATCH));
}

#[test]
fn a_passing_failure_is_retried_after_a_pause_that_grows_to_a_cap() {
    let mut gateway = connected_with_device();
    let mut expected = PUBLISH_RETRY_MIN;
    for _ in 0..10 {
        let (id, _) = publish(&mut gateway, vec![row(1, "d")]);
        gateway.refuse(&id, "INTERNAL_SERVER_ERROR").unwrap();
        gateway
            .advance(expected - Duration::from_millis(1))
            .unwrap();
        assert_eq!(gateway.outbox_read(), None, "not before the pause is over");
        // New events do not cut the pause short either.
        gateway.ok(Input::OutboxReady);
        assert_eq!(gateway.outbox_read(), None);
        gateway.advance(Duration::from_millis(1)).unwrap();
        gateway.take_sent();
        assert_eq!(gateway.outbox_read(), Some(BATCH));
        expected = (expected * 2).min(PUBLISH_RETRY_MAX);
    }
    assert_eq!(expected, PUBLISH_RETRY_MAX);
    // Success resets the pause.
    let (id, _) = publish(&mut gateway, vec![row(1, "d")]);
    gateway.answer(&id, acks([1])).unwrap();
    gateway.take_effects();
    let (id, _) = publish(&mut gateway, vec![row(2, "d")]);
    gateway.refuse(&id, "INTERNAL_SERVER_ERROR").unwrap();
    gateway
        .advance(PUBLISH_RETRY_MIN - Duration::from_millis(1))
        .unwrap();
    assert_eq!(gateway.outbox_read(), None);
    gateway.advance(Duration::from_millis(1)).unwrap();
    assert_eq!(gateway.outbox_read(), Some(BATCH));
}

#[test]
fn an_outbox_that_cannot_be_read_is_tried_again_later() {
    let mut gateway = connected_with_device();
    gateway.ok(Input::OutboxRows(Err(Error::Outbox(
        "disk I/O error".into(),
    ))));
    assert_eq!(gateway.outbox_read(), None);
    assert_eq!(gateway.state.next_deadline(), Some(gateway.now + KEEPALIVE));
    gateway.advance(KEEPALIVE).unwrap();
    gateway.server(json!({"type": "pong"})).unwrap();
    assert_eq!(gateway.outbox_read(), None);
    gateway.advance(PUBLISH_RETRY_MAX).unwrap();
    assert_eq!(gateway.outbox_read(), Some(BATCH));
}

#[test]
fn a_partial_acknowledgement_costs_a_reconnect_and_no_event() {
    let mut gateway = connected_with_device();
    let (id, _) = publish(&mut gateway, (1..=3).map(|seq| row(seq, "d")).collect());
    match gateway.answer(&id, acks(1..=2)) {
        Err(End::Lost(reason)) => assert!(reason.contains("acknowledged 2 of 3"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(
        gateway.take_effects().is_empty(),
        "nothing removed or answered"
    );
}

#[test]
fn events_of_a_device_that_is_gone_are_rejected_not_sent() {
    let mut gateway = connected_with_device();
    let mut deleted = entry("gone", Some("g"));
    deleted.state = DeviceState::Deleted;
    gateway.devices.replace(deleted);
    let (id, events) = publish(&mut gateway, vec![row(1, "d"), row(2, "gone"), row(3, "d")]);
    // The rows before the bad one go first.
    assert_eq!(events.len(), 1);
    gateway.answer(&id, acks([1])).unwrap();
    assert!(matches!(
        gateway.take_effects().last(),
        Some(Action::ReadOutbox { .. })
    ));
    gateway.ok(Input::OutboxRows(Ok(vec![row(2, "gone"), row(3, "d")])));
    let effects = gateway.take_effects();
    assert!(matches!(&effects[0], Action::RemoveEvents(seqs) if seqs == &[2]));
    match &effects[1] {
        Action::AnswerEvent {
            result: Err(Error::Rejected { code, message }),
            ..
        } => {
            assert_eq!(code, "NOT_FOUND");
            assert!(message.contains("not managed by this gateway"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(effects[2], Action::ReadOutbox { .. }));
}

#[test]
fn a_result_that_never_comes_is_asked_for_again() {
    let mut gateway = connected_with_device();
    let (id, _) = publish(&mut gateway, vec![row(1, "d")]);
    // The server completes the operation without a result.
    gateway
        .server(json!({"type": "complete", "id": id}))
        .unwrap();
    assert_eq!(gateway.outbox_read(), Some(BATCH));
}
