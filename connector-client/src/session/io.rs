//! The session's I/O: connecting (TLS, the subprotocol, `connection_init`),
//! reconnecting with backoff, and the loop that feeds what happens to the
//! state machine (`state.rs`) and carries out the actions it returns.
//!
//! Every decision is the state machine's; this file only waits (on the
//! socket, the callers, the clock, the outbox) and does what it is told,
//! in the order it is told. Device writes happen with the registry lock
//! held, so memory and file agree.

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    time::{Instant, sleep_until, timeout},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        http::HeaderValue,
        protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
    },
};

use super::state::{Action, End, Input, Resume, Room, Settings, State};
use crate::{
    ConnectionState, Error,
    connector::{ConnectorShared, Request},
    outbox::DeviceEntry,
    protocol::{CLOSE_FORBIDDEN, ClientMessage, SUBPROTOCOL, ServerMessage},
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connection that stayed up this long resets the reconnect backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// The session task: one per [`crate::Connector`].
pub(crate) struct Session {
    shared: Arc<ConnectorShared>,
    requests: mpsc::Receiver<Request>,
    stop: watch::Receiver<bool>,
    state: State,
    /// Readers that made room (see [`Action::WatchRoom`]).
    resume_tx: mpsc::UnboundedSender<Resume>,
    resume_rx: mpsc::UnboundedReceiver<Resume>,
}

impl Session {
    pub fn new(
        shared: Arc<ConnectorShared>,
        requests: mpsc::Receiver<Request>,
        stop: watch::Receiver<bool>,
        devices: &[DeviceEntry],
    ) -> Self {
        let options = &shared.options;
        let settings = Settings {
            batch_events: options.batch_events,
            batch_bytes: options.batch_bytes,
            keepalive_interval: options.keepalive_interval,
            keepalive_timeout: options.keepalive_timeout,
        };
        let (resume_tx, resume_rx) = mpsc::unbounded_channel();
        Session {
            state: State::new(settings, devices, Instant::now()),
            shared,
            requests,
            stop,
            resume_tx,
            resume_rx,
        }
    }

    /// Runs until shut down (`Ok`) or refused for good (`Err`).
    pub async fn run(mut self) -> Result<(), Error> {
        let mut attempt: u32 = 0;
        loop {
            self.set_state(if attempt == 0 {
                ConnectionState::Connecting
            } else {
                ConnectionState::Reconnecting { attempt }
            });
            let connected = tokio::select! {
                // Cancel-safe: dropping a half-open connection is fine.
                result = connect(&self.shared) => result,
                // Shutdown while connecting.
                _ = self.stop.changed() => return self.finish(Ok(())).await,
            };
            let reason = match connected {
                Ok(socket) => {
                    let since = Instant::now();
                    self.set_state(ConnectionState::Connected);
                    tracing::info!(url = %self.shared.options.url, "connected");
                    match self.run_link(socket).await {
                        End::Stopped => return self.finish(Ok(())).await,
                        End::Fatal(error) => return self.finish(Err(error)).await,
                        End::Lost(reason) => {
                            if since.elapsed() >= HEALTHY_AFTER {
                                attempt = 0;
                            }
                            reason
                        }
                    }
                }
                Err(End::Fatal(error)) => return self.finish(Err(error)).await,
                Err(End::Lost(reason)) => reason,
                Err(End::Stopped) => return self.finish(Ok(())).await,
            };
            attempt = attempt.saturating_add(1);
            let delay = backoff(
                attempt,
                self.shared.options.reconnect_min_delay,
                self.shared.options.reconnect_max_delay,
            );
            tracing::warn!(%reason, retry_in = ?delay, attempt, "connection lost; reconnecting");
            self.set_state(ConnectionState::Disconnected { reason });
            let wake = Instant::now() + delay;
            loop {
                // Calls made while offline are kept for the next connection.
                let input = tokio::select! {
                    // The backoff is over.
                    _ = sleep_until(wake) => break,
                    // Shutdown while waiting.
                    _ = self.stop.changed() => return self.finish(Ok(())).await,
                    // Cancel-safe.
                    request = self.requests.recv() => match request {
                        Some(request) => Input::Request(request),
                        None => return self.finish(Ok(())).await,
                    },
                    // A reader made room: resume on the next connection.
                    Some(resume) = self.resume_rx.recv() => Input::Resume(resume),
                };
                // Offline, nothing can fail or be sent.
                let _ = self.step(None, input).await;
            }
        }
    }

    fn set_state(&self, state: ConnectionState) {
        self.shared.state.send_replace(state);
    }

    /// Answers everyone still waiting, and reports how the session ended.
    async fn finish(mut self, outcome: Result<(), Error>) -> Result<(), Error> {
        let error = outcome.clone().err().unwrap_or(Error::Stopped);
        self.state.finish(&error);
        let actions = self.state.take_actions();
        let _ = self.carry_out(None, actions).await;
        self.shared.fail_event_waiters(&error);
        match &outcome {
            Ok(()) => self.set_state(ConnectionState::Stopped),
            Err(error) => {
                tracing::error!(%error, "the session stopped for good");
                self.set_state(ConnectionState::Failed(error.clone()))
            }
        }
        outcome
    }

    /// Serves one connection until it ends.
    async fn run_link(&mut self, mut socket: Socket) -> End {
        let end = match self.serve(&mut socket).await {
            Ok(()) => End::Stopped,
            Err(end) => end,
        };
        self.state.disconnected();
        // A closing handshake, best effort and bounded (a hung server must
        // not hold up a shutdown), when we end it.
        if matches!(end, End::Stopped | End::Fatal(_)) {
            let close = socket.close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "gateway stopping".into(),
            }));
            let _ = timeout(Duration::from_secs(1), close).await;
        }
        end
    }

    async fn serve(&mut self, socket: &mut Socket) -> Result<(), End> {
        self.step(Some(socket), Input::Connected).await?;
        loop {
            let deadline = self.state.next_deadline();
            let text;
            let input = tokio::select! {
                // A message from the server (cancel-safe).
                message = socket.next() => {
                    self.state.heard(Instant::now());
                    match message {
                        Some(Ok(Message::Text(frame))) => {
                            text = frame;
                            Input::Text(text.as_str())
                        }
                        Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
                        Some(Ok(Message::Binary(_))) => {
                            return Err(End::Lost("the server sent a binary message".into()))
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(err)) => return Err(End::Lost(err.to_string())),
                        None => return Err(End::Lost("the connection closed".into())),
                    }
                }
                // A caller's request (cancel-safe).
                request = self.requests.recv() => match request {
                    Some(request) => Input::Request(request),
                    None => return Err(End::Stopped),
                },
                // A reader made room in its stream.
                Some(resume) = self.resume_rx.recv() => Input::Resume(resume),
                // Keep-alive or the end of a pause after a failed publish.
                _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    Input::Tick
                }
                // New events in the outbox (a stored permit: cancel-safe).
                _ = self.shared.outbox_ready.notified() => Input::OutboxReady,
                // Shutdown.
                _ = self.stop.changed() => return Err(End::Stopped),
            };
            self.step(Some(socket), input).await?;
        }
    }

    /// Hands one input to the state machine and carries out its actions,
    /// feeding back the answers the actions produce (outbox reads).
    async fn step(&mut self, mut socket: Option<&mut Socket>, input: Input<'_>) -> Result<(), End> {
        let mut input = Some(input);
        while let Some(next) = input.take() {
            let mut devices = self.shared.devices.lock().await;
            let handled = self.state.handle(Instant::now(), next, &mut devices);
            let actions = self.state.take_actions();
            // Device writes under the lock, so memory and file agree.
            for action in &actions {
                match action {
                    Action::SaveDevice(entry) => {
                        if let Err(error) = self.shared.outbox.save_device(entry).await {
                            let external_id = &entry.spec.external_id;
                            tracing::error!(%error, external_id, "cannot save a device");
                        }
                    }
                    Action::ForgetDevice(external_id) => {
                        if let Err(error) = self.shared.outbox.forget_device(external_id).await {
                            tracing::error!(%error, external_id, "cannot forget a deleted device");
                        }
                    }
                    _ => {}
                }
            }
            drop(devices);
            let (rows, sent) = self.carry_out(socket.as_deref_mut(), actions).await;
            handled?;
            if let Err(end) = sent {
                self.state.disconnected();
                return Err(end);
            }
            input = rows.map(Input::OutboxRows);
        }
        Ok(())
    }

    /// Carries out the actions other than device writes, in order. Returns
    /// the rows of an outbox read, and the first failure to send (the
    /// frames after it are dropped; everything else is still done).
    async fn carry_out(
        &mut self,
        mut socket: Option<&mut Socket>,
        actions: Vec<Action>,
    ) -> (
        Option<Result<Vec<crate::outbox::OutboxRow>, Error>>,
        Result<(), End>,
    ) {
        let mut rows = None;
        let mut sent = Ok(());
        for action in actions {
            match action {
                Action::Send(text) => {
                    let Some(socket) = socket.as_deref_mut() else {
                        continue;
                    };
                    if sent.is_ok()
                        && let Err(err) = socket.send(Message::text(text)).await
                    {
                        sent = Err(End::Lost(format!("sending: {err}")));
                    }
                }
                Action::ReadOutbox {
                    max_events,
                    max_bytes,
                } => {
                    rows = Some(self.shared.outbox.peek(max_events, max_bytes).await);
                }
                Action::RemoveEvents(seqs) => {
                    if let Err(error) = self.shared.outbox.remove(&seqs).await {
                        // Sent again later; the server stores each key once.
                        tracing::error!(%error, "cannot remove events from the outbox");
                    }
                }
                Action::SaveDevice(_) | Action::ForgetDevice(_) => {}
                Action::AnswerSync { waiters, result } => {
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
                Action::AnswerRespond { reply, result } => {
                    let _ = reply.send(result);
                }
                Action::AnswerEvent { key, result } => self.shared.answer_event(&key, result),
                Action::WatchRoom(room) => {
                    let resume = self.resume_tx.clone();
                    let wanted = room.resume();
                    tokio::spawn(async move {
                        let room = match &room {
                            Room::Commands(sender) => sender.reserve().await.is_ok(),
                            Room::Events(_, sender) => sender.reserve().await.is_ok(),
                        };
                        if room {
                            let _ = resume.send(wanted);
                        }
                    });
                }
            }
        }
        (rows, sent)
    }
}

/// A deadline that never comes (the branch is disabled anyway).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Opens the socket and completes `connection_init`.
async fn connect(shared: &ConnectorShared) -> Result<Socket, End> {
    let options = &shared.options;
    let attempt = async {
        let mut request = options.url.as_str().into_client_request().map_err(|err| {
            End::Fatal(Error::InvalidOption {
                option: "url",
                reason: err.to_string(),
            })
        })?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .write_buffer_size(16 * 1024);
        // Our own roots when given (a self-signed server); otherwise the
        // library's default: the public (webpki) roots for wss://.
        let tls = (!options.tls_roots.is_empty()).then(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(options.tls_roots.iter().cloned());
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_tungstenite::Connector::Rustls(Arc::new(config))
        });
        let (mut socket, response) =
            tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, tls)
                .await
                .map_err(|err| End::Lost(describe_connect_error(&err)))?;
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|value| value.to_str().ok());
        if protocol != Some(SUBPROTOCOL) {
            return Err(End::Lost(format!(
                "the server did not accept the {SUBPROTOCOL} subprotocol (answered {protocol:?})"
            )));
        }
        let init = ClientMessage::ConnectionInit {
            payload: json!({
                "Authorization": format!("Bearer {}", options.api_key.expose()),
                "connectorId": options.connector_id,
            }),
        };
        socket
            .send(Message::text(init.to_text()))
            .await
            .map_err(|err| End::Lost(format!("sending connection_init: {err}")))?;
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                    Ok(ServerMessage::ConnectionAck) => return Ok(socket),
                    Ok(ServerMessage::Ping) => {
                        let pong = ClientMessage::Pong {}.to_text();
                        let _ = socket.send(Message::text(pong)).await;
                    }
                    _ => {
                        return Err(End::Lost(format!(
                            "unexpected message before connection_ack: {text}"
                        )));
                    }
                },
                Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(End::Lost(err.to_string())),
                None => return Err(End::Lost("closed before connection_ack".into())),
            }
        }
    };
    match timeout(options.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(End::Lost(format!(
            "no connection_ack within {:?}",
            options.connect_timeout
        ))),
    }
}

/// Says what a failed handshake means for the person reading the log.
fn describe_connect_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) => format!(
            "the server answered HTTP {} instead of upgrading to WebSocket (is the URL's path /graphql?)",
            response.status()
        ),
        // tokio-rustls reports handshake failures as I/O errors.
        tungstenite::Error::Io(err)
            if err
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            format!("TLS: {err} (for a server with its own certificate, set tls_ca_file)")
        }
        tungstenite::Error::Io(err) => format!("cannot connect: {err}"),
        tungstenite::Error::Tls(err) => {
            format!("TLS: {err} (for a server with its own certificate, set tls_ca_file)")
        }
        other => other.to_string(),
    }
}

/// How a close frame ends the connection: 4403 is for good.
fn closed(frame: Option<CloseFrame>) -> End {
    match frame {
        Some(frame) if u16::from(frame.code) == CLOSE_FORBIDDEN => {
            End::Fatal(Error::Unauthorized(format!(
                "the server refused the API key ({}): check that it is valid and not revoked",
                frame.reason
            )))
        }
        Some(frame) => End::Lost(format!(
            "the server closed the connection ({}: {})",
            u16::from(frame.code),
            frame.reason
        )),
        None => End::Lost("the server closed the connection".into()),
    }
}

/// Exponential backoff from `min` to `max` with jitter in [½, 1] of the
/// step, so a fleet of gateways does not reconnect in lockstep.
fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let step = min
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
        .min(max);
    let jitter = getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64;
    step.mul_f64(0.5 + 0.5 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..40 {
            let delay = backoff(attempt, min, max);
            let step = (min * 2u32.pow((attempt - 1).min(20))).min(max);
            assert!(delay >= step / 2 && delay <= step, "{attempt}: {delay:?}");
        }
    }

    #[test]
    fn only_a_forbidden_close_stops_the_session() {
        let frame = |code: u16, reason: &str| {
            Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            })
        };
        match closed(frame(CLOSE_FORBIDDEN, "Forbidden: the API key was revoked")) {
            End::Fatal(Error::Unauthorized(message)) => {
                assert!(message.contains("was revoked"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        for code in [1000, 1001, 1011, 4400, 4408, 4429, 4500] {
            match closed(frame(code, "why")) {
                End::Lost(reason) => assert!(reason.contains(&format!("{code}: why")), "{reason}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        assert!(matches!(closed(None), End::Lost(_)));
    }
}
