//! Publishing the outbox: one `publishEvents` batch in flight, events
//! held back until their device is registered, a batch the server refuses
//! sent again one event at a time to find the bad one (which is rejected
//! and removed), a passing failure retried after a pause that doubles up
//! to [`PUBLISH_RETRY_MAX`].

use serde_json::{Value, json};

use super::{
    Action, End, Link, Op, PUBLISH_RETRY_MAX, PUBLISH_RETRY_MIN, State, is_credential_error,
    server_error,
};
use crate::{
    Error, EventAck,
    connector::Registry,
    outbox::{DeviceState, OutboxRow},
    protocol::Response,
};

const PUBLISH: &str = "mutation($events: [EventInput!]!) { publishEvents(inputs: $events) { id receivedAt idempotencyKey } }";

impl State {
    /// Sends the oldest events of the outbox, or rejects those that can
    /// never be sent.
    pub(super) fn on_outbox_rows(
        &mut self,
        link: &mut Link,
        rows: Result<Vec<OutboxRow>, Error>,
        devices: &Registry,
    ) {
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%error, "cannot read the outbox");
                link.publish_retry_at = Some(self.now + PUBLISH_RETRY_MAX);
                return;
            }
        };
        if rows.is_empty() {
            self.outbox_dirty = false;
            return;
        }
        // The prefix of rows that can go now (with their inputs), stopping
        // at a row that must wait for its device's registration or can
        // never be sent.
        let mut batch = Vec::new();
        let mut inputs = Vec::new();
        let mut unsendable = None;
        for row in rows {
            let device = &row.event.device;
            let entry = devices
                .get_ref(device)
                .filter(|entry| entry.state != DeviceState::Deleted);
            let Some(entry) = entry else {
                let why = format!("device {device:?} is not managed by this gateway any more");
                unsendable = Some((row, why));
                break;
            };
            let syncing = link.syncing.contains(device) || link.sync_queue.contains(device);
            match &entry.server_id {
                // Wait for a registration in progress: events follow their
                // device, in order.
                _ if syncing && entry.state == DeviceState::Active => break,
                None if syncing => break,
                Some(server_id) => {
                    inputs.push(publish_input(server_id, &row));
                    batch.push(row);
                }
                None => {
                    let why = format!("device {device:?} could not be registered on the platform");
                    unsendable = Some((row, why));
                    break;
                }
            }
        }
        if let Some((row, why)) = unsendable {
            // The rows before it go first, then the loop looks again.
            if batch.is_empty() {
                self.reject(row, "NOT_FOUND", why);
                return;
            }
        }
        if batch.is_empty() {
            // Waiting for a device; a sync answer wakes us up.
            self.outbox_dirty = false;
            return;
        }
        link.publishing = true;
        self.start(
            link,
            PUBLISH,
            json!({"events": inputs}),
            Op::Publish { rows: batch },
        );
    }

    /// Removes an event the server will never accept and tells its waiter.
    pub(super) fn reject(&mut self, row: OutboxRow, code: &str, message: String) {
        tracing::error!(
            device = %row.event.device,
            service = %row.event.service,
            key = %row.event.idempotency_key,
            code,
            %message,
            "event rejected; removed from the outbox"
        );
        self.actions.push(Action::RemoveEvents(vec![row.seq]));
        self.actions.push(Action::AnswerEvent {
            key: row.event.idempotency_key,
            result: Err(Error::Rejected {
                code: code.to_owned(),
                message,
            }),
        });
        self.outbox_dirty = true;
    }

    pub(super) fn on_publish_result(
        &mut self,
        link: &mut Link,
        rows: Vec<OutboxRow>,
        response: Response,
    ) -> Result<(), End> {
        if response.errors.is_empty() {
            let stored = response
                .data
                .as_ref()
                .and_then(|data| data.get("publishEvents"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if stored.len() != rows.len() {
                return Err(End::Lost(format!(
                    "the server acknowledged {} of {} events",
                    stored.len(),
                    rows.len()
                )));
            }
            // Removed first: a waiter that hears "stored" finds it gone
            // from the outbox.
            let seqs = rows.iter().map(|row| row.seq).collect();
            self.actions.push(Action::RemoveEvents(seqs));
            for (row, stored) in rows.iter().zip(stored) {
                let key = &row.event.idempotency_key;
                self.actions.push(Action::AnswerEvent {
                    key: key.clone(),
                    result: ack_of(&stored, key),
                });
            }
            if let Some(through) = link.isolate_through
                && rows.last().is_some_and(|row| row.seq >= through)
            {
                link.isolate_through = None;
            }
            self.publish_delay = PUBLISH_RETRY_MIN;
            self.outbox_dirty = true;
            return Ok(());
        }
        let error = server_error(&response.errors);
        if is_credential_error(&error) {
            return Err(End::Fatal(Error::Unauthorized(format!(
                "the API key may not publish events: {error}"
            ))));
        }
        let Error::Server { code, message } = error else {
            unreachable!("BUG: server_error returns Error::Server")
        };
        if is_input_error(&code) {
            if rows.len() == 1 {
                let row = rows.into_iter().next().expect("BUG: one row");
                self.reject(row, &code, message);
            } else {
                // One of them is bad: send them one at a time to find it.
                link.isolate_through = rows.last().map(|row| row.seq);
                self.outbox_dirty = true;
            }
            return Ok(());
        }
        tracing::warn!(%code, %message, retry_in = ?self.publish_delay, "publishing failed; will retry");
        link.publish_retry_at = Some(self.now + self.publish_delay);
        self.publish_delay = (self.publish_delay * 2).min(PUBLISH_RETRY_MAX);
        Ok(())
    }
}

/// Codes that blame one event's input rather than a passing condition.
fn is_input_error(code: &str) -> bool {
    matches!(code, "BAD_USER_INPUT" | "NOT_FOUND" | "CONFLICT")
}

/// One event as `publishEvents` takes it.
fn publish_input(server_id: &str, row: &OutboxRow) -> Value {
    let event = &row.event;
    let payload: Value = serde_json::from_str(&event.payload)
        .expect("BUG: the outbox holds payloads that were valid JSON");
    json!({
        "deviceId": server_id,
        "service": event.service,
        "payload": payload,
        "occurredAt": event.occurred_at,
        "idempotencyKey": event.idempotency_key,
    })
}

fn ack_of(stored: &Value, key: &str) -> Result<EventAck, Error> {
    let id = stored["id"].as_str().and_then(|id| id.parse().ok());
    let received_at = stored["receivedAt"]
        .as_str()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
    match (id, received_at) {
        (Some(id), Some(received_at)) => Ok(EventAck {
            id,
            received_at: received_at.to_utc(),
            idempotency_key: key.to_owned(),
        }),
        _ => Err(Error::Server {
            code: "UNKNOWN".into(),
            message: format!("the server's acknowledgement does not parse: {stored}"),
        }),
    }
}
