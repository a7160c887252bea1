//! One socket's task: it reads frames, runs operations (a `StreamMap`
//! keyed by operation id), writes their results in bursts, keeps the
//! connection alive, and closes it when the credential ends. The messages
//! and codes themselves are in `protocol`.

use std::{any::TypeId, net::SocketAddr, sync::Arc, time::Duration};

use async_graphql::{
    Data, Response,
    futures_util::{
        FutureExt, SinkExt, StreamExt,
        stream::{self, BoxStream, SplitSink},
    },
};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use serde_json::json;
use tokio::{
    sync::watch,
    time::{Instant, MissedTickBehavior, interval_at, sleep, sleep_until},
};
use tokio_stream::StreamMap;
use uuid::Uuid;

use super::credential::{Credential, far_future, renewed, revoked};
use super::protocol::{
    ClientMessage, Close, INIT_CREDENTIAL_NEEDED, Outgoing, Protocol, code, decode, find,
    init_credential,
};
use crate::{
    auth::AuthError,
    graphql::{RequestContext, SocketLease, error::ApiError, live},
    http::{HttpState, Rendered, is_request_error, to_json_within, too_large_error},
    metrics::GaugeGuard,
    store::ConnectorSession,
};

/// Most results written to a socket before one flush.
const MAX_BURST: usize = 256;

/// How long a closing socket keeps reading what the client still sends.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// Longest `connectorId` a gateway may announce.
const CONNECTOR_ID_MAX: usize = 128;

type Sink = SplitSink<WebSocket, Message>;

/// One operation's results, then [`Output::End`].
type Results = BoxStream<'static, Output>;

/// What a running operation hands the socket.
enum Output {
    /// A result executed by async-graphql.
    Response(Box<Response>),
    /// A whole `next` message, already serialised (a compiled `events`
    /// subscription, see `graphql::live`).
    Message(String),
    /// The operation is over.
    End,
}

pub(super) struct Connection {
    pub(super) state: HttpState,
    pub(super) client: SocketAddr,
    pub(super) protocol: Protocol,
    /// Set by an accepted `connection_init`.
    pub(super) session: Option<Arc<Data>>,
    /// Operations that ended with an `error` message: no `complete` follows.
    pub(super) failed: Vec<String>,
    /// The connector session, when `connection_init` named a
    /// `connectorId`: its devices go OFFLINE when the socket ends.
    pub(super) connector_session: Option<CountedSession>,
}

/// A connector session's id, counted in `ferrite_connector_sessions` for as
/// long as it is held.
pub(super) struct CountedSession {
    id: Uuid,
    _counted: GaugeGuard,
}

impl Connection {
    pub(super) async fn run(mut self, socket: WebSocket) {
        let _open = GaugeGuard::new(&self.state.app.metrics.sockets.open);
        let settings = self.state.app.config.websocket.clone();
        let keepalive = Duration::from_secs(settings.keepalive_seconds);
        let idle_timeout = Duration::from_secs(settings.idle_timeout_seconds);
        let (mut sink, mut frames) = socket.split();
        let mut operations: StreamMap<String, Results> = StreamMap::new();
        let init_deadline = sleep(Duration::from_secs(settings.init_timeout_seconds));
        tokio::pin!(init_deadline);
        let mut ticks = interval_at(Instant::now() + keepalive, keepalive);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut shutdown = self.state.shutdown.clone();
        // The credential's end: its expiry (renewable) and, for an API key,
        // its revocation.
        let mut credential = Credential::default();
        let expiry = sleep_until(far_future());
        tokio::pin!(expiry);

        let close = loop {
            tokio::select! {
                // A frame from the client. Cancel-safe: `next` loses nothing.
                frame = frames.next() => {
                    let frame = match frame {
                        None => break None,
                        Some(Ok(frame)) => frame,
                        Some(Err(err)) => break too_big(&err).then(|| Close::new(code::TOO_BIG, "message too big")),
                    };
                    last_heard = Instant::now();
                    match frame {
                        Message::Text(text) => {
                            // Boxed: its futures (authentication, store
                            // queries) are large and rare; inline, they would
                            // sit in every idle socket's task.
                            match Box::pin(self.on_text(&text, &mut sink, &mut operations)).await {
                                Ok(Some(accepted)) => {
                                    credential = accepted;
                                    expiry.as_mut().reset(credential.deadline());
                                }
                                Ok(None) => {}
                                Err(close) => break Some(close),
                            }
                        }
                        Message::Binary(_) => break Some(Close::new(code::BAD_MESSAGE, "binary messages are not part of the protocol")),
                        // Pings are answered by the WebSocket layer itself.
                        Message::Ping(_) | Message::Pong(_) => {}
                        Message::Close(_) => break None,
                    }
                }
                // The next result of a running operation. Cancel-safe.
                Some((id, result)) = operations.next(), if !operations.is_empty() => {
                    // Queue this result and whatever else is ready right now,
                    // then flush once: one write for a burst, not one each.
                    let mut queued = self.feed_result(&mut sink, &id, result).await;
                    let mut burst = 1;
                    while queued.is_ok() && burst < MAX_BURST {
                        let Some(Some((id, result))) = operations.next().now_or_never() else {
                            break;
                        };
                        queued = self.feed_result(&mut sink, &id, result).await;
                        burst += 1;
                    }
                    if queued.is_err() || sink.flush().await.is_err() {
                        break None;
                    }
                }
                // No connection_init in time.
                _ = &mut init_deadline, if self.session.is_none() => {
                    break Some(Close::new(code::INIT_TIMEOUT, "Connection initialisation timeout"));
                }
                // Keep-alive: ping, or give up on a silent client. Cancel-safe.
                _ = ticks.tick() => {
                    if last_heard.elapsed() >= idle_timeout {
                        break Some(Close::new(code::GOING_AWAY, "keep-alive timeout"));
                    }
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break None;
                    }
                    if self.protocol == Protocol::Legacy && self.session.is_some()
                        && send_json(&mut sink, &json!({"type": "ka"})).await.is_err()
                    {
                        break None;
                    }
                }
                // The server is stopping. Cancel-safe.
                _ = shutdown.changed() => break Some(Close::new(code::GOING_AWAY, "server shutting down")),
                // The access token ran out and was not renewed.
                _ = &mut expiry => {
                    break Some(Close::new(code::FORBIDDEN, "the token has expired; renew it with renewConnection before it does"));
                }
                // renewConnection moved the expiry. Cancel-safe.
                renewed = renewed(&mut credential.expires) => {
                    if renewed {
                        expiry.as_mut().reset(credential.deadline());
                    } else {
                        credential.expires = None;
                    }
                }
                // The credential was revoked, or the role changed. Cancel-safe.
                close = revoked(&mut credential.revoked, &self.state.app.auth) => break Some(close),
            }
        };
        // Dropping the operations ends their streams and bus subscriptions.
        drop(operations);
        if let Some(session) = self.connector_session.take() {
            Box::pin(self.state.app.presence.session_closed(session.id)).await;
        }
        if let Some(Close(code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
        // Read (and drop) what the client still sends until it closes too,
        // briefly: closing a TCP socket with unread data makes the kernel
        // answer with a reset, which can destroy the close frame before the
        // client reads it (a client sending a too-big message in fragments
        // saw 1006 instead of 1009).
        // Errors are expected here (after a too-big message, its remaining
        // fragments do not parse); a bounded number are skipped.
        let drained = tokio::time::timeout(CLOSE_DRAIN, async {
            let mut errors = 0;
            while let Some(frame) = frames.next().await {
                if frame.is_err() {
                    errors += 1;
                    if errors > 1024 {
                        break;
                    }
                }
            }
        });
        let _ = drained.await;
    }

    /// Handles one text message; `Err` closes the socket. An accepted
    /// `connection_init` returns what to watch for the credential's end.
    async fn on_text(
        &mut self,
        text: &str,
        sink: &mut Sink,
        operations: &mut StreamMap<String, Results>,
    ) -> Result<Option<Credential>, Close> {
        let message = decode(text, &self.state.app.config.limits)?;
        let legacy = self.protocol == Protocol::Legacy;
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.session.is_some() {
                    return Err(Close::new(
                        code::TOO_MANY_INITS,
                        "Too many initialisation requests",
                    ));
                }
                // Subscribed before the credential is checked: a revocation
                // committed after the check is heard.
                let revocations = self.state.app.bus.subscribe_revocations();
                match self.authenticate(payload.as_ref()).await {
                    Ok(context) => {
                        let counter = &self.state.app.metrics.sockets.connector_sessions;
                        self.connector_session = context.session.as_ref().map(|s| CountedSession {
                            id: s.id,
                            _counted: GaugeGuard::new(counter),
                        });
                        let credential = Credential {
                            expires: context
                                .socket
                                .as_ref()
                                .map(|lease| lease.expires.subscribe()),
                            revoked: context
                                .principal
                                .clone()
                                .map(|principal| (principal, revocations)),
                        };
                        let mut data = Data::default();
                        data.insert(context);
                        self.session = Some(Arc::new(data));
                        send_json(sink, &json!({"type": "connection_ack"}))
                            .await
                            .map_err(|_| Close::new(code::INTERNAL, "send failed"))?;
                        if legacy {
                            let _ = send_json(sink, &json!({"type": "ka"})).await;
                        }
                        return Ok(Some(credential));
                    }
                    Err(reason) => {
                        if legacy {
                            let _ = send_json(
                                sink,
                                &json!({"type": "connection_error", "payload": {"message": reason}}),
                            )
                            .await;
                        }
                        // The reason tells a gateway's operator what to fix;
                        // it never echoes the token.
                        return Err(Close::new(code::FORBIDDEN, format!("Forbidden: {reason}")));
                    }
                }
            }
            ClientMessage::Ping { payload } if !legacy => {
                let mut pong = json!({"type": "pong"});
                if let Some(payload) = payload {
                    pong["payload"] = payload;
                }
                send_json(sink, &pong)
                    .await
                    .map_err(|_| Close::new(code::INTERNAL, "send failed"))?;
            }
            ClientMessage::Pong {} if !legacy => {}
            ClientMessage::Subscribe { id, payload } if !legacy => {
                self.start(id, payload, sink, operations).await?;
            }
            ClientMessage::Start { id, payload } if legacy => {
                self.start(id, payload, sink, operations).await?;
            }
            ClientMessage::Complete { id } if !legacy => {
                operations.remove(&id);
            }
            ClientMessage::Stop { id } if legacy => {
                if operations.remove(&id).is_some() {
                    let _ = send_json(sink, &json!({"type": "complete", "id": id})).await;
                }
            }
            ClientMessage::ConnectionTerminate {} if legacy => {
                return Err(Close::new(code::NORMAL, "terminated"));
            }
            _ => return Err(Close::new(code::BAD_MESSAGE, "Invalid message received")),
        }
        Ok(None)
    }

    /// Checks the token in `connection_init` and builds the socket's context.
    async fn authenticate(
        &self,
        payload: Option<&serde_json::Value>,
    ) -> Result<RequestContext, &'static str> {
        let payload = payload.and_then(|p| p.as_object());
        let token = payload
            .and_then(init_credential)
            .ok_or(INIT_CREDENTIAL_NEEDED)?;
        let connector_id = match payload
            .and_then(|p| find(p, "connectorId"))
            .and_then(|v| v.as_str())
        {
            None => None,
            // Control characters are refused as in every other name: the id
            // is shown on devices and written to logs.
            Some(id)
                if !id.is_empty()
                    && id.chars().count() <= CONNECTOR_ID_MAX
                    && !id.chars().any(char::is_control) =>
            {
                Some(id.to_owned())
            }
            Some(_) => {
                return Err("connectorId must be 1 to 128 characters without control characters");
            }
        };
        let principal = self
            .state
            .app
            .auth
            .authenticate(token)
            .await
            .map_err(|err| match err {
                // "has expired" or "is not valid": a client refreshes its
                // token after the first and stops after the second.
                AuthError::Unauthenticated(reason) => reason,
                _ => "the token could not be checked; try again later",
            })?;
        let session = connector_id.map(|connector_id| ConnectorSession {
            id: Uuid::new_v4(),
            node_id: self.state.app.presence.node_id(),
            connector_id,
        });
        let lease = Arc::new(SocketLease {
            user_id: principal.user_id,
            credential: principal.credential,
            expires: watch::Sender::new(principal.expires_at),
        });
        Ok(RequestContext {
            principal: Some(principal),
            client: self.client.ip(),
            session,
            socket: Some(lease),
        })
    }

    /// Starts an operation (a subscription, query or mutation).
    async fn start(
        &mut self,
        id: String,
        request: async_graphql::Request,
        sink: &mut Sink,
        operations: &mut StreamMap<String, Results>,
    ) -> Result<(), Close> {
        let Some(session) = self.session.clone() else {
            return Err(Close::new(code::UNAUTHORIZED, "Unauthorized"));
        };
        if operations.contains_key(&id) {
            return Err(Close::new(
                code::DUPLICATE_ID,
                format!("Subscriber for {id} already exists"),
            ));
        }
        let max = self.state.app.config.websocket.max_subscriptions;
        if operations.len() >= max {
            let errors = json!([{
                "message": format!("this socket already runs {max} operations, the limit"),
                "extensions": {"code": "RATE_LIMITED"},
            }]);
            send_json(sink, &json!({"type": "error", "id": id, "payload": errors}))
                .await
                .map_err(|_| Close::new(code::INTERNAL, "send failed"))?;
            return Ok(());
        }
        self.failed.retain(|failed| failed != &id);
        let results = self.execute(&id, request, session).await;
        operations.insert(id, results);
        Ok(())
    }

    /// Runs an operation: a compiled subscription, or anything through
    /// async-graphql.
    async fn execute(
        &self,
        id: &str,
        mut request: async_graphql::Request,
        session: Arc<Data>,
    ) -> Results {
        let end = || stream::once(async { Output::End });
        // Before `live::compile` parses the document: a refusal is a request
        // error, sent as any other (an `error` message, no `complete`). A
        // persisted query's hash is resolved first, as over HTTP.
        let limits = &self.state.app.config.limits;
        let trusted = match self.state.persisted.admit(&mut request, limits) {
            Ok(trusted) => trusted,
            Err(refused) => return failed(refused),
        };
        let schema = &self.state.schema;
        let general = |request, session| {
            schema
                .execute_stream_with_session_data(request, session)
                .map(|response| Output::Response(Box::new(response)))
                .chain(end())
                .boxed()
        };
        if let Some(publish) = trusted {
            let context = session
                .get(&TypeId::of::<RequestContext>())
                .and_then(|context| context.downcast_ref::<RequestContext>());
            let prepared =
                context.and_then(|context| publish.prepare(&request.variables, context, limits));
            return match prepared {
                Some(prepared) => self.publish(id, publish, prepared),
                // Anything the compiled path does not take as it is: the
                // schema answers, exactly as before.
                None => general(request, session),
            };
        }
        if let Some(publish) = live::Publish::compile_request(&mut request) {
            // Run by async-graphql this once; trusted if it parses and
            // validates (see `graphql::live::publish`).
            let state = self.state.clone();
            let text = request.query.clone();
            let mut publish = Some(Arc::new(publish));
            return general(request, session)
                .inspect(move |output| {
                    if let Output::Response(response) = output
                        && !is_request_error(response)
                        && let Some(publish) = publish.take()
                    {
                        state.persisted.trust(&text, publish);
                    }
                })
                .boxed();
        }
        let Some(compiled) = live::compile(&mut request, &self.state.plans) else {
            return general(request, session);
        };
        // async-graphql parses, validates and runs the resolver, which hands
        // its feed over instead of returning a stream: the run ends at once,
        // with nothing, or with the errors to send.
        let handoff = live::Handoff::default();
        let mut run =
            schema.execute_stream_with_session_data(request.data(handoff.clone()), session);
        let first = run.next().await;
        let Some(feed) = handoff.take() else {
            return stream::iter(first)
                .chain(run)
                .map(|response| Output::Response(Box::new(response)))
                .chain(end())
                .boxed();
        };
        let Some(live) = live::Live::new(feed, compiled) else {
            tracing::error!(
                operation = id,
                "BUG: a resolver handed over a feed its plan does not render"
            );
            return failed(
                async_graphql::Error::from(ApiError::Internal)
                    .into_server_error(async_graphql::Pos::default()),
            );
        };
        // The same for every message of this operation.
        let head = next_head(self.protocol.next_kind(), id);
        live.map(move |next| match next {
            live::Next::Payload(payload) => Output::Message(next_message(&head, &payload)),
            live::Next::Error(response) => Output::Response(response),
        })
        .chain(end())
        .boxed()
    }

    /// Runs a trusted publish on the compiled path (`graphql::live::publish`):
    /// its answer is sent as async-graphql would send it, within the same
    /// response limit.
    fn publish(&self, id: &str, publish: Arc<live::Publish>, prepared: live::Prepared) -> Results {
        // The shared state's pointer, not a copy of the app's handles.
        let state = self.state.clone();
        let (kind, id) = (self.protocol.next_kind(), id.to_owned());
        let limit = state.app.config.limits.response_bytes;
        stream::once(async move {
            match publish.run(prepared, &state.app).await {
                Ok(payload) => {
                    let head = next_head(kind, &id);
                    // Within the limit as `to_json_within` counts it: the
                    // whole message.
                    if head.len() + payload.len() < limit {
                        Output::Message(next_message(&head, &payload))
                    } else {
                        Output::Message(too_large_next(kind, &id, limit))
                    }
                }
                Err(response) => Output::Response(response),
            }
        })
        .chain(stream::once(async { Output::End }))
        .boxed()
    }

    /// Queues (without flushing) one result of operation `id`, or its
    /// completion.
    async fn feed_result(
        &mut self,
        sink: &mut Sink,
        id: &str,
        result: Output,
    ) -> Result<(), axum::Error> {
        let legacy = self.protocol == Protocol::Legacy;
        match result {
            // Errors before execution (the operation does not parse or
            // validate): an `error` message, and no `complete` after it.
            Output::Response(response) if is_request_error(&response) => {
                self.failed.push(id.to_owned());
                let errors = serde_json::to_value(&response.errors).unwrap_or_default();
                let payload = if legacy {
                    json!({"errors": errors})
                } else {
                    errors
                };
                send_json(
                    sink,
                    &json!({"type": "error", "id": id, "payload": payload}),
                )
                .await
            }
            Output::Response(response) => {
                // Serialised straight to text: the hot path of every live event.
                let outgoing = Outgoing {
                    kind: self.protocol.next_kind(),
                    id,
                    payload: &response,
                };
                let text =
                    match to_json_within(&outgoing, self.state.app.config.limits.response_bytes) {
                        Ok(text) => text,
                        Err(Rendered::TooLarge(limit)) => {
                            too_large_next(self.protocol.next_kind(), id, limit)
                        }
                        Err(Rendered::Failed(err)) => {
                            panic!("BUG: a GraphQL response serialises: {err}")
                        }
                    };
                sink.feed(Message::Text(Utf8Bytes::from(text))).await
            }
            Output::Message(text) => sink.feed(Message::Text(Utf8Bytes::from(text))).await,
            Output::End => {
                if let Some(at) = self.failed.iter().position(|f| f == id) {
                    self.failed.swap_remove(at);
                    return Ok(());
                }
                feed_json(sink, &json!({"type": "complete", "id": id})).await
            }
        }
    }
}

/// An operation that ends with one error before it ran.
fn failed(error: async_graphql::ServerError) -> Results {
    stream::iter([
        Output::Response(Box::new(Response::from_errors(vec![error]))),
        Output::End,
    ])
    .boxed()
}

/// What goes before the payload of a `next` message of operation `id`:
/// `{"type":"next","id":"…","payload":`.
fn next_head(kind: &str, id: &str) -> String {
    format!(
        r#"{{"type":"{kind}","id":{},"payload":"#,
        serde_json::Value::from(id)
    )
}

/// The `next` message sent instead of a result over the response limit.
fn too_large_next(kind: &str, id: &str, limit: usize) -> String {
    serde_json::to_string(&Outgoing {
        kind,
        id,
        payload: &Response::from_errors(vec![too_large_error(limit)]),
    })
    .expect("BUG: an error response serialises")
}

/// A `next` message: its head, then the payload.
fn next_message(head: &str, payload: &str) -> String {
    let mut text = String::with_capacity(head.len() + payload.len() + 1);
    text.push_str(head);
    text.push_str(payload);
    text.push('}');
    text
}

/// Whether a read failed because the client sent more than the limit.
fn too_big(err: &axum::Error) -> bool {
    let source = std::error::Error::source(err);
    matches!(
        source.and_then(|e| e.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// Queues a message without flushing it.
async fn feed_json(sink: &mut Sink, message: &serde_json::Value) -> Result<(), axum::Error> {
    sink.feed(Message::Text(Utf8Bytes::from(message.to_string())))
        .await
}

async fn send_json(sink: &mut Sink, message: &serde_json::Value) -> Result<(), axum::Error> {
    sink.send(Message::Text(Utf8Bytes::from(message.to_string())))
        .await
}
