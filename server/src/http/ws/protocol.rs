//! The two dialects' messages and close codes, read and written without
//! any I/O: what a client may send (decoded within the limits), which
//! subprotocol a client gets, what a `connection_init` carries, and the
//! codes the server closes with. Unit-tested here; the connection loop is
//! in `connection`.

use axum::http::{HeaderMap, header};
use serde::Deserialize;

use crate::{config::Limits, graphql::admission};

/// The graphql-ws library's protocol.
pub const TRANSPORT_WS: &str = "graphql-transport-ws";
/// The legacy subscriptions-transport-ws protocol.
pub const LEGACY_WS: &str = "graphql-ws";

/// Which dialect a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library's protocol).
    TransportWs,
    /// `graphql-ws`, the legacy subscriptions-transport-ws protocol.
    Legacy,
}

impl Protocol {
    /// The dialect of a negotiated subprotocol; a client that names none
    /// gets the current one.
    pub(super) fn of(subprotocol: Option<&str>) -> Self {
        match subprotocol {
            Some(LEGACY_WS) => Protocol::Legacy,
            _ => Protocol::TransportWs,
        }
    }

    /// The type of a message carrying a result.
    pub(super) fn next_kind(self) -> &'static str {
        match self {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        }
    }
}

/// The close codes the server uses: graphql-transport-ws's own (44xx) and
/// RFC 6455's. The legacy protocol gets the same.
pub(super) mod code {
    /// The client ended the session (legacy `connection_terminate`).
    pub const NORMAL: u16 = 1000;
    /// Nothing heard for the idle timeout, or the server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A message larger than `websocket.max_message_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// The server could not write to the socket.
    pub const INTERNAL: u16 = 1011;
    /// The user's role changed: reconnect to continue in the new one.
    pub const RECONNECT: u16 = 1012;
    /// A message that is not JSON, or not part of the protocol.
    pub const BAD_MESSAGE: u16 = 4400;
    /// `subscribe` before `connection_ack`.
    pub const UNAUTHORIZED: u16 = 4401;
    /// No, an invalid, an expired or a revoked credential.
    pub const FORBIDDEN: u16 = 4403;
    /// No `connection_init` within `websocket.init_timeout_seconds`.
    pub const INIT_TIMEOUT: u16 = 4408;
    /// An operation id already running.
    pub const DUPLICATE_ID: u16 = 4409;
    /// A second `connection_init`.
    pub const TOO_MANY_INITS: u16 = 4429;
}

/// The client's first choice among the protocols we speak: RFC 6455 has
/// the client list them "ordered by preference" (axum keeps them in a set,
/// so the order is read here). Python's gql offers `graphql-ws,
/// graphql-transport-ws` and, as it misses our lower-case
/// `sec-websocket-protocol` response header, speaks its first choice:
/// honouring the order is what makes gql work unconfigured.
pub(super) fn preferred_protocol(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|offered| match offered.trim() {
            TRANSPORT_WS => Some(TRANSPORT_WS),
            LEGACY_WS => Some(LEGACY_WS),
            _ => None,
        })
}

/// A message from the client, in either protocol.
#[derive(Debug)]
pub(super) enum ClientMessage {
    ConnectionInit {
        payload: Option<serde_json::Value>,
    },
    Ping {
        payload: Option<serde_json::Value>,
    },
    Pong {},
    /// graphql-transport-ws.
    Subscribe {
        id: String,
        payload: async_graphql::Request,
    },
    /// graphql-transport-ws.
    Complete {
        id: String,
    },
    /// Legacy.
    Start {
        id: String,
        payload: async_graphql::Request,
    },
    /// Legacy.
    Stop {
        id: String,
    },
    /// Legacy.
    ConnectionTerminate {},
}

/// What every message has: its type, and the `id` and `payload` some
/// types carry. The payload is kept as its text and parsed once, straight
/// into what the type says (an internally tagged enum would first copy the
/// whole message, variables and all, into serde's generic buffer: 9 % of
/// the CPU of a socket publishing batches, measured).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, borrow)]
    payload: Option<&'a serde_json::value::RawValue>,
}

impl Envelope<'_> {
    fn into_message(self) -> Result<ClientMessage, serde_json::Error> {
        use serde::de::Error;
        let id = |id: Option<String>| id.ok_or_else(|| serde_json::Error::missing_field("id"));
        let request = |payload: Option<&serde_json::value::RawValue>| match payload {
            Some(payload) => serde_json::from_str(payload.get()),
            None => Err(serde_json::Error::missing_field("payload")),
        };
        // `"payload": null` is no payload, as `Option` reads it.
        let optional = |payload: Option<&serde_json::value::RawValue>| {
            payload.map_or(Ok(None), |payload| serde_json::from_str(payload.get()))
        };
        Ok(match &*self.kind {
            "connection_init" => ClientMessage::ConnectionInit {
                payload: optional(self.payload)?,
            },
            "ping" => ClientMessage::Ping {
                payload: optional(self.payload)?,
            },
            "pong" => ClientMessage::Pong {},
            "subscribe" => ClientMessage::Subscribe {
                id: id(self.id)?,
                payload: request(self.payload)?,
            },
            "complete" => ClientMessage::Complete { id: id(self.id)? },
            "start" => ClientMessage::Start {
                id: id(self.id)?,
                payload: request(self.payload)?,
            },
            "stop" => ClientMessage::Stop { id: id(self.id)? },
            "connection_terminate" => ClientMessage::ConnectionTerminate {},
            other => return Err(serde_json::Error::unknown_variant(other, &[])),
        })
    }
}

/// Reads a client's text message: its nesting is scanned before serde_json
/// builds anything. Either failure closes the socket with 4400.
pub(super) fn decode(text: &str, limits: &Limits) -> Result<ClientMessage, Close> {
    let max_depth = limits.json_depth + admission::JSON_ENVELOPE_DEPTH;
    admission::scan_json(text.as_bytes(), max_depth)
        .map_err(|too_deep| Close::new(code::BAD_MESSAGE, too_deep))?;
    serde_json::from_str::<Envelope>(text)
        .and_then(Envelope::into_message)
        .map_err(|_| Close::new(code::BAD_MESSAGE, "Invalid message received"))
}

/// Why the server closes a socket.
pub(super) struct Close(pub(super) u16, pub(super) String);

/// A close frame carries at most 125 bytes: the code's 2 and the reason.
const CLOSE_REASON_MAX: usize = 123;

impl Close {
    /// The reason is cut (at a character boundary) to what a close frame
    /// holds; a longer one would make the frame itself invalid.
    pub(super) fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > CLOSE_REASON_MAX {
            let mut end = CLOSE_REASON_MAX;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Close(code, reason)
    }
}

/// A message with a payload, as sent to the client.
#[derive(serde::Serialize)]
pub(super) struct Outgoing<'a, T> {
    #[serde(rename = "type")]
    pub(super) kind: &'a str,
    pub(super) id: &'a str,
    pub(super) payload: &'a T,
}

/// The refusal when `connection_init` carries no credential in a shape
/// this server reads.
pub(super) const INIT_CREDENTIAL_NEEDED: &str = "connection_init needs {\"Authorization\": \"Bearer <token>\"} (or authToken, token, headers.Authorization)";

/// The token a `connection_init` payload carries, in any of the shapes
/// clients send: `Authorization` (Apollo, graphql-ws examples), `authToken`
/// (Apollo's docs), `token`, or `headers.Authorization` (Hasura and the
/// clients copying it); keys in any case; the value `Bearer <token>` or
/// the bare token. Another scheme (`Basic …`) is not a token.
pub(super) fn init_credential(
    payload: &serde_json::Map<String, serde_json::Value>,
) -> Option<&str> {
    let headers = find(payload, "headers").and_then(|h| h.as_object());
    let value = ["authorization", "authToken", "token"]
        .iter()
        .find_map(|name| find(payload, name))
        .or_else(|| headers.and_then(|h| find(h, "authorization")))?
        .as_str()?
        .trim();
    // With a scheme, it must be `Bearer` (`Basic …` is not a token); a
    // single word is the token itself, unless it is the scheme alone.
    if value.contains(char::is_whitespace) {
        crate::auth::bearer_token(value)
    } else {
        (!value.is_empty() && !value.eq_ignore_ascii_case("bearer")).then_some(value)
    }
}

/// The value of `name` in `map`, whatever the case of the key.
pub(super) fn find<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    map.iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{ClientMessage, Protocol, code, decode, init_credential, preferred_protocol};
    use crate::config::Limits;

    #[test]
    fn the_close_codes_are_the_protocols() {
        // graphql-transport-ws's own codes, and RFC 6455's: clients act on
        // these numbers (graphql-ws treats 4400, 4401, 4406, 4409, 4429
        // and 4500 as fatal, and retries the rest).
        let table = [
            (code::NORMAL, 1000),
            (code::GOING_AWAY, 1001),
            (code::TOO_BIG, 1009),
            (code::INTERNAL, 1011),
            (code::RECONNECT, 1012),
            (code::BAD_MESSAGE, 4400),
            (code::UNAUTHORIZED, 4401),
            (code::FORBIDDEN, 4403),
            (code::INIT_TIMEOUT, 4408),
            (code::DUPLICATE_ID, 4409),
            (code::TOO_MANY_INITS, 4429),
        ];
        for (constant, number) in table {
            assert_eq!(constant, number);
        }
    }

    #[test]
    fn messages_of_both_dialects_decode_and_garbage_is_4400() {
        let limits = Limits::default();
        let subscribe =
            r#"{"type":"subscribe","id":"1","payload":{"query":"{ me { permission } }"}}"#;
        assert!(
            matches!(decode(subscribe, &limits), Ok(ClientMessage::Subscribe { id, .. }) if id == "1")
        );
        let start = r#"{"type":"start","id":"a","payload":{"query":"{ __typename }"}}"#;
        assert!(matches!(
            decode(start, &limits),
            Ok(ClientMessage::Start { .. })
        ));
        for init in [
            r#"{"type":"connection_init"}"#,
            r#"{"type":"connection_init","payload":null}"#,
        ] {
            assert!(matches!(
                decode(init, &limits),
                Ok(ClientMessage::ConnectionInit { payload: None })
            ));
        }
        // Escaped type names, fields in any order, unknown fields ignored.
        let ping = r#"{"payload":{"n":1},"extra":[1],"type":"p\u0069ng"}"#;
        assert!(matches!(
            decode(ping, &limits),
            Ok(ClientMessage::Ping { payload: Some(p) }) if p == json!({"n": 1})
        ));
        let stop = r#"{"id":"a","type":"stop","payload":{"ignored":true}}"#;
        assert!(matches!(decode(stop, &limits), Ok(ClientMessage::Stop { id }) if id == "a"));
        let variables = r#"{"type":"subscribe","id":"v","payload":{"query":"q","variables":{"i":{"x":[1,2.5,"s"]}},"operationName":"O"}}"#;
        let Ok(ClientMessage::Subscribe { payload, .. }) = decode(variables, &limits) else {
            panic!("decodes");
        };
        assert_eq!(payload.operation_name.as_deref(), Some("O"));
        assert_eq!(
            payload.variables.into_value().into_json().unwrap(),
            json!({"i": {"x": [1, 2.5, "s"]}})
        );
        let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
        for garbage in [
            "",
            "not json",
            "[]",
            r#"{"type":"launch"}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","id":1,"payload":{}}"#,
            r#"{"type":"subscribe","id":"1"}"#,
            r#"{"type":"subscribe","id":"1","payload":null}"#,
            r#"{"type":"subscribe","id":"1","payload":{"query":1}}"#,
            r#"{"type":"complete"}"#,
            r#"{"type":"stop","id":null}"#,
            r#"{"type":"ping","payload":"#,
            r#"{"type":"subscribe","type":"subscribe","id":"1","payload":{"query":"{ a }"}}"#,
            r#"{"type":7}"#,
            r#"{"id":"1","payload":{"query":"{ a }"}}"#,
            deep.as_str(),
        ] {
            let refused = decode(garbage, &limits).expect_err("refused");
            assert_eq!(refused.0, code::BAD_MESSAGE, "{:.40}", garbage);
        }
    }

    #[test]
    fn the_subprotocol_is_the_clients_first_choice() {
        let offered = |values: &[&str]| {
            let mut headers = axum::http::HeaderMap::new();
            for value in values {
                headers.append(
                    axum::http::header::SEC_WEBSOCKET_PROTOCOL,
                    value.parse().unwrap(),
                );
            }
            preferred_protocol(&headers)
        };
        assert_eq!(
            offered(&["graphql-ws, graphql-transport-ws"]),
            Some("graphql-ws")
        );
        assert_eq!(
            offered(&["mqtt", "graphql-transport-ws"]),
            Some("graphql-transport-ws")
        );
        assert_eq!(offered(&["mqtt"]), None);
        assert_eq!(offered(&[]), None);
        assert_eq!(Protocol::of(None), Protocol::TransportWs);
        assert_eq!(Protocol::of(Some("graphql-ws")), Protocol::Legacy);
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let refusal = super::Close::new(
            4403,
            format!("Forbidden: {}", super::INIT_CREDENTIAL_NEEDED),
        );
        assert_eq!(
            refusal.1,
            format!("Forbidden: {}", super::INIT_CREDENTIAL_NEEDED),
            "the refusal is cut"
        );
        let long = super::Close::new(4403, "é".repeat(100));
        assert!(long.1.len() <= super::CLOSE_REASON_MAX && long.1.chars().all(|c| c == 'é'));
    }

    #[test]
    fn connection_init_takes_the_shapes_clients_send() {
        let read = |payload: serde_json::Value| {
            init_credential(payload.as_object().unwrap()).map(str::to_owned)
        };
        let accepted = [
            json!({"Authorization": "Bearer abc"}),
            json!({"authorization": "bearer abc"}),
            json!({"AUTHORIZATION": "  Bearer   abc  "}),
            json!({"Authorization": "abc"}),
            json!({"authToken": "abc"}),
            json!({"authtoken": "Bearer abc"}),
            json!({"token": "abc"}),
            json!({"headers": {"Authorization": "Bearer abc"}}),
            json!({"headers": {"authorization": "abc"}, "connectorId": "gw"}),
        ];
        for payload in accepted {
            assert_eq!(read(payload.clone()).as_deref(), Some("abc"), "{payload}");
        }
        let refused = [
            json!({}),
            json!({"Authorization": "Basic YWJjOmRlZg=="}),
            json!({"Authorization": "Bearer "}),
            json!({"Authorization": ""}),
            json!({"Authorization": 42}),
            json!({"authToken": {"nested": "abc"}}),
            json!({"headers": "Bearer abc"}),
            json!({"headers": {"X-Token": "abc"}}),
        ];
        for payload in refused {
            assert_eq!(read(payload.clone()), None, "{payload}");
        }
    }
}
