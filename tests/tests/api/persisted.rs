//! Automatic persisted queries (Apollo's APQ) over POST, GET and the
//! WebSocket: a miss, the registration, hits; and what a hostile client
//! sends: a hash that is not its query's, a 10 MB extension, a hash of a
//! query the limits refuse. The cache is in memory and the same on either
//! backend, so these run on SQLite. Apollo Client's and urql's own links
//! run against the server in `examples/typescript/test`.

use ferrite_e2e::{
    Backend, GqlResponse, TestApp,
    ws::{next_json, send_json},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha256(query: &str) -> String {
    Sha256::digest(query.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn persisted(hash: &str) -> Value {
    json!({"persistedQuery": {"version": 1, "sha256Hash": hash}})
}

async fn post(app: &TestApp, token: &str, body: Value) -> GqlResponse {
    app.post_raw(Some(token), "application/json", body.to_string())
        .await
}

async fn get(app: &TestApp, token: &str, params: &[(&str, String)]) -> GqlResponse {
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(params)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    TestApp::read(response).await
}

const QUERY: &str = "query Count($first: Int) { devices(first: $first) { totalCount } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_is_a_miss_then_the_query_registers_it_then_the_hash_runs_it() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    app.register_device(&admin, "apq-device").await;
    let hash = sha256(QUERY);

    // The hash alone: unknown yet, in the shape Apollo's and urql's links
    // look for (the message and the code).
    let miss = post(
        &app,
        &admin,
        json!({"extensions": persisted(&hash), "variables": {"first": 1}}),
    )
    .await;
    assert_eq!(miss.error_code(), "PERSISTED_QUERY_NOT_FOUND");
    assert_eq!(miss.error_message(), "PersistedQueryNotFound");

    // The query with its hash: runs, and registers it.
    let registered = post(
        &app,
        &admin,
        json!({"query": QUERY, "extensions": persisted(&hash), "variables": {"first": 1}}),
    )
    .await;
    assert_eq!(registered.data()["devices"]["totalCount"], 1);

    // The hash alone now runs the query, over POST and over GET (what a
    // CDN or a proxy can cache: a short URL), with `operationName` read.
    let by_post = post(
        &app,
        &admin,
        json!({"extensions": persisted(&hash), "variables": {"first": 1}}),
    )
    .await;
    assert_eq!(by_post.data()["devices"]["totalCount"], 1);
    let by_get = get(
        &app,
        &admin,
        &[
            ("operationName", "Count".to_owned()),
            ("variables", json!({"first": 1}).to_string()),
            ("extensions", persisted(&hash).to_string()),
        ],
    )
    .await;
    assert_eq!(by_get.data()["devices"]["totalCount"], 1);
    // Upper-case hex names the same hash.
    let upper = post(
        &app,
        &admin,
        json!({"extensions": persisted(&hash.to_uppercase())}),
    )
    .await;
    assert_eq!(upper.data()["devices"]["totalCount"], 1);

    // GET's query string also registers, and its operationName picks the
    // operation of a document with two.
    let two = "query A { me { permission } } query B { devices { totalCount } }";
    let b = get(
        &app,
        &admin,
        &[
            ("query", two.to_owned()),
            ("operationName", "B".to_owned()),
            ("extensions", persisted(&sha256(two)).to_string()),
        ],
    )
    .await;
    assert_eq!(b.data()["devices"]["totalCount"], 1);
    let a = get(
        &app,
        &admin,
        &[
            ("operationName", "A".to_owned()),
            ("extensions", persisted(&sha256(two)).to_string()),
        ],
    )
    .await;
    assert_eq!(a.data()["me"]["permission"], "ADMIN");

    // A persisted mutation over GET is still refused.
    let mutation = "mutation { registerDevice(input: {externalId: \"by-get\"}) { id } }";
    post(
        &app,
        &admin,
        json!({"query": mutation, "extensions": persisted(&sha256(mutation))}),
    )
    .await
    .data();
    let over_get = get(
        &app,
        &admin,
        &[("extensions", persisted(&sha256(mutation)).to_string())],
    )
    .await;
    assert_eq!(over_get.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_persisted_queries_are_refused_and_cost_nothing() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.limits.body_bytes = 16 * 1024 * 1024;
    })
    .await;
    let admin = app.admin_token().await;

    // A hash that is not the query's: refused, and not registered under
    // either hash (no one can plant a query under another's hash).
    let innocent = "{ me { permission } }";
    let planted = "{ users { username } }";
    let mismatch = post(
        &app,
        &admin,
        json!({"query": planted, "extensions": persisted(&sha256(innocent))}),
    )
    .await;
    assert_eq!(mismatch.error_code(), "BAD_USER_INPUT");
    assert!(
        mismatch.error_message().contains("does not match"),
        "{}",
        mismatch.error_message()
    );
    let after = post(
        &app,
        &admin,
        json!({"extensions": persisted(&sha256(innocent))}),
    )
    .await;
    assert_eq!(after.error_code(), "PERSISTED_QUERY_NOT_FOUND");

    // Garbage in the extension: a clear error, no lookup.
    for garbage in [
        json!({"persistedQuery": "yes"}),
        json!({"persistedQuery": {"version": 2, "sha256Hash": sha256(innocent)}}),
        json!({"persistedQuery": {"version": 1, "sha256Hash": "not hex"}}),
        json!({"persistedQuery": {"version": 1, "sha256Hash": {"deep": [[[[1]]]]}}}),
    ] {
        let refused = post(&app, &admin, json!({"extensions": garbage})).await;
        assert_eq!(refused.error_code(), "BAD_USER_INPUT", "{garbage}");
    }

    // A 10 MB extension (within this server's 16 MiB body limit): refused
    // by its shape, not looked up; over GET the query string is bounded by
    // the header limit first.
    let huge =
        json!({"persistedQuery": {"version": 1, "sha256Hash": "a".repeat(10 * 1024 * 1024)}});
    let refused = post(&app, &admin, json!({"extensions": huge})).await;
    assert_eq!(refused.error_code(), "BAD_USER_INPUT");
    let by_get = app
        .client
        .get(app.url("/graphql"))
        .query(&[("extensions", huge.to_string())])
        .bearer_auth(&admin)
        .send()
        .await;
    if let Ok(response) = by_get {
        assert!(response.status().is_client_error(), "{}", response.status());
    }

    // GET's JSON parameters nested 5 000 deep (a 30 KB URL; the HTTP client
    // refuses longer ones, the server's header limit bounds them): refused
    // by the depth scan before serde_json builds anything.
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    for name in ["variables", "extensions"] {
        let refused = get(
            &app,
            &admin,
            &[
                ("query", "{ me { permission } }".to_owned()),
                (name, deep.clone()),
            ],
        )
        .await;
        assert_eq!(refused.status, 400, "{name}");
        assert_eq!(refused.error_code(), "BAD_USER_INPUT", "{name}");
    }

    // A query admission refuses (10 000 levels of brackets, scanned before
    // parsing) is refused with its hash too, and is not registered.
    let nested = format!(
        "{{ me {}{} }}",
        "{ user ".repeat(10_000),
        "}".repeat(10_000)
    );
    let refused = post(
        &app,
        &admin,
        json!({"query": nested, "extensions": persisted(&sha256(&nested))}),
    )
    .await;
    assert_eq!(refused.error_code(), "BAD_USER_INPUT");
    let still_unknown = post(
        &app,
        &admin,
        json!({"extensions": persisted(&sha256(&nested))}),
    )
    .await;
    assert_eq!(still_unknown.error_code(), "PERSISTED_QUERY_NOT_FOUND");
    // One that passes admission but not validation (too deep a selection)
    // is refused every time, by hash as by text: a hash skips no check.
    let deep = format!("{{ me {}{} }}", "{ user ".repeat(40), "}".repeat(40));
    for _ in 0..2 {
        let refused = post(
            &app,
            &admin,
            json!({"query": deep, "extensions": persisted(&sha256(&deep))}),
        )
        .await;
        assert_eq!(refused.error_code(), "BAD_USER_INPUT");
        let by_hash = post(
            &app,
            &admin,
            json!({"extensions": persisted(&sha256(&deep))}),
        )
        .await;
        assert_eq!(by_hash.error_code(), "BAD_USER_INPUT");
        assert!(by_hash.body["data"].is_null(), "{}", by_hash.body);
    }

    // The server is fine, and the hash of a good query still works.
    let ok = post(
        &app,
        &admin,
        json!({"query": innocent, "extensions": persisted(&sha256(innocent))}),
    )
    .await;
    assert_eq!(ok.data()["me"]["permission"], "ADMIN");
}

/// The cache is bounded in bytes: registering far more than it holds
/// forgets the oldest, and every query still runs when sent whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_forgets_the_least_recently_used_beyond_its_bytes() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.limits.persisted_queries_bytes = 2_000;
    })
    .await;
    let admin = app.admin_token().await;
    let queries: Vec<String> = (0..200)
        .map(|i| format!("query Q{i:03} {{ me {{ permission }} }}"))
        .collect();
    for query in &queries {
        let ran = post(
            &app,
            &admin,
            json!({"query": query, "extensions": persisted(&sha256(query))}),
        )
        .await;
        assert_eq!(ran.data()["me"]["permission"], "ADMIN");
    }
    let first = post(
        &app,
        &admin,
        json!({"extensions": persisted(&sha256(&queries[0]))}),
    )
    .await;
    assert_eq!(first.error_code(), "PERSISTED_QUERY_NOT_FOUND");
    let last = post(
        &app,
        &admin,
        json!({"extensions": persisted(&sha256(&queries[199]))}),
    )
    .await;
    assert_eq!(last.data()["me"]["permission"], "ADMIN");
}

/// Over the WebSocket the same protocol works per operation: a miss is an
/// `error` message for that id, and the query with its hash registers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_queries_work_over_the_websocket() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let mut socket = app.raw_session(&admin, None).await;
    let query = "{ me { permission } }";
    let hash = sha256(query);

    send_json(&mut socket, json!({"id": "1", "type": "subscribe", "payload": {"query": "", "extensions": persisted(&hash)}})).await;
    let miss = next_json(&mut socket).await;
    assert_eq!(miss["type"], "error", "{miss}");
    assert_eq!(
        miss["payload"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );

    send_json(&mut socket, json!({"id": "2", "type": "subscribe", "payload": {"query": query, "extensions": persisted(&hash)}})).await;
    let ran = next_json(&mut socket).await;
    assert_eq!(ran["payload"]["data"]["me"]["permission"], "ADMIN", "{ran}");
    assert_eq!(next_json(&mut socket).await["type"], "complete");

    send_json(
        &mut socket,
        json!({"id": "3", "type": "subscribe", "payload": {"extensions": persisted(&hash)}}),
    )
    .await;
    let hit = next_json(&mut socket).await;
    assert_eq!(hit["payload"]["data"]["me"]["permission"], "ADMIN", "{hit}");
}
