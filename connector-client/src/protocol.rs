//! The `graphql-transport-ws` messages a client sends and receives
//! (<https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>).
//! Nothing here is specific to Ferrite's server.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The WebSocket subprotocol.
pub(crate) const SUBPROTOCOL: &str = "graphql-transport-ws";

/// Close code of a server refusing `connection_init` (bad credentials).
pub(crate) const CLOSE_FORBIDDEN: u16 = 4403;

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ClientMessage<'a> {
    ConnectionInit { payload: Value },
    Ping {},
    Pong {},
    Subscribe { id: &'a str, payload: Request<'a> },
    Complete { id: &'a str },
}

#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    pub query: &'a str,
    pub variables: Value,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMessage {
    ConnectionAck,
    Ping,
    Pong,
    Next {
        id: String,
        payload: Response,
    },
    Error {
        id: String,
        payload: Vec<GraphqlError>,
    },
    Complete {
        id: String,
    },
}

/// One execution result.
#[derive(Debug, Deserialize)]
pub(crate) struct Response {
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub errors: Vec<GraphqlError>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GraphqlError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub extensions: Option<Value>,
}

impl GraphqlError {
    /// `extensions.code`, or `UNKNOWN` from a server that sends none.
    pub fn code(&self) -> String {
        self.extensions
            .as_ref()
            .and_then(|extensions| extensions.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN")
            .to_owned()
    }
}

impl ClientMessage<'_> {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("BUG: client messages serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_match_the_protocol() {
        let subscribe = ClientMessage::Subscribe {
            id: "1",
            payload: Request {
                query: "{ a }",
                variables: json!({}),
            },
        };
        assert_eq!(
            serde_json::from_str::<Value>(&subscribe.to_text()).unwrap(),
            json!({"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "variables": {}}})
        );
        assert_eq!(ClientMessage::Ping {}.to_text(), r#"{"type":"ping"}"#);
        let next: ServerMessage = serde_json::from_str(
            r#"{"type":"next","id":"1","payload":{"errors":[{"message":"m","extensions":{"code":"NOT_FOUND"}}]}}"#,
        )
        .unwrap();
        match next {
            ServerMessage::Next { payload, .. } => {
                assert_eq!(payload.errors[0].code(), "NOT_FOUND")
            }
            other => panic!("{other:?}"),
        }
        let ping: ServerMessage =
            serde_json::from_str(r#"{"type":"ping","payload":{"x":1}}"#).unwrap();
        assert!(matches!(ping, ServerMessage::Ping));
    }
}
