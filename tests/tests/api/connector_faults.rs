//! The faults a gateway (`ferrite-connector`) meets in the field, against
//! the real server or a fake one where the real one cannot misbehave: a
//! server unreachable at start, a wrong URL, a revoked or read-only key, an
//! event the server refuses, a silent server, garbage from the server, and
//! TLS with a certificate to trust.

use std::time::Duration;

use crate::connector::{
    Gateway, device, gateway, next_disconnect_reason, options, options_at, stored_payloads,
};
use ferrite_connector::{ConnectionState, Connector, DeviceSpec, DeviceStatus, Error, Event};
use ferrite_e2e::{Backend, TestApp};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_unreachable_at_start_gets_the_events_once_it_is_up() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "WRITE").await;
    let down = app.stop_for_now().await;

    // The gateway starts while the server is down: calls time out, events
    // wait in the outbox.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("ws://{}/graphql", down.addr());
    let options = options_at(&url, &key, "gw", dir.path().join("outbox.db"))
        .request_timeout(Duration::from_millis(500))
        .unwrap();
    let connector = Connector::start(options).await.unwrap();
    let taken_from = chrono::Utc::now();
    let error = connector
        .register(DeviceSpec::new("early"))
        .await
        .unwrap_err();
    assert_eq!(error, Error::Timeout(Duration::from_millis(500)));
    let error = connector.event("early", "n", json!(0)).await.unwrap_err();
    assert_eq!(error, Error::NotAcknowledged(Duration::from_millis(500)));
    connector
        .queue(
            (1..20)
                .map(|n| Event::new("early", "n", json!(n)))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(connector.pending_events().await, 20);
    let taken_until = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(matches!(
        *connector.state().borrow(),
        ConnectionState::Disconnected { .. } | ConnectionState::Reconnecting { .. }
    ));

    // The server comes up: the gateway connects, registers, and delivers.
    let app = down.start_again().await;
    connector.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        stored_payloads(&app, &token, Value::Null).await,
        (0..20).collect::<Vec<_>>()
    );
    let early = device(&app, &token, "early").await.unwrap();
    assert_eq!(early["status"], "ONLINE");

    // Each event carries the time it was taken, not the time it arrived.
    let times = app
        .gql(
            Some(&token),
            "{ events(first: 50) { nodes { occurredAt receivedAt } } }",
            json!({}),
        )
        .await;
    let parse = |value: &Value| {
        chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let nodes = times.data()["events"]["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 20);
    for node in &nodes {
        let (occurred, received) = (parse(&node["occurredAt"]), parse(&node["receivedAt"]));
        assert!(
            taken_from <= occurred && occurred <= taken_until && taken_until < received,
            "taken {taken_from}..{taken_until}, occurred {occurred}, received {received}"
        );
    }
    connector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_the_gateway_with_a_clear_error() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let (key, key_info) = app.create_api_key_with_id(&token, "WRITE").await;
    let dir = tempfile::tempdir().unwrap();
    let connector = Connector::start(options(&app, &key, "gw", &dir))
        .await
        .unwrap();
    connector.register(DeviceSpec::new("d")).await.unwrap();
    app.gql(
        Some(&token),
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({"id": key_info}),
    )
    .await
    .data();

    // The open socket is closed with 4403; the gateway stops instead of
    // reconnecting in a loop, and says why.
    let error = tokio::time::timeout(Duration::from_secs(10), connector.closed())
        .await
        .expect("the gateway gives up within 10 s");
    assert!(
        matches!(&error, Error::Unauthorized(message) if message.contains("revoked")),
        "{error}"
    );
    assert_eq!(
        *connector.state().borrow(),
        ConnectionState::Failed(error.clone())
    );
    assert_eq!(
        connector.event("d", "n", json!(1)).await.unwrap_err(),
        error
    );
    assert_eq!(connector.shutdown().await.unwrap_err(), error);

    // A gateway started with the revoked key fails the same way.
    let dir = tempfile::tempdir().unwrap();
    let connector = Connector::start(options(&app, &key, "gw", &dir))
        .await
        .unwrap();
    let error = connector
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unauthorized(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_cannot_run_a_gateway() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "READ").await;
    let dir = tempfile::tempdir().unwrap();
    let connector = Connector::start(options(&app, &key, "gw", &dir))
        .await
        .unwrap();
    // The first refusal ends the session: retrying cannot help.
    let error = connector.register(DeviceSpec::new("d")).await.unwrap_err();
    assert!(
        matches!(&error, Error::Unauthorized(message) if message.contains("may not manage devices") && message.contains("FORBIDDEN")),
        "{error}"
    );
    assert_eq!(connector.closed().await, error);
    assert_eq!(app.device_count(&token).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_url_is_retried_slowly_and_explained() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "WRITE").await;
    let dir = tempfile::tempdir().unwrap();
    // The right server, the wrong path.
    let options = options_at(
        &app.url("/not-graphql"),
        &key,
        "gw",
        dir.path().join("outbox.db"),
    )
    .reconnect_delay(Duration::from_millis(200), Duration::from_secs(1))
    .unwrap();
    let connector = Connector::start(options).await.unwrap();
    let mut state = connector.state();
    let mut attempts = 0;
    let mut reason = String::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        if tokio::time::timeout(Duration::from_millis(100), state.changed())
            .await
            .is_ok()
        {
            match &*state.borrow_and_update() {
                ConnectionState::Disconnected { reason: why } => reason = why.clone(),
                ConnectionState::Reconnecting { .. } => attempts += 1,
                ConnectionState::Connecting => {}
                other => panic!("unexpected state {other:?}"),
            }
        }
    }
    assert!(reason.contains("HTTP 404"), "{reason}");
    // Backoff, not a tight loop: at most a handful of attempts in 2 s.
    assert!((1..=8).contains(&attempts), "{attempts} attempts in 2 s");
    connector.shutdown().await.unwrap();
}

/// The server refuses an event the gateway let through (its payload limit
/// is lower than the gateway's): that event is rejected and removed, not
/// retried forever, and the events around it are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_server_refuses_is_dropped_and_the_rest_flows() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, |config| config.limits.payload_bytes = 1024).await;
    let Gateway {
        token,
        key: _,
        dir: _outbox,
        connector,
    } = gateway(&app).await;
    connector.register(DeviceSpec::new("cam")).await.unwrap();

    let big = json!({"image": "x".repeat(2000)});
    let error = connector
        .event("cam", "snapshot", big.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Rejected { code, .. } if code == "BAD_USER_INPUT"),
        "{error}"
    );
    assert_eq!(connector.pending_events().await, 0);

    // A bad one in the middle of a batch: the others are stored, in order.
    let mut events: Vec<Event> = (0..5).map(|n| Event::new("cam", "n", json!(n))).collect();
    events.push(Event::new("cam", "snapshot", big));
    events.extend((5..10).map(|n| Event::new("cam", "n", json!(n))));
    connector.queue(events).await.unwrap();
    connector.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        stored_payloads(&app, &token, Value::Null).await,
        (0..10).collect::<Vec<_>>()
    );
    connector.shutdown().await.unwrap();
}

/// A minimal graphql-transport-ws endpoint standing in for a server that
/// misbehaves (the real one cannot be made to): it accepts every
/// connection, acknowledges `connection_init`, sends `after_ack` as text
/// frames, then reads and ignores everything (pings included). Each
/// acknowledged connection is reported on the returned channel.
async fn fake_server(
    after_ack: Vec<&'static str>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use tokio_tungstenite::tungstenite::{
        Message,
        handshake::server::{Request, Response},
        http::HeaderValue,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted_tx, accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let accepted_tx = accepted_tx.clone();
            let after_ack = after_ack.clone();
            tokio::spawn(async move {
                // tungstenite's callback signature: its error is an HTTP response.
                #[allow(clippy::result_large_err)]
                let agree = |_: &Request, mut response: Response| {
                    response.headers_mut().insert(
                        "sec-websocket-protocol",
                        HeaderValue::from_static("graphql-transport-ws"),
                    );
                    Ok(response)
                };
                let mut socket = tokio_tungstenite::accept_hdr_async(stream, agree)
                    .await
                    .unwrap();
                let _init = socket.next().await;
                socket
                    .send(Message::text(r#"{"type":"connection_ack"}"#))
                    .await
                    .unwrap();
                let _ = accepted_tx.send(());
                for text in after_ack {
                    if socket.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                while let Some(Ok(_)) = socket.next().await {}
            });
        }
    });
    (addr, accepted)
}

/// A server that accepts the session and then goes silent (a dead NAT
/// mapping, a hung process) is given up after the keep-alive timeout, and
/// the gateway reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_dropped_after_the_keepalive_timeout() {
    let (addr, mut accepted) = fake_server(Vec::new()).await;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("ws://{addr}/graphql");
    let options = options_at(&url, "frt_x", "gw", dir.path().join("outbox.db"))
        .keepalive(Duration::from_millis(100), Duration::from_millis(400))
        .unwrap()
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(100))
        .unwrap();
    let connector = Connector::start(options).await.unwrap();
    let mut state = connector.state();
    tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await
        .unwrap();
    let reason = next_disconnect_reason(&mut state).await;
    assert!(reason.contains("silent"), "{reason}");
    // …and the gateway connects again.
    tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await
        .expect("a new connection")
        .unwrap();
    connector.shutdown().await.unwrap();
}

/// `wss://` to a server behind a TLS-terminating proxy (as nginx or Caddy
/// would be) with a self-signed certificate: refused (and retried, with the
/// reason) until the gateway trusts it with `tls_ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reaches_a_tls_server_it_was_told_to_trust() {
    use std::sync::Arc;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let key = app.create_api_key(&token, "WRITE").await;

    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("server.pem");
    std::fs::write(&ca_file, certified.cert.pem()).unwrap();
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![certified.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let backend = app.addr;
    tokio::spawn(async move {
        loop {
            let (client, _) = proxy.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let mut server = tokio::net::TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    let url = format!("wss://{proxy_addr}/graphql");

    // Not trusted: a TLS error, retried (the operator may fix the proxy).
    let untrusting = options_at(&url, &key, "gw", dir.path().join("first.db"));
    let connector = Connector::start(untrusting).await.unwrap();
    let mut state = connector.state();
    let reason = next_disconnect_reason(&mut state).await;
    assert!(
        reason.contains("TLS") && reason.contains("tls_ca_file"),
        "{reason}"
    );
    connector.shutdown().await.unwrap();

    // Trusted: the whole session runs over TLS.
    let trusting = options_at(&url, &key, "gw", dir.path().join("second.db"))
        .tls_ca_file(&ca_file)
        .unwrap();
    let connector = Connector::start(trusting).await.unwrap();
    let device = connector.register(DeviceSpec::new("secure")).await.unwrap();
    assert_eq!(device.status, DeviceStatus::Online);
    let ack = connector
        .event("secure", "temperature", json!({"celsius": 20}))
        .await
        .unwrap();
    assert!(ack.id > 0);
    assert_eq!(app.event_count(&token).await, 1);
    connector.shutdown().await.unwrap();
}

/// Garbage from the server (an answer to an operation never started, a
/// message outside the protocol, text that is not JSON) ends that
/// connection with a reason and a reconnect; queued events stay queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_server_costs_a_reconnect_not_an_event() {
    let cases = [
        r#"{"type":"mystery","id":"1"}"#,
        "this is not JSON",
        r#"{"type":"next"}"#,
    ];
    for garbage in cases {
        // An answer to an operation that was never started comes first: it
        // is ignored, the garbage after it is not.
        let (addr, mut accepted) = fake_server(vec![
            r#"{"type":"next","id":"999","payload":{"data":{"x":1}}}"#,
            garbage,
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("ws://{addr}/graphql");
        let options = options_at(&url, "frt_x", "gw", dir.path().join("outbox.db"))
            .request_timeout(Duration::from_millis(300))
            .unwrap();
        let connector = Connector::start(options).await.unwrap();
        let mut state = connector.state();
        let reason = next_disconnect_reason(&mut state).await;
        assert!(
            reason.contains("not graphql-transport-ws"),
            "{garbage}: {reason}"
        );
        // The fake never answers a registration; the device is managed
        // anyway, so an event can be queued for it, and it stays queued.
        let unanswered = connector.register(DeviceSpec::new("d")).await;
        assert_eq!(
            unanswered.unwrap_err(),
            Error::Timeout(Duration::from_millis(300))
        );
        connector
            .queue(vec![Event::new("d", "n", json!(1))])
            .await
            .unwrap();
        // …and it connects again, and again.
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(10), accepted.recv())
                .await
                .expect("a connection")
                .unwrap();
        }
        let reason = next_disconnect_reason(&mut state).await;
        assert!(
            reason.contains("not graphql-transport-ws"),
            "{garbage}: {reason}"
        );
        assert_eq!(connector.pending_events().await, 1);
        connector.shutdown().await.unwrap();
    }
}
