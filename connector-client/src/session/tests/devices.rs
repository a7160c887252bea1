//! Device sync: events wait for their device, refused and concurrent
//! changes, a device deleted on the platform, a confirmed delete.

use super::*;

#[test]
fn device_steps_follow_the_wanted_state() {
    let mut entry = entry("d", None);
    assert_eq!(next_step(&entry, false), Some(Step::Register));
    entry.server_id = Some("id".into());
    assert_eq!(next_step(&entry, true), Some(Step::Update));
    entry.dirty = false;
    assert_eq!(next_step(&entry, true), None);
    assert_eq!(next_step(&entry, false), Some(Step::Register));
    entry.state = DeviceState::Disconnected;
    assert_eq!(next_step(&entry, false), None);
    entry.dirty = true;
    assert_eq!(next_step(&entry, false), Some(Step::Disconnect));
    entry.server_id = None;
    assert_eq!(next_step(&entry, false), Some(Step::Register));
    entry.state = DeviceState::Deleted;
    assert_eq!(next_step(&entry, false), None);
    entry.server_id = Some("id".into());
    assert_eq!(next_step(&entry, false), Some(Step::Delete));
}

#[test]
fn events_wait_for_their_device_then_follow_it_in_order() {
    let mut gateway = Gateway::new(&[entry("d", None)]);
    gateway.connect();
    let waiting = gateway.sync("d");
    // The outbox holds an event for `d`, not registered yet: nothing goes.
    assert_eq!(gateway.outbox_read(), Some(BATCH));
    gateway.ok(Input::OutboxRows(Ok(vec![row(1, "d")])));
    assert!(
        !gateway
            .sent
            .iter()
            .any(|f| query(f).contains("publishEvents"))
    );
    assert_eq!(gateway.outbox_read(), None, "no busy loop while waiting");

    gateway.confirm_registration("d", "p");
    let effects = gateway.take_effects();
    let saved = effects.iter().find_map(|action| match action {
        Action::SaveDevice(entry) => Some(entry.clone()),
        _ => None,
    });
    let saved = saved.expect("the platform id is saved");
    assert_eq!(saved.server_id.as_deref(), Some("p"));
    assert!(!saved.dirty);
    let answered = effects.iter().find_map(|action| match action {
        Action::AnswerSync { waiters, result } => Some((waiters.len(), result.clone())),
        _ => None,
    });
    let (waiters, result) = answered.expect("the caller is answered");
    assert_eq!(waiters, 1);
    assert_eq!(result.unwrap().unwrap().id, "p");
    drop(waiting);
    assert!(matches!(effects.last(), Some(Action::ReadOutbox { .. })));
    // Registered: the event goes, addressed by the platform id.
    let (_, events) = publish(&mut gateway, vec![row(1, "d")]);
    assert_eq!(events[0]["deviceId"], "p");
    assert_eq!(events[0]["payload"], 1);
    assert_eq!(events[0]["idempotencyKey"], "key-1");
}

#[test]
fn a_key_that_may_not_manage_devices_stops_the_session() {
    let mut gateway = Gateway::new(&[entry("d", None)]);
    gateway.connect();
    let id = gateway.op("registerDevice");
    match gateway.refuse(&id, "FORBIDDEN") {
        Err(End::Fatal(Error::Unauthorized(message))) => {
            assert!(message.contains("may not manage devices"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refused_device_change_is_answered_with_the_servers_error() {
    let mut gateway = Gateway::new(&[entry("d", None)]);
    gateway.connect();
    let _waiting = gateway.sync("d");
    let id = gateway.op("registerDevice");
    gateway.refuse(&id, "BAD_USER_INPUT").unwrap();
    let effects = gateway.take_effects();
    match effects
        .iter()
        .find(|a| matches!(a, Action::AnswerSync { .. }))
    {
        Some(Action::AnswerSync {
            result: Err(Error::Server { code, .. }),
            ..
        }) => {
            assert_eq!(code, "BAD_USER_INPUT")
        }
        other => panic!("{other:?}"),
    }
    assert!(!effects.iter().any(|a| matches!(a, Action::SaveDevice(_))));
}

#[test]
fn a_device_deleted_on_the_platform_is_registered_again() {
    let mut gateway = Gateway::new(&[entry("d", Some("old"))]);
    gateway.connect();
    gateway.confirm_registration("d", "old");
    // The gateway renames the device, which someone deleted on the
    // platform meanwhile.
    let mut renamed = gateway.devices.get("d").unwrap();
    renamed.spec = renamed.spec.name("Greenhouse");
    renamed.dirty = true;
    gateway.devices.change(renamed);
    let _waiting = gateway.sync("d");
    let id = gateway.op("updateDevice");
    assert_eq!(
        gateway.sent.last().unwrap()["payload"]["variables"]["id"],
        "old"
    );
    gateway.take_sent();
    gateway.take_effects();
    gateway.refuse(&id, "NOT_FOUND").unwrap();
    let effects = gateway.take_effects();
    match &effects[0] {
        Action::SaveDevice(entry) => assert_eq!(entry.server_id, None, "the old id is forgotten"),
        other => panic!("{other:?}"),
    }
    assert!(query(&gateway.take_sent()[0]).contains("registerDevice"));
}

#[test]
fn a_change_made_while_its_step_was_in_flight_is_sent_too() {
    let mut gateway = Gateway::new(&[entry("d", None)]);
    gateway.connect();
    let id = gateway.op("registerDevice");
    // The caller renames the device before the registration is answered.
    let mut renamed = gateway.devices.get("d").unwrap();
    renamed.spec = renamed.spec.name("Greenhouse");
    gateway.devices.change(renamed);
    let _waiting = gateway.sync("d");
    gateway.take_sent();
    gateway
        .answer(&id, json!({"registerDevice": device("p", "d")}))
        .unwrap();
    let effects = gateway.take_effects();
    match effects.iter().find(|a| matches!(a, Action::SaveDevice(_))) {
        Some(Action::SaveDevice(entry)) => assert!(entry.dirty, "the rename is not done yet"),
        other => panic!("{other:?}"),
    }
    assert!(
        !effects
            .iter()
            .any(|a| matches!(a, Action::AnswerSync { .. }))
    );
    let sent = gateway.take_sent();
    assert!(query(&sent[0]).contains("updateDevice"));
    assert_eq!(
        sent[0]["payload"]["variables"]["input"]["name"],
        "Greenhouse"
    );
}

#[test]
fn a_confirmed_delete_forgets_the_device_and_answers_none() {
    let mut deleted = entry("d", Some("p"));
    deleted.state = DeviceState::Deleted;
    deleted.dirty = true;
    let mut gateway = Gateway::new(&[deleted]);
    gateway.connect();
    let _waiting = gateway.sync("d");
    let id = gateway.op("deleteDevice");
    gateway.take_effects();
    gateway.answer(&id, json!({"deleteDevice": true})).unwrap();
    let effects = gateway.take_effects();
    let kinds: Vec<&str> = effects
        .iter()
        .map(|action| match action {
            Action::SaveDevice(_) => "save",
            Action::ForgetDevice(_) => "forget",
            Action::AnswerSync {
                result: Ok(None), ..
            } => "answered",
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["save", "forget", "answered"]);
    assert!(gateway.devices.get("d").is_none());
}
