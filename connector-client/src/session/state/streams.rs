//! The command and event streams: delivered to their readers without
//! blocking; a reader that falls behind pauses its subscription (completed
//! on the server) until it makes room, and an event stream resumes after
//! the last event it delivered, so nothing is lost or buffered.

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Action, End, Link, Op, Room, State, fields, is_credential_error, server_error};
use crate::{
    Command, Error, ReceivedEvent,
    protocol::Response,
    types::{COMMAND_FIELDS, EVENT_FIELDS, WireCommand, WireEvent},
};

const COMMANDS: &str = "subscription { commands { __FIELDS__ } }";
const EVENTS: &str = "subscription($filter: EventFilter, $after: ID) { events(filter: $filter, after: $after) { __FIELDS__ } }";
const LATEST_EVENT: &str =
    "query($filter: EventFilter) { events(filter: $filter, first: 1) { edges { node { id } } } }";

impl State {
    /// Subscribes to commands, unless the reader is gone.
    pub(super) fn start_commands(&mut self, link: &mut Link) {
        if self.commands.as_ref().is_some_and(|s| !s.is_closed()) {
            let query = fields(COMMANDS, COMMAND_FIELDS);
            self.start(link, &query, json!({}), Op::Commands);
        }
    }

    pub(super) fn start_event_sub(&mut self, link: &mut Link, id: u64) {
        let Some(sub) = self.event_subs.get(&id) else {
            return;
        };
        if sub.sender.is_closed() {
            self.event_subs.remove(&id);
            return;
        }
        let filter = serde_json::to_value(&sub.filter).expect("BUG: filters serialise");
        match sub.after {
            // Pin the starting point first, so a reconnect before the first
            // event still resumes without a gap.
            None => self.start(
                link,
                LATEST_EVENT,
                json!({"filter": filter}),
                Op::LatestEvent { sub: id },
            ),
            Some(after) => {
                let variables = json!({"filter": filter, "after": after.to_string()});
                self.start(
                    link,
                    &fields(EVENTS, EVENT_FIELDS),
                    variables,
                    Op::Events { sub: id },
                );
            }
        }
    }

    /// The starting point of a new event subscription is pinned: start it.
    pub(super) fn on_latest_event(&mut self, link: &mut Link, sub: u64, response: Response) {
        let Some(sub_entry) = self.event_subs.get_mut(&sub) else {
            return;
        };
        if let Some(error) = response.errors.first() {
            let error = Error::Server {
                code: error.code(),
                message: error.message.clone(),
            };
            let _ = sub_entry.sender.try_send(Err(error));
            self.event_subs.remove(&sub);
            return;
        }
        let latest = response
            .data
            .as_ref()
            .and_then(|data| data["events"]["edges"][0]["node"]["id"].as_str())
            .and_then(|id| id.parse().ok())
            .unwrap_or(0);
        sub_entry.after = Some(latest);
        link.pending_event_subs.push(sub);
    }

    pub(super) fn on_command(
        &mut self,
        link: &mut Link,
        id: &str,
        response: Response,
    ) -> Result<(), End> {
        if !response.errors.is_empty() {
            let error = server_error(&response.errors);
            tracing::error!(%error, "the command subscription failed");
            link.ops.remove(id);
            if is_credential_error(&error) {
                return Err(End::Fatal(Error::Unauthorized(format!(
                    "the API key may not receive commands: {error}"
                ))));
            }
            return Ok(());
        }
        let Some(sender) = self.commands.clone() else {
            self.complete(link, id);
            return Ok(());
        };
        let wire = response
            .data
            .and_then(|mut data| data.get_mut("commands").map(Value::take))
            .map(serde_json::from_value::<WireCommand>);
        let wire = match wire {
            Some(Ok(wire)) => wire,
            other => {
                tracing::error!(?other, "a command does not parse; ignored");
                return Ok(());
            }
        };
        let command = Command {
            device: self
                .external_ids
                .get(&wire.device_id)
                .cloned()
                .unwrap_or_default(),
            id: wire.id,
            device_id: wire.device_id,
            service: wire.service,
            payload: wire.payload,
            expires_at: wire.expires_at,
        };
        match sender.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                // The reader is behind: stop the subscription and start it
                // again once it made room; the server hands over every open
                // command again, this one included.
                tracing::debug!(command = %command.id, "command reader behind; pausing");
                self.commands_paused = true;
                self.complete(link, id);
                self.actions.push(Action::WatchRoom(Room::Commands(sender)));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.commands = None;
                self.complete(link, id);
            }
        }
        Ok(())
    }

    pub(super) fn on_event(
        &mut self,
        link: &mut Link,
        id: &str,
        sub_id: u64,
        response: Response,
    ) -> Result<(), End> {
        let Some(sub) = self.event_subs.get_mut(&sub_id) else {
            self.complete(link, id);
            return Ok(());
        };
        let item = if let Some(error) = response.errors.first() {
            Err(Error::Server {
                code: error.code(),
                message: error.message.clone(),
            })
        } else {
            let wire = response
                .data
                .and_then(|mut data| data.get_mut("events").map(Value::take))
                .map(serde_json::from_value::<WireEvent>);
            match wire {
                Some(Ok(wire)) => match ReceivedEvent::try_from(wire) {
                    Ok(event) => Ok(event),
                    Err(reason) => return Err(End::Lost(reason)),
                },
                other => {
                    return Err(End::Lost(format!("an event does not parse: {other:?}")));
                }
            }
        };
        let event_id = item.as_ref().ok().map(|event| event.id);
        match sub.sender.try_send(item) {
            Ok(()) => {
                if let Some(event_id) = event_id {
                    sub.after = Some(event_id);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Stop here and resume after the last delivered event once
                // the reader made room: nothing lost, nothing buffered.
                sub.paused = true;
                let sender = sub.sender.clone();
                self.complete(link, id);
                self.actions
                    .push(Action::WatchRoom(Room::Events(sub_id, sender)));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.event_subs.remove(&sub_id);
                self.complete(link, id);
            }
        }
        Ok(())
    }
}
