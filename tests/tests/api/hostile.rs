//! Hostile clients: each attack from issue 12 against the real server, which
//! must refuse it with a clear code, stay alive, keep its memory bounded,
//! answer a normal query afterwards, and lose nothing it had stored.
//!
//! Attacks that could exhaust memory or crash run against the `ferrite`
//! binary as a child process, so its resident memory can be read alone and
//! a crash is seen as an exit rather than taking the test binary down.
//! Inputs go far past the limits (a million levels deep, not one past).

use std::time::Duration;

use ferrite_e2e::{
    ADMIN_PASSWORD, Backend, TestApp, on_both_backends,
    process::{ServerProcess, free_loopback_addr},
    ws::{RawSocket, close_code, next_json, send_json},
};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

/// A `ferrite` process on SQLite in its own directory, and an HTTP client
/// for it with a timeout, so a starved server fails the test instead of
/// hanging it.
struct Target {
    server: ServerProcess,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Target {
    async fn start(env: &[(&str, &str)]) -> Target {
        let data = tempfile::tempdir().unwrap();
        let server = ServerProcess::start_with(free_loopback_addr(), data.path(), None, env).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Target {
            server,
            http,
            _data: data,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/graphql", self.server.addr)
    }

    /// POSTs a body; the status and the JSON answer.
    async fn post(&self, token: Option<&str>, body: String) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("JSON expected (HTTP {status}): {text:.300}"));
        (status, body)
    }

    async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = json!({"query": query, "variables": variables}).to_string();
        self.post(token, body).await.1
    }

    async fn admin_token(&self) -> String {
        let answer = self
            .gql(
                None,
                "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken } }",
                json!({"p": ADMIN_PASSWORD}),
            )
            .await;
        answer["data"]["login"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("a token: {answer}"))
            .to_owned()
    }

    /// Alive, and answering an ordinary query correctly.
    async fn answers_normally(&mut self) {
        assert!(self.server.is_running(), "the server process has exited");
        let token = self.admin_token().await;
        let answer = self
            .gql(
                Some(&token),
                "{ me { user { username } } devices { totalCount } }",
                json!({}),
            )
            .await;
        assert_eq!(
            answer["data"]["me"]["user"]["username"], "admin",
            "{answer}"
        );
    }

    fn rss_mib(&self) -> f64 {
        self.server.rss_kib().expect("the server is running") as f64 / 1024.0
    }
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error with a code expected: {answer:.500}"))
}

fn message(answer: &Value) -> &str {
    answer["errors"][0]["message"].as_str().unwrap_or("")
}

const MILLION: usize = 1_000_000;

fn nested(open: &str, inner: &str, close: &str, levels: usize) -> String {
    format!("{}{inner}{}", open.repeat(levels), close.repeat(levels))
}

/// Observation 1: a document nested a million levels deep, in every place
/// a document can nest, is refused before parsing; the server lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_a_million_levels_deep_are_refused_everywhere() {
    // The size limits are raised so that the nesting check itself is what
    // refuses (by default, a document this long is refused for its size).
    let mut target = Target::start(&[
        ("FERRITE_LIMITS__BODY_BYTES", "16777216"),
        ("FERRITE_LIMITS__QUERY_BYTES", "16777216"),
        ("FERRITE_LIMITS__QUERY_TOKENS", "100000000"),
    ])
    .await;
    let list = nested("[", "\"x\"", "]", MILLION);
    let object = nested("{a: ", "1", "}", MILLION / 4);
    let documents = [
        (
            "a list literal",
            format!("{{ devices(filter: {{ids: {list}}}) {{ totalCount }} }}"),
        ),
        (
            "an object literal",
            format!(
                "mutation {{ sendCommand(input: {{deviceId: \"x\", service: \"s\", payload: {object}}}) {{ id }} }}"
            ),
        ),
        (
            "a variable's default",
            format!(
                "query($v: [ID!] = {list}) {{ devices(filter: {{ids: $v}}) {{ totalCount }} }}"
            ),
        ),
        (
            "a directive argument",
            format!("{{ me @include(if: {list}) {{ username }} }}"),
        ),
        (
            "a variable's type",
            format!(
                "query($v: {}) {{ me {{ username }} }}",
                nested("[", "ID", "]", MILLION)
            ),
        ),
        ("selections", nested("{ me ", "", "}", MILLION / 4)),
    ];
    for (place, query) in documents {
        let (_, answer) = target.post(None, json!({"query": query}).to_string()).await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{place}: {answer:.300}");
        assert!(
            message(&answer).contains("deeper than"),
            "{place}: {answer:.300}"
        );
    }

    // GET: a URI is at most 64 KiB (the http crate's limit), so 5 000
    // levels, percent-encoded (still 50 times the limit).
    let query = format!(
        "{{ devices(filter: {{ids: {}}}) {{ totalCount }} }}",
        nested("[", "\"x\"", "]", 5_000)
    );
    let response = target
        .http
        .get(target.url())
        .query(&[("query", query)])
        .send()
        .await
        .expect("the server answers");
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(code(&answer), "BAD_USER_INPUT", "GET: {answer:.300}");

    // Variables: JSON a million levels deep.
    let body = format!(
        "{{\"query\": \"query($v: JSON) {{ me {{ username }} }}\", \"variables\": {{\"v\": {}}}}}",
        nested("[", "1", "]", MILLION)
    );
    let (_, answer) = target.post(None, body).await;
    assert_eq!(code(&answer), "BAD_USER_INPUT", "variables: {answer:.300}");

    target.answers_normally().await;
}

/// Observation 1 over WebSocket: a deep `subscribe` is an `error` for that
/// operation, and a deep message closes only its own socket (4400).
async fn websocket_documents_and_messages_too_deep_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let mut socket = app.raw_session(&admin, None).await;
    let query = format!(
        "subscription {{ events(filter: {{services: {}}}) {{ id }} }}",
        nested("[", "\"x\"", "]", 300_000)
    );
    send_json(
        &mut socket,
        json!({"id": "deep", "type": "subscribe", "payload": {"query": query}}),
    )
    .await;
    let error = next_json(&mut socket).await;
    assert_eq!(error["type"], "error", "{error:.300}");
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    // The socket still works.
    send_json(
        &mut socket,
        json!({"id": "me", "type": "subscribe", "payload": {"query": "{ me { user { username } } }"}}),
    )
    .await;
    let answer = next_json(&mut socket).await;
    assert_eq!(
        answer["payload"]["data"]["me"]["user"]["username"], "admin",
        "{answer:.300}"
    );

    let deep_message = format!(
        "{{\"id\": \"v\", \"type\": \"subscribe\", \"payload\": {{\"query\": \"{{ me {{ username }} }}\", \"variables\": {{\"v\": {}}}}}}}",
        nested("[", "1", "]", 300_000)
    );
    send_raw(&mut socket, deep_message).await;
    assert_eq!(close_code(&mut socket).await, Some(4400));
    app.gql(Some(&admin), "{ me { user { username } } }", json!({}))
        .await
        .data();
}

async fn send_raw(socket: &mut RawSocket, text: String) {
    socket
        .send(tungstenite::Message::Text(text.into()))
        .await
        .expect("send");
}

/// The 601-byte document of observation 2: eleven levels of fragments, each
/// spreading the next four times (4^11 fields once expanded).
fn fragment_bomb(levels: usize) -> String {
    let mut query = String::from("query { ...F0 }\n");
    for level in 0..levels {
        let next = level + 1;
        query.push_str(&format!(
            "fragment F{level} on Query {{ ...F{next} ...F{next} ...F{next} ...F{next} }}\n"
        ));
    }
    query.push_str(&format!(
        "fragment F{levels} on Query {{ me {{ username }} }}\n"
    ));
    query
}

/// Observation 2: fragment bombs without a token are refused before
/// validation; two at once leave the server's memory where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_bombs_are_refused_without_costing_memory() {
    let mut target = Target::start(&[]).await;
    target.answers_normally().await;
    let before = target.rss_mib();
    let bombs = [fragment_bomb(11), fragment_bomb(12)];
    let answers = futures_util::future::join_all(
        bombs
            .iter()
            .map(|bomb| target.post(None, json!({"query": bomb}).to_string())),
    )
    .await;
    for (_, answer) in &answers {
        assert_eq!(code(answer), "BAD_USER_INPUT", "{answer:.300}");
        assert!(message(answer).contains("would cost"), "{answer:.300}");
    }
    let after = target.rss_mib();
    assert!(
        after - before < 64.0,
        "the server grew from {before:.1} MiB to {after:.1} MiB"
    );
    target.answers_normally().await;
}

/// Observation 3: a thousand aliases of a full page, with a READ key, are
/// refused by their cost (pages multiply), with 500 devices to list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_bombs_are_refused_by_cost_even_for_a_read_key() {
    let mut target = Target::start(&[]).await;
    let admin = target.admin_token().await;
    for chunk in 0..5 {
        let registrations: String = (0..100)
            .map(|n| {
                format!(
                    "d{n}: registerDevice(input: {{externalId: \"dev-{chunk}-{n}\"}}) {{ id }} "
                )
            })
            .collect();
        let answer = target
            .gql(
                Some(&admin),
                &format!("mutation {{ {registrations} }}"),
                json!({}),
            )
            .await;
        assert!(answer.get("errors").is_none(), "{answer:.300}");
    }
    let answer = target
        .gql(
            Some(&admin),
            "mutation { createApiKey(name: \"reader\", permission: READ) { secret } }",
            json!({}),
        )
        .await;
    let reader = answer["data"]["createApiKey"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = target.rss_mib();
    // `count` aliases of a full page of devices.
    let bomb = |count: usize| {
        let aliases: String = (0..count)
            .map(|n| {
                format!(
                    "a{n}: devices(first: 500) {{ nodes {{ id externalId name attributes }} }} "
                )
            })
            .collect();
        format!("{{ {aliases} }}")
    };
    let answer = target.gql(Some(&reader), &bomb(1000), json!({})).await;
    assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer:.300}");
    // Within the alias limit, the cost still multiplies by the page.
    let answer = target.gql(Some(&reader), &bomb(60), json!({})).await;
    assert!(message(&answer).contains("would cost"), "{answer:.300}");
    let after = target.rss_mib();
    assert!(
        after - before < 64.0,
        "the server grew from {before:.1} MiB to {after:.1} MiB"
    );
    // An ordinary page of all of them is answered.
    let page = target
        .gql(
            Some(&reader),
            "{ devices(first: 500) { totalCount nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(page["data"]["devices"]["totalCount"], 500, "{page:.300}");
    target.answers_normally().await;
}

/// A response larger than `limits.response_bytes` is an error, not a
/// partial or a huge answer.
async fn a_response_over_the_limit_is_an_error(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.limits.response_bytes = 4096).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "big").await;
    for n in 0..20 {
        app.publish(
            &admin,
            &device,
            "blob",
            json!({"text": "x".repeat(500), "n": n}),
        )
        .await;
    }
    let answer = app
        .gql(
            Some(&admin),
            "{ events(first: 20) { nodes { payload } } }",
            json!({}),
        )
        .await;
    assert_eq!(answer.error_code(), "BAD_USER_INPUT");
    assert!(
        answer.error_message().contains("response_bytes"),
        "{}",
        answer.body
    );
    let small = app
        .gql(
            Some(&admin),
            "{ events(first: 2) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(small.data()["events"]["nodes"].as_array().unwrap().len(), 2);
}

/// `levels` arrays around a number, as JSON.
fn deep_json(levels: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..levels {
        value = json!([value]);
    }
    value
}

/// `levels` arrays around a number, as a GraphQL literal.
fn deep_literal(levels: usize) -> String {
    nested("[", "1", "]", levels)
}

/// Observation 5: one member's payloads nested 130 deep (as variables and
/// as literals) are refused as BAD_USER_INPUT, and none of another member's
/// publishes running at the same time fails.
async fn one_members_deep_payloads_do_not_fail_another_members_publishes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mallory = app.create_member("mallory").await;
    let alice = app.create_member("alice").await;
    let mallory_device = app.register_device(&mallory, "junk").await;
    let alice_device = app.register_device(&alice, "meter").await;

    let attacker = {
        let (url, token, device) = (app.url("/graphql"), mallory.clone(), mallory_device.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut codes = Vec::new();
            for n in 0..100 {
                let body = if n % 2 == 0 {
                    json!({"query": "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
                           "variables": {"i": {"deviceId": device, "service": "junk", "payload": deep_json(130)}}})
                } else {
                    json!({"query": format!(
                        "mutation {{ publishEvent(input: {{deviceId: \"{device}\", service: \"junk\", payload: {}}}) {{ id }} }}",
                        deep_literal(90)
                    )})
                };
                let answer: Value = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("an answer")
                    .json()
                    .await
                    .expect("JSON");
                codes.push(code(&answer).to_owned());
            }
            codes
        })
    };
    let publishers: Vec<_> = (0..4)
        .map(|_| app.spawn_publisher(&alice, &alice_device, 250, 5, |n| json!({"n": n})))
        .collect();
    for publisher in publishers {
        publisher
            .await
            .expect("every one of alice's publishes succeeds");
    }
    let codes = attacker.await.unwrap();
    assert!(codes.iter().all(|c| c == "BAD_USER_INPUT"), "{codes:?}");
    assert_eq!(app.event_count(&alice).await, 1000);
    assert_eq!(app.event_count(&mallory).await, 0);
}

/// Observation 5: attributes nested too deep are refused at registration;
/// a device at the depth limit is stored, read back and deleted normally.
async fn deep_attributes_are_refused_and_devices_at_the_limit_can_be_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let register = "mutation($a: JSON) { registerDevice(input: {externalId: \"deep\", attributes: $a}) { id } }";
    let too_deep = app
        .gql(Some(&admin), register, json!({"a": deep_json(65)}))
        .await;
    assert_eq!(too_deep.error_code(), "BAD_USER_INPUT");
    assert!(
        too_deep.error_message().contains("nested more than 64"),
        "{}",
        too_deep.body
    );
    let literal = format!(
        "mutation {{ registerDevice(input: {{externalId: \"deep\", attributes: {}}}) {{ id }} }}",
        deep_literal(80)
    );
    assert_eq!(
        app.gql(Some(&admin), &literal, json!({}))
            .await
            .error_code(),
        "BAD_USER_INPUT"
    );

    let at_limit = app
        .gql(Some(&admin), register, json!({"a": deep_json(64)}))
        .await;
    let id = at_limit.data()["registerDevice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let device = app
        .gql(
            Some(&admin),
            "query($id: ID!) { device(id: $id) { attributes } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(device.data()["device"]["attributes"], deep_json(64));
    let deleted = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { deleteDevice(id: $id) }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(deleted.data()["deleteDevice"], json!(id));
}

on_both_backends!(
    websocket_documents_and_messages_too_deep_are_refused,
    a_response_over_the_limit_is_an_error,
    one_members_deep_payloads_do_not_fail_another_members_publishes,
    deep_attributes_are_refused_and_devices_at_the_limit_can_be_deleted,
    the_login_throttle_holds_against_bursts_and_floods,
    a_fragmented_message_over_the_limit_closes_with_1009,
);

/// Observation 5, in the writer itself: when a batch fails in the database
/// (here PostgreSQL refusing U+0000 in `jsonb`, an input the GraphQL layer
/// refuses before it gets this far), only the publish that fails on its own
/// is refused; the others in the same batch are stored and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_is_stored_publish_by_publish() {
    use ferrite_server::{
        bus::Bus,
        ingest::{Ingest, IngestSettings},
        metrics::IngestMetrics,
        store::{DeviceRegistration, NewEvent, Scope, Store, StoreOptions, entity::Role},
    };
    let url = ferrite_e2e::fresh_postgres_database().await;
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let owner = store
        .create_user("owner", "x".into(), Role::Member)
        .await
        .unwrap()
        .id;
    let registration = DeviceRegistration::of("meter");
    let device = store
        .register_device(owner, registration)
        .await
        .unwrap()
        .0
        .id;
    // A long linger, so that the publishes below share one batch.
    let settings = IngestSettings {
        batch_events: 100,
        linger: Duration::from_millis(300),
        queue: 16,
    };
    let (ingest, _checkpoints, writer) = Ingest::spawn(
        store.clone(),
        Bus::new(16, Default::default()),
        settings,
        IngestMetrics::default(),
    );
    let event = |payload: Value| NewEvent {
        device_id: device,
        service: "reading".into(),
        payload,
        occurred_at: None,
        idempotency_key: None,
    };
    let (good_before, bad, good_after) = tokio::join!(
        ingest.publish(Scope::Owner(owner), vec![event(json!({"n": 1}))]),
        ingest.publish(
            Scope::Owner(owner),
            vec![event(json!({"text": "nul \u{0} here"}))]
        ),
        ingest.publish(
            Scope::Owner(owner),
            vec![event(json!({"n": 2})), event(json!({"n": 3}))]
        ),
    );
    assert_eq!(good_before.expect("stored").len(), 1);
    assert!(bad.is_err());
    assert_eq!(good_after.expect("stored").len(), 2);
    drop(ingest);
    writer.await.unwrap();
    store.close().await;
}

/// Observation 6: forty wrong passwords at once from one address are
/// throttled like forty in a row; 100 001 junk usernames cannot flush a
/// locked pair; the owner can still log in from another address.
async fn the_login_throttle_holds_against_bursts_and_floods(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let login =
        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }";
    let burst = futures_util::future::join_all(
        (0..40).map(|_| app.gql(None, login, json!({"u": "admin", "p": "wrong password"}))),
    )
    .await;
    let checked = burst
        .iter()
        .filter(|answer| answer.error_code() == "UNAUTHENTICATED")
        .count();
    let limited = burst
        .iter()
        .filter(|answer| answer.error_code() == "RATE_LIMITED")
        .count();
    assert_eq!((checked, limited), (5, 35));

    // Junk usernames, 100 aliased logins per request.
    let aliases: String = (0..100)
        .map(|n| format!("l{n}: login(username: $u{n}, password: \"x\") {{ accessToken }} "))
        .collect();
    let definitions: String = (0..100).map(|n| format!("$u{n}: String!, ")).collect();
    let flood = format!("mutation({definitions}) {{ {aliases} }}");
    for request in 0..1001 {
        let names: serde_json::Map<String, Value> = (0..100)
            .map(|n| (format!("u{n}"), json!(format!("junk-{request}-{n}"))))
            .collect();
        let answer = app.gql(None, &flood, Value::Object(names)).await;
        assert!(
            answer.body["errors"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        );
    }
    let still_locked = app
        .gql(None, login, json!({"u": "admin", "p": ADMIN_PASSWORD}))
        .await;
    assert_eq!(still_locked.error_code(), "RATE_LIMITED");

    // From another loopback address, the owner logs in.
    let elsewhere = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let answer: Value = elsewhere
        .post(app.url("/graphql"))
        .json(&json!({"query": login, "variables": {"u": "admin", "p": ADMIN_PASSWORD}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        answer["data"]["login"]["accessToken"].is_string(),
        "{answer}"
    );
}

/// Observation 8: a message over `websocket.max_message_bytes` sent in
/// 64 KiB fragments closes the socket with 1009, as a single frame does.
async fn a_fragmented_message_over_the_limit_closes_with_1009(backend: Backend) {
    use tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let mut socket = app.raw_session(&admin, None).await;
    let chunk = vec![b' '; 64 * 1024];
    // Four times the limit: the client is still sending when the server
    // has seen enough, so unread data is waiting when it closes.
    let fragments = 4 * 1024 * 1024 / chunk.len();
    for n in 0..fragments {
        let opcode = if n == 0 { Data::Text } else { Data::Continue };
        let frame = Frame::message(chunk.clone(), OpCode::Data(opcode), n + 1 == fragments);
        if socket
            .send(tungstenite::Message::Frame(frame))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut socket).await, Some(1009));
    app.gql(Some(&admin), "{ me { permission } }", json!({}))
        .await
        .data();
}

/// Reads until the server closes `tcp` (EOF or reset) or `limit` passes;
/// whether it closed.
async fn closed_by_server(tcp: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A response (408 or 400) before the close is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Observation 4: silent and slowloris connections are capped per address
/// and closed after the header timeout; other clients are served meanwhile;
/// the open-files limit was raised to its maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slowloris_connections_are_capped_and_closed() {
    use tokio::{io::AsyncWriteExt, net::TcpStream};
    let mut target = Target::start(&[
        ("FERRITE_HTTP__MAX_CONNECTIONS_PER_ADDRESS", "50"),
        ("FERRITE_HTTP__HEADER_TIMEOUT_SECONDS", "3"),
    ])
    .await;
    let pid = target.server.child.id().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3], open_files[4],
        "soft limit raised to the hard one: {open_files:?}"
    );

    // 500 silent connections from one address: ten times the cap.
    let addr = target.server.addr;
    let mut silent = Vec::new();
    for _ in 0..500 {
        silent.push(TcpStream::connect(addr).await.expect("the kernel accepts"));
    }
    // Another address is served at once.
    let elsewhere = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let health = elsewhere
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect("another address is served while one floods");
    assert_eq!(health.status(), 200);
    // Every silent connection is closed: those past the cap at once, the
    // others after the header timeout.
    // One deadline for all of them, so a server that closes none fails in
    // 20 s rather than 500 times that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut closed = 0;
    for tcp in &mut silent {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if closed_by_server(tcp, left.max(Duration::from_millis(1))).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 500);
    drop(silent);

    // Slowloris: headers a byte at a time, never finished.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /graphql HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(tcp);
    }
    let dribble = tokio::spawn(async move {
        let mut closed = vec![false; slow.len()];
        for _ in 0..60 {
            for (tcp, closed) in slow.iter_mut().zip(closed.iter_mut()) {
                if !*closed && tcp.write_all(b"X").await.is_err() {
                    *closed = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut count = 0;
        for (tcp, was_closed) in slow.iter_mut().zip(closed) {
            if was_closed || closed_by_server(tcp, Duration::from_secs(1)).await {
                count += 1;
            }
        }
        count
    });
    assert_eq!(
        dribble.await.unwrap(),
        40,
        "every slowloris connection is closed"
    );
    target.answers_normally().await;
}

/// Observation 4: SIGTERM while a client holds half-sent headers: the
/// server exits after its shutdown grace, not when the client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_client_holding_half_sent_headers() {
    use tokio::{io::AsyncWriteExt, net::TcpStream};
    let mut target = Target::start(&[
        ("FERRITE_HTTP__HEADER_TIMEOUT_SECONDS", "3600"),
        ("FERRITE_HTTP__SHUTDOWN_GRACE_SECONDS", "2"),
    ])
    .await;
    let mut holder = TcpStream::connect(target.server.addr).await.unwrap();
    holder
        .write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        .await
        .unwrap();
    // And one with a body that never ends.
    let mut body_holder = TcpStream::connect(target.server.addr).await.unwrap();
    body_holder
        .write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"query\":")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `terminate` fails the test unless the process exits within 20 s.
    let code = ferrite_e2e::process::terminate(&mut target.server.child).await;
    assert_eq!(code, Some(0));
    drop((holder, body_holder));
}
