//! The WebSocket transport: `connection_init` and its credential shapes,
//! close codes for garbage and bad credentials, queries and mutations over
//! the socket, the legacy protocol, token expiry and renewal, revocation,
//! and the subprotocol choice.

use std::time::Duration;

use ferrite_e2e::{
    Backend, TestApp, on_both_backends,
    ws::{Op, RawSocket, close_code, close_frame, next_json, run_once, send_json},
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

on_both_backends!(
    connection_init_takes_every_shape_clients_send,
    a_bad_token_closes_the_socket_with_4403,
    garbage_on_the_socket_gets_the_protocols_close_codes,
    queries_and_mutations_run_over_the_socket,
    the_legacy_protocol_works,
    a_connection_closes_when_its_token_expires_unless_renewed,
    revoking_an_api_key_closes_its_connections,
);

/// Apollo's `authToken`, Hasura's `headers`, lower case, a bare token: each
/// opens a session, for an access token and an API key alike; another
/// scheme is refused with a reason naming what is expected.
async fn connection_init_takes_every_shape_clients_send(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let key = app.create_api_key(&admin, "READ").await;
    for token in [admin.as_str(), key.as_str()] {
        let bearer = format!("Bearer {token}");
        for payload in [
            json!({"Authorization": bearer}),
            json!({"authorization": bearer}),
            json!({"Authorization": token}),
            json!({"authToken": token}),
            json!({"token": bearer}),
            json!({"headers": {"Authorization": bearer}}),
            json!({"headers": {"authorization": token}}),
        ] {
            let mut socket = app.raw_socket("graphql-transport-ws").await;
            send_json(
                &mut socket,
                json!({"type": "connection_init", "payload": payload}),
            )
            .await;
            let answer = next_json(&mut socket).await;
            assert_eq!(answer["type"], "connection_ack", "{payload}: {answer}");
            let me = run_raw(&mut socket, "{ me { user { username } } }").await;
            assert_eq!(me["data"]["me"]["user"]["username"], "admin", "{payload}");
        }
    }
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Basic {admin}")}}),
    )
    .await;
    let closed = socket.next().await;
    match closed {
        Some(Ok(tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4403);
            assert!(frame.reason.contains("authToken"), "{}", frame.reason);
        }
        other => panic!("expected a 4403 close, got {other:?}"),
    }
}

/// Runs one query over an initialised raw socket; its `next` payload.
async fn run_raw(socket: &mut RawSocket, query: &str) -> Value {
    send_json(
        socket,
        json!({"type": "subscribe", "id": "q", "payload": {"query": query}}),
    )
    .await;
    let answer = next_json(socket).await;
    assert_eq!(answer["type"], "next", "{answer}");
    assert_eq!(next_json(socket).await["type"], "complete");
    answer["payload"].clone()
}

async fn a_bad_token_closes_the_socket_with_4403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    // A revoked key is one of the bad tokens.
    let (key, key_id) = app.create_api_key_with_id(&admin, "READ").await;
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({"id": key_id}),
    )
    .await
    .data();
    for token in ["garbage", "a.b.c", key.as_str()] {
        match app.ws_client(token, None).await {
            Err(graphql_ws_client::Error::Close(code, _)) => {
                assert_eq!(code, 4403, "token {token}")
            }
            Err(other) => panic!("token {token}: expected close 4403, got {other}"),
            Ok(_) => panic!("token {token} was accepted"),
        }
    }
    // No token at all.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {}}),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(4403));
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, json!({"type": "connection_init"})).await;
    assert_eq!(close_code(&mut socket).await, Some(4403));
    // A good token with a connector id no gateway could mean.
    let too_long = "g".repeat(129);
    for connector_id in ["", too_long.as_str(), "gw\n1", "gw\u{0}", "gw\u{1b}[31m"] {
        match app.ws_client(&admin, Some(connector_id)).await {
            Err(graphql_ws_client::Error::Close(code, reason)) => {
                assert_eq!(code, 4403, "connectorId {connector_id:?}");
                assert!(reason.contains("connectorId"), "{reason}");
            }
            Err(other) => panic!("connectorId {connector_id:?}: expected 4403, got {other}"),
            Ok(_) => panic!("connectorId {connector_id:?} was accepted"),
        }
    }
    // The longest allowed one is a session.
    let longest = "g".repeat(128);
    assert!(app.ws_client(&admin, Some(&longest)).await.is_ok());
}

async fn garbage_on_the_socket_gets_the_protocols_close_codes(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.websocket.init_timeout_seconds = 1;
        config.websocket.max_message_bytes = 64 * 1024;
        config.websocket.max_subscriptions = 2;
    })
    .await;
    let admin = app.admin_token().await;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {admin}")}});

    // Not JSON.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    socket
        .send(tungstenite::Message::Text("{{{ not json".into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, Some(4400));
    // An unknown message type, before and after init.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, json!({"type": "hello"})).await;
    assert_eq!(close_code(&mut socket).await, Some(4400));
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init.clone()).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send_json(
        &mut socket,
        json!({"type": "start", "id": "1", "payload": {"query": "{ __typename }"}}),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(4400));
    // Binary frames.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    socket
        .send(tungstenite::Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, Some(4400));
    // Subscribe before init.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(
        &mut socket,
        json!({"type": "subscribe", "id": "1", "payload": {"query": "{ __typename }"}}),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(4401));
    // A second init.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init.clone()).await;
    next_json(&mut socket).await;
    send_json(&mut socket, init.clone()).await;
    assert_eq!(close_code(&mut socket).await, Some(4429));
    // Duplicate operation ids.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init.clone()).await;
    next_json(&mut socket).await;
    let subscribe = json!({"type": "subscribe", "id": "same", "payload": {"query": "subscription { events { id } }"}});
    send_json(&mut socket, subscribe.clone()).await;
    send_json(&mut socket, subscribe).await;
    assert_eq!(close_code(&mut socket).await, Some(4409));
    // Too many operations: an error for the extra one, the socket stays.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init.clone()).await;
    next_json(&mut socket).await;
    for id in ["a", "b", "c"] {
        send_json(&mut socket, json!({"type": "subscribe", "id": id, "payload": {"query": "subscription { events { id } }"}})).await;
    }
    let refused = next_json(&mut socket).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["id"], "c");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    // A frame over the size limit.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init.clone()).await;
    next_json(&mut socket).await;
    let huge = json!({"type": "subscribe", "id": "1", "payload": {"query": "{ __typename }", "variables": {"pad": "x".repeat(100 * 1024)}}});
    let _ = socket
        .send(tungstenite::Message::Text(huge.to_string().into()))
        .await;
    assert_eq!(close_code(&mut socket).await, Some(1009));
    // No init at all.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    assert_eq!(close_code(&mut socket).await, Some(4408));
    // An invalid operation is an `error` message, and the socket stays open.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init).await;
    next_json(&mut socket).await;
    send_json(
        &mut socket,
        json!({"type": "subscribe", "id": "x", "payload": {"query": "subscription { nosuch }"}}),
    )
    .await;
    let error = next_json(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await["type"], "pong");

    // The server is healthy for everyone else.
    let client = app.ws_client(&admin, None).await.unwrap();
    let mut answer = client
        .subscribe(Op::new("{ me { permission } }", json!({})))
        .await
        .unwrap();
    let answer = answer.next().await.unwrap().unwrap();
    assert_eq!(answer["data"]["me"]["permission"], "ADMIN");
}

async fn queries_and_mutations_run_over_the_socket(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let client = app.ws_client(&admin, None).await.unwrap();
    let registered = run_once(
        &client,
        "mutation { registerDevice(input: {externalId: \"over-ws\"}) { id } }",
        json!({}),
    )
    .await;
    assert!(
        registered["data"]["registerDevice"]["id"].is_string(),
        "{registered}"
    );
    let mut listed = client
        .subscribe(Op::new("{ devices { totalCount } }", json!({})))
        .await
        .unwrap();
    assert_eq!(
        listed.next().await.unwrap().unwrap()["data"]["devices"]["totalCount"],
        1
    );
    // A query completes after its one result.
    assert!(listed.next().await.is_none());
    // A READ key's socket cannot mutate.
    let reader = app.create_api_key(&admin, "READ").await;
    let client = app.ws_client(&reader, None).await.unwrap();
    let refused = run_once(
        &client,
        "mutation { registerDevice(input: {externalId: \"nope\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(app.device_count(&admin).await, 1);
}

async fn the_legacy_protocol_works(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "old-client").await;
    let mut socket = app.raw_socket("graphql-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {admin}")}}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send_json(&mut socket, json!({"type": "start", "id": "1", "payload": {"query": "subscription { events(after: \"0\") { service } }"}})).await;
    app.publish(&admin, &device, "legacy", json!(1)).await;
    let data = loop {
        let message = next_json(&mut socket).await;
        if message["type"] != "ka" {
            break message;
        }
    };
    assert_eq!(
        data,
        json!({"type": "data", "id": "1", "payload": {"data": {"events": {"service": "legacy"}}}})
    );
    send_json(&mut socket, json!({"type": "stop", "id": "1"})).await;
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "complete", "id": "1"})
    );
    // A bad token: connection_error, then 4403.
    let mut socket = app.raw_socket("graphql-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {"authorization": "Bearer nope"}}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_error");
    assert_eq!(close_code(&mut socket).await, Some(4403));
}

async fn a_connection_closes_when_its_token_expires_unless_renewed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.access_token_ttl_seconds = 4).await;
    let admin = app.admin_token().await;
    let init = |token: &str| json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});

    // Not renewed: closed with 4403 once the token runs out, with a reason
    // that tells expiry (refresh, reconnect) from a bad credential (stop).
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init(&admin)).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let (code, reason) = close_frame(&mut socket).await.unwrap();
    assert_eq!(code, 4403);
    assert!(reason.starts_with("the token has expired"), "{reason}");
    // Presenting the expired token again: closed, saying why (at once, or
    // right after the ack while within the validation leeway).
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init(&admin)).await;
    let (code, reason) = close_frame(&mut socket).await.unwrap();
    assert_eq!(code, 4403);
    assert!(reason.contains("expired"), "{reason}");
    // A forged one: a different reason.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init("not-a-token")).await;
    let (code, reason) = close_frame(&mut socket).await.unwrap();
    assert_eq!(code, 4403);
    assert!(!reason.contains("expired"), "{reason}");

    // Renewed in time with a newer access token of the same user: the
    // connection outlives the token it was opened with.
    let admin = app.admin_token().await;
    let key = app.create_api_key(&admin, "READ").await;
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init(&admin)).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let newer = app.admin_token().await;
    let renew = "mutation($t: String!) { renewConnection(token: $t) }";
    send_json(&mut socket, json!({"type": "subscribe", "id": "renew", "payload": {"query": renew, "variables": {"t": newer}}})).await;
    let renewed = next_json(&mut socket).await;
    assert!(
        renewed["payload"]["data"]["renewConnection"].is_string(),
        "{renewed}"
    );
    assert_eq!(next_json(&mut socket).await["type"], "complete");
    // Past the first token's expiry, before the newer one's.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send_json(&mut socket, json!({"type": "subscribe", "id": "q", "payload": {"query": "{ me { user { username } } }"}})).await;
    let answer = next_json(&mut socket).await;
    assert_eq!(
        answer["payload"]["data"]["me"]["user"]["username"], "admin",
        "{answer}"
    );
    assert_eq!(next_json(&mut socket).await["type"], "complete");

    // An API key of the same user cannot make the connection permanent: it
    // is refused, and the connection still ends with its access token.
    send_json(&mut socket, json!({"type": "subscribe", "id": "key", "payload": {"query": renew, "variables": {"t": key}}})).await;
    let refused = next_json(&mut socket).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    assert_eq!(close_code(&mut socket).await, Some(4403));

    // A connection opened with an API key has nothing to renew.
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init(&key)).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let admin = app.admin_token().await;
    send_json(&mut socket, json!({"type": "subscribe", "id": "renew", "payload": {"query": renew, "variables": {"t": admin}}})).await;
    let refused = next_json(&mut socket).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );

    // Another user's token is refused, and so is renewing over HTTP.
    let admin = app.admin_token().await;
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, init(&admin)).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let alice = app.create_member("alice").await;
    send_json(&mut socket, json!({"type": "subscribe", "id": "other", "payload": {"query": renew, "variables": {"t": alice}}})).await;
    let refused = loop {
        let message = next_json(&mut socket).await;
        if message["id"] == "other" && message["type"] == "next" {
            break message;
        }
    };
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"],
        "FORBIDDEN"
    );
    let over_http = app.gql(Some(&alice), renew, json!({"t": alice})).await;
    assert_eq!(over_http.error_code(), "BAD_USER_INPUT");
}

async fn revoking_an_api_key_closes_its_connections(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let (secret, key_id) = app.create_api_key_with_id(&admin, "WRITE").await;
    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(&mut socket, json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {secret}")}})).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    // A session-based connection of the same user stays.
    let bystander = app.ws_client(&admin, None).await.unwrap();

    app.gql(
        Some(&admin),
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({"id": key_id}),
    )
    .await
    .data();
    assert_eq!(close_code(&mut socket).await, Some(4403));
    let still = ferrite_e2e::ws::run_once(&bystander, "{ me { permission } }", json!({})).await;
    assert_eq!(still["data"]["me"]["permission"], "ADMIN");
}

/// The subprotocol is the client's first choice among the two the server
/// speaks (RFC 6455: offered "ordered by preference"), whatever order the
/// header lists others in. Python's gql offers the legacy one first and,
/// missing the lower-case response header, speaks it: that is what makes
/// gql work unconfigured (its own test: examples/typescript/test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_preferred_subprotocol_is_chosen() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(Backend::Sqlite).await;
    // A raw handshake: client libraries check the answer against their
    // own offer, and some would refuse a comma-separated header.
    let chosen = |offers: Vec<&'static str>| async move {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let mut request = format!(
            "GET /graphql HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            app.addr
        );
        for offer in offers {
            request.push_str(&format!("Sec-WebSocket-Protocol: {offer}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        head.lines()
            .find_map(|line| line.strip_prefix("sec-websocket-protocol: "))
            .map(str::to_owned)
    };
    for (offers, expected) in [
        (vec!["graphql-ws, graphql-transport-ws"], "graphql-ws"),
        (
            vec!["graphql-transport-ws, graphql-ws"],
            "graphql-transport-ws",
        ),
        (vec!["mqtt, graphql-ws"], "graphql-ws"),
        (
            vec!["mqtt", "graphql-transport-ws", "graphql-ws"],
            "graphql-transport-ws",
        ),
        (vec!["graphql-ws", "graphql-transport-ws"], "graphql-ws"),
    ] {
        assert_eq!(
            chosen(offers.clone()).await.as_deref(),
            Some(expected),
            "{offers:?}"
        );
    }
}
