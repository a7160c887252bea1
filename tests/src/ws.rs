//! WebSocket clients for the tests: the graphql-ws-client crate (a client we
//! did not write, speaking graphql-transport-ws) over tokio-tungstenite, and
//! a raw socket for feeding the server garbage.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use graphql_ws_client::{Client, Connection, Error, Message, graphql::GraphqlOperation};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        self, Bytes, client::IntoClientRequest, http::HeaderValue, protocol::CloseFrame,
    },
};

use crate::TestApp;

/// A raw WebSocket to the server.
pub type RawSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// graphql-ws-client's transport over tokio-tungstenite 0.29 (the crate
/// ships adapters up to 0.28; this is the same adapter for the version axum
/// uses).
pub struct Tungstenite(pub RawSocket);

impl Connection for Tungstenite {
    async fn receive(&mut self) -> Option<Message> {
        loop {
            match self.0.next().await? {
                Ok(tungstenite::Message::Text(text)) => {
                    return Some(Message::Text(text.as_str().into()));
                }
                Ok(tungstenite::Message::Ping(_)) => return Some(Message::Ping),
                Ok(tungstenite::Message::Pong(_)) => return Some(Message::Pong),
                Ok(tungstenite::Message::Close(frame)) => {
                    return Some(Message::Close {
                        code: frame.as_ref().map(|f| f.code.into()),
                        reason: frame.map(|f| f.reason.to_string()),
                    });
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), Error> {
        let message = match message {
            Message::Text(text) => tungstenite::Message::Text(text.into()),
            Message::Close { code, reason } => {
                tungstenite::Message::Close(code.map(|code| CloseFrame {
                    code: code.into(),
                    reason: reason.unwrap_or_default().into(),
                }))
            }
            Message::Ping => tungstenite::Message::Ping(Bytes::new()),
            Message::Pong => tungstenite::Message::Pong(Bytes::new()),
        };
        self.0
            .send(message)
            .await
            .map_err(|e| Error::Send(e.to_string()))
    }
}

/// A GraphQL operation whose response is left as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub query: String,
    pub variables: Value,
}

impl Op {
    pub fn new(query: &str, variables: Value) -> Self {
        Op {
            query: query.to_owned(),
            variables,
        }
    }
}

impl GraphqlOperation for Op {
    type Response = Value;
    type Error = serde_json::Error;

    fn decode(&self, data: Value) -> Result<Value, serde_json::Error> {
        Ok(data)
    }
}

impl TestApp {
    /// Opens a raw WebSocket on `/graphql` offering `protocol`.
    pub async fn raw_socket(&self, protocol: &str) -> RawSocket {
        let mut request = format!("ws://{}/graphql", self.addr)
            .into_client_request()
            .expect("a request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
        let (socket, response) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .expect("the WebSocket upgrade succeeds");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol)
        );
        socket
    }

    /// A raw graphql-transport-ws socket, initialised with `token` (and
    /// `connector_id`, if any) and acknowledged.
    pub async fn raw_session(&self, token: &str, connector_id: Option<&str>) -> RawSocket {
        let socket = self.raw_socket("graphql-transport-ws").await;
        initialised(socket, token, connector_id).await
    }

    /// A graphql-transport-ws client authenticated with `token` (and
    /// announcing `connector_id`, if any). Its connection runs in a task.
    pub async fn ws_client(
        &self,
        token: &str,
        connector_id: Option<&str>,
    ) -> Result<Client, Error> {
        let socket = self.raw_socket("graphql-transport-ws").await;
        let mut payload = json!({ "Authorization": format!("Bearer {token}") });
        if let Some(id) = connector_id {
            payload["connectorId"] = json!(id);
        }
        let (client, actor) = Client::build(Tungstenite(socket)).payload(payload)?.await?;
        tokio::spawn(actor.into_future());
        Ok(client)
    }
}

/// Reads the next text message of a raw socket as JSON, within 10 s.
pub async fn next_json(socket: &mut RawSocket) -> Value {
    serde_json::from_str(&next_text(socket).await).expect("JSON")
}

/// Reads the next text message of a raw socket as sent, within 10 s.
pub async fn next_text(socket: &mut RawSocket) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        match frame {
            tungstenite::Message::Text(text) => return text.as_str().to_owned(),
            tungstenite::Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

/// Sends `connection_init` with `token` (and `connector_id`, if any) on a
/// graphql-transport-ws socket and waits for the `connection_ack`.
pub async fn initialised(
    mut socket: RawSocket,
    token: &str,
    connector_id: Option<&str>,
) -> RawSocket {
    let mut payload = json!({ "Authorization": format!("Bearer {token}") });
    if let Some(id) = connector_id {
        payload["connectorId"] = json!(id);
    }
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    socket
}

/// Waits for the server to close the socket and returns the close code.
pub async fn close_code(socket: &mut RawSocket) -> Option<u16> {
    close_frame(socket).await.map(|(code, _)| code)
}

/// Waits for the server to close the socket and returns the close code and
/// reason.
pub async fn close_frame(socket: &mut RawSocket) -> Option<(u16, String)> {
    // One deadline for the whole wait: keep-alive pings must not extend it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("the server closes within 15 s");
        match frame {
            None | Some(Err(_)) => return None,
            Some(Ok(tungstenite::Message::Close(frame))) => {
                return frame.map(|f| (f.code.into(), f.reason.to_string()));
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// Sends a JSON message on a raw socket.
pub async fn send_json(socket: &mut RawSocket, message: Value) {
    socket
        .send(tungstenite::Message::Text(message.to_string().into()))
        .await
        .expect("send");
}

/// Runs a query or mutation over a graphql-ws-client socket and returns its
/// one response.
pub async fn run_once(client: &Client, query: &str, variables: Value) -> Value {
    let mut results = client
        .subscribe(Op::new(query, variables))
        .await
        .expect("the operation starts");
    tokio::time::timeout(Duration::from_secs(10), results.next())
        .await
        .expect("an answer within 10 s")
        .expect("an answer")
        .expect("a response")
}

/// The next item of a subscription, within 10 s.
pub async fn next_item<S>(stream: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Value, Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an item within 10 s")
        .expect("the subscription is open")
        .expect("a response")
}

/// Waits until a `deviceChanged` subscription (whose selection includes
/// `device { externalId }`) is live on the server: registers probe devices
/// over HTTP until the subscription reports one. A subscribe message is
/// sent before the server starts the subscription, so without this a test
/// could act too early.
pub async fn until_device_changes_are_live<S>(app: &TestApp, token: &str, changes: &mut S)
where
    S: futures_util::Stream<Item = Result<Value, Error>> + Unpin,
{
    for attempt in 0..40 {
        let probe = format!("probe-{attempt}-{}", uuid::Uuid::new_v4().simple());
        app.register_device(token, &probe).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(Ok(item))) = tokio::time::timeout_at(deadline, changes.next()).await {
            if item["data"]["deviceChanged"]["device"]["externalId"] == probe.as_str() {
                return;
            }
        }
    }
    panic!("the deviceChanged subscription never became live");
}

/// What the operations of a raw graphql-transport-ws socket received, by
/// operation id: each `next` payload exactly as sent, and which completed.
#[derive(Debug, Default)]
pub struct Inbox {
    pub payloads: HashMap<String, Vec<String>>,
    pub completed: HashSet<String>,
}

impl Inbox {
    /// The payloads operation `id` received so far.
    pub fn of(&self, id: &str) -> &[String] {
        self.payloads.get(id).map_or(&[], Vec::as_slice)
    }

    /// Reads `socket` until `done` holds (each message within 10 s).
    /// Keep-alive pings are skipped; any other message but `next` and
    /// `complete` fails the test.
    pub async fn read_until(&mut self, socket: &mut RawSocket, done: impl Fn(&Inbox) -> bool) {
        while !done(self) {
            let text = next_text(socket).await;
            self.take(&text);
        }
    }

    /// Reads whatever `socket` receives within `window`.
    pub async fn read_for(&mut self, socket: &mut RawSocket, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(text) = tokio::time::timeout_at(deadline, next_text(socket)).await {
            self.take(&text);
        }
    }

    fn take(&mut self, text: &str) {
        let message: Value = serde_json::from_str(text).expect("JSON");
        let id = message["id"].as_str().unwrap_or_default().to_owned();
        match message["type"].as_str() {
            Some("next") => self
                .payloads
                .entry(id)
                .or_default()
                .push(payload_text(text).to_owned()),
            Some("complete") => {
                self.completed.insert(id);
            }
            Some("ping" | "pong") => {}
            _ => panic!("unexpected message: {text}"),
        }
    }
}

/// The `payload` of a `next` message, exactly as sent: the server writes
/// `{"type":…,"id":…,"payload":…}` with the payload last.
pub fn payload_text(message: &str) -> &str {
    let at = message
        .find(",\"payload\":")
        .unwrap_or_else(|| panic!("no payload in {message}"));
    message[at + ",\"payload\":".len()..]
        .strip_suffix('}')
        .unwrap_or_else(|| panic!("{message} does not end with its payload"))
}
