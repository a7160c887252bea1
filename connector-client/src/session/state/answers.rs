//! Routing what the server says: each message is decoded (garbage ends
//! the connection), and each answer goes to the operation it belongs to.
//! One-shot operations keep their id reserved until the server's
//! `complete`, so an id is never reused while the server may still use it.

use super::{End, Link, Op, State, is_credential_error, server_error};
use crate::{
    Error,
    connector::Registry,
    protocol::{ClientMessage, Response, ServerMessage},
    session::state::Action,
};

impl State {
    pub(super) fn on_message(
        &mut self,
        link: &mut Link,
        text: &str,
        devices: &mut Registry,
    ) -> Result<(), End> {
        let message: ServerMessage = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(err) => {
                return Err(End::Lost(format!(
                    "the server sent a message that is not graphql-transport-ws ({err})"
                )));
            }
        };
        match message {
            ServerMessage::Ping => self.send(ClientMessage::Pong {}),
            ServerMessage::Pong | ServerMessage::ConnectionAck => {}
            ServerMessage::Next { id, payload } => self.on_result(link, &id, payload, devices)?,
            ServerMessage::Error { id, payload } => {
                // The operation is over (the server sends no `complete`).
                let error = server_error(&payload);
                match link.ops.remove(&id) {
                    Some(Op::Commands) => {
                        tracing::error!(%error, "the command subscription was refused");
                        if is_credential_error(&error) {
                            return Err(End::Fatal(Error::Unauthorized(format!(
                                "the API key may not receive commands: {error}"
                            ))));
                        }
                    }
                    Some(Op::Events { sub }) => {
                        if let Some(sub) = self.event_subs.remove(&sub) {
                            let _ = sub.sender.try_send(Err(error));
                        }
                    }
                    Some(op) => {
                        link.ops.insert(id.clone(), op);
                        let response = Response {
                            data: None,
                            errors: payload,
                        };
                        self.on_result(link, &id, response, devices)?;
                        link.ops.remove(&id);
                    }
                    None => {}
                }
            }
            ServerMessage::Complete { id } => {
                if let Some(op) = link.ops.remove(&id) {
                    self.on_complete(link, op);
                }
            }
        }
        Ok(())
    }

    /// An operation ended by the server.
    pub(super) fn on_complete(&mut self, link: &mut Link, op: Op) {
        match op {
            Op::Commands => {
                tracing::warn!("the server ended the command subscription");
            }
            Op::Events { sub } => {
                // Resume it later rather than end the reader's stream.
                if self.event_subs.contains_key(&sub) {
                    tracing::warn!(sub, "the server ended an event subscription; resuming");
                    link.pending_event_subs.push(sub);
                }
            }
            // A result that never came: try again on this connection.
            Op::Publish { .. } => link.publishing = false,
            Op::Sync { external_id, .. } => {
                link.syncing.remove(&external_id);
            }
            Op::Respond(respond) => self.responds.push_back(respond),
            Op::LatestEvent { sub } => link.pending_event_subs.push(sub),
            Op::Done => {}
        }
    }

    pub(super) fn on_result(
        &mut self,
        link: &mut Link,
        id: &str,
        response: Response,
        devices: &mut Registry,
    ) -> Result<(), End> {
        // Streams stay registered; one-shot operations are answered now and
        // their `complete` ignored.
        let Some(op) = link.ops.get(id) else {
            return Ok(());
        };
        match op {
            Op::Commands => return self.on_command(link, id, response),
            Op::Events { sub } => {
                let sub = *sub;
                return self.on_event(link, id, sub, response);
            }
            _ => {}
        }
        // Keep the id reserved until the server's `complete`.
        let op = link
            .ops
            .insert(id.to_owned(), Op::Done)
            .expect("BUG: checked above");
        match op {
            Op::Sync {
                external_id,
                step,
                generation,
            } => {
                link.syncing.remove(&external_id);
                self.on_sync_result(link, external_id, step, generation, response, devices)
            }
            Op::Respond(respond) => {
                let result = if response.errors.is_empty() {
                    Ok(())
                } else {
                    Err(server_error(&response.errors))
                };
                self.actions.push(Action::AnswerRespond {
                    reply: respond.reply,
                    result,
                });
                Ok(())
            }
            Op::Publish { rows } => {
                link.publishing = false;
                self.on_publish_result(link, rows, response)
            }
            Op::LatestEvent { sub } => {
                self.on_latest_event(link, sub, response);
                Ok(())
            }
            Op::Commands | Op::Events { .. } | Op::Done => Ok(()),
        }
    }
}
