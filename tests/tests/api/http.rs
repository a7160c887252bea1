//! GraphQL over HTTP: media types, GET, GraphiQL, malformed bodies, limits,
//! introspection and health.

use ferrite_e2e::{Backend, TestApp, on_both_backends};
use serde_json::json;

on_both_backends!(
    a_malformed_body_is_bad_user_input_and_changes_nothing,
    a_query_that_is_not_graphql_is_bad_user_input,
    graphql_response_json_gets_400_for_request_errors,
    get_runs_queries_but_not_mutations,
    a_browser_gets_graphiql,
    an_oversized_body_is_refused,
    introspection_works_within_the_query_limits,
    a_too_deep_query_is_refused,
    health_and_readiness_answer,
);

/// Responses are compressed as the client asks (brotli, gzip), above 1 KB;
/// garbage in `Accept-Encoding` gets the plain answer. Sizes of a page of
/// 500 events are printed for docs/PERFORMANCE.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_events_is_compressed_as_the_client_asks() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "meter").await;
    app.spawn_publisher(
        &admin,
        &device,
        500,
        100,
        |n| json!({"celsius": 20.0 + (n % 50) as f64 / 10.0, "n": n}),
    )
    .await
    .unwrap();
    let query = json!({"query": "{ events(first: 500) { nodes { id deviceId service payload occurredAt receivedAt } } }"});
    let fetch = |encoding: &'static str| {
        app.client
            .post(app.url("/graphql"))
            .bearer_auth(&admin)
            .header("accept-encoding", encoding)
            .json(&query)
            .send()
    };
    let plain = fetch("identity").await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    let page: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(
        page["data"]["events"]["nodes"].as_array().unwrap().len(),
        500
    );
    let mut sizes = vec![("identity", plain.len())];
    for (asked, expected) in [
        ("br", "br"),
        ("gzip", "gzip"),
        ("gzip;q=0.5, br;q=1.0", "br"),
        ("zstd, gzip", "gzip"),
    ] {
        let answer = fetch(asked).await.unwrap();
        assert_eq!(answer.headers()["content-encoding"], expected, "{asked}");
        let body = answer.bytes().await.unwrap();
        assert!(
            body.len() * 5 < plain.len(),
            "{asked}: {} of {} bytes",
            body.len(),
            plain.len()
        );
        sizes.push((asked, body.len()));
    }
    for garbage in [
        ";;,,q=",
        "gzip;q=2.5, br;q=-1",
        "br;q=abc",
        &"x".repeat(4000),
        "*;q=0",
    ] {
        let answer = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(&admin)
            .header("accept-encoding", garbage)
            .json(&query)
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success() || answer.status() == 406,
            "{garbage:?}: {}",
            answer.status()
        );
        if answer.status().is_success() && answer.headers().get("content-encoding").is_none() {
            assert_eq!(
                answer.bytes().await.unwrap().len(),
                plain.len(),
                "{garbage:?}"
            );
        }
    }
    // A small answer is not worth compressing.
    let small = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&admin)
        .header("accept-encoding", "br")
        .json(&json!({"query": "{ me { permission } }"}))
        .send()
        .await
        .unwrap();
    assert!(small.headers().get("content-encoding").is_none());
    println!("a page of 500 events: {sizes:?}");
}

/// `http.cors_origins`: a listed origin's pages may call `/graphql` (the
/// preflight answers, the response carries its origin) and open its
/// WebSocket; another origin gets neither; gateways and scripts (no
/// `Origin`) and the dashboard (same origin) are not affected. Without the
/// setting, no CORS at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_lets_the_listed_origins_in_and_no_others() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.http.cors_origins = vec!["http://app.example:5173".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,apollo-require-preflight",
            )
            .send()
    };
    let allowed = preflight("http://app.example:5173").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://app.example:5173"
    );
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for needed in ["authorization", "content-type", "apollo-require-preflight"] {
        assert!(allowed_headers.contains(needed), "{allowed_headers}");
    }
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(headers.get("access-control-allow-credentials").is_none());
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let admin = app.admin_token().await;
    let answer = app
        .client
        .post(app.url("/graphql"))
        .header("origin", "http://app.example:5173")
        .bearer_auth(&admin)
        .json(&json!({"query": "{ me { permission } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "http://app.example:5173"
    );
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap()["data"]["me"]["permission"],
        "ADMIN"
    );

    // The WebSocket: listed, same-origin and Origin-less upgrades open;
    // another site's does not.
    let upgrade = |origin: Option<String>| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = app
            .url("/graphql")
            .replace("http://", "ws://")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    let same_origin = format!("http://{}", app.addr);
    for origin in [
        Some("http://app.example:5173".to_owned()),
        Some(same_origin),
        None,
    ] {
        assert!(
            upgrade(origin.clone()).await.is_ok(),
            "{origin:?} was refused"
        );
    }
    match upgrade(Some("https://evil.example".into())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("another site's upgrade: {other:?}"),
    }

    // Without the setting: same origin only, as before.
    let plain = TestApp::spawn(Backend::Sqlite).await;
    let preflight = plain
        .client
        .request(reqwest::Method::OPTIONS, plain.url("/graphql"))
        .header("origin", "http://app.example:5173")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

async fn a_malformed_body_is_bad_user_input_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.register_device(&admin, "d").await;
    for body in [
        "{not json",
        "",
        "[]",
        "42",
        r#"{"variables": {}}"#,
        r#"{"query": ""}"#,
        r#"{"query": 5}"#,
        r#"[{"query": "{ __typename }"}]"#,
    ] {
        let response = app
            .post_raw(Some(&admin), "application/json", body.to_owned())
            .await;
        assert_eq!(response.status, 400, "body {body:?}: {:?}", response.body);
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "body {body:?}");
    }
    let wrong_type = app
        .post_raw(
            Some(&admin),
            "text/plain",
            json!({"query": "{ __typename }"}).to_string(),
        )
        .await;
    assert_eq!(wrong_type.status, 415);
    assert_eq!(wrong_type.error_code(), "BAD_USER_INPUT");
    assert_eq!(app.device_count(&admin).await, 1);
}

async fn a_query_that_is_not_graphql_is_bad_user_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    for query in [
        "SELECT * FROM devices",
        "{ devices { nosuchfield } }",
        "mutation { registerDevice(input: {}) { id } }",
        "{ devices(first: \"ten\") { totalCount } }",
        "{",
    ] {
        let response = app.gql(Some(&admin), query, json!({})).await;
        assert_eq!(response.status, 200, "{query}");
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{query}");
        assert!(
            response.body.get("data").is_none_or(|d| d.is_null()),
            "{query}"
        );
    }
    let wrong_variable = app
        .gql(
            Some(&admin),
            "query($n: Int) { devices(first: $n) { totalCount } }",
            json!({"n": "many"}),
        )
        .await;
    assert_eq!(wrong_variable.error_code(), "BAD_USER_INPUT");
    assert_eq!(app.device_count(&admin).await, 0);
}

async fn graphql_response_json_gets_400_for_request_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let send = |query: &str| {
        app.client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .header("accept", "application/graphql-response+json")
            .body(json!({"query": query}).to_string())
            .send()
    };
    let invalid = TestApp::read(send("{ nosuchfield }").await.unwrap()).await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.content_type, "application/graphql-response+json");
    assert!(invalid.body.get("data").is_none());
    assert_eq!(invalid.error_code(), "BAD_USER_INPUT");
    let fine = TestApp::read(send("{ __typename }").await.unwrap()).await;
    assert_eq!(fine.status, 200);
    assert_eq!(fine.content_type, "application/graphql-response+json");
    // A field error is not a request error.
    let field_error = TestApp::read(send("{ me { permission } }").await.unwrap()).await;
    assert_eq!(field_error.status, 200);
    assert_eq!(field_error.error_code(), "UNAUTHENTICATED");
}

async fn get_runs_queries_but_not_mutations(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let query = app
        .client
        .get(app.url("/graphql"))
        .query(&[
            (
                "query",
                "query($f: Int) { devices(first: $f) { totalCount } }",
            ),
            ("variables", "{\"f\": 3}"),
        ])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let query = TestApp::read(query).await;
    assert_eq!(query.data()["devices"]["totalCount"], 0);

    let mutation = app
        .client
        .get(app.url("/graphql"))
        .query(&[(
            "query",
            "mutation { registerDevice(input: {externalId: \"x\"}) { id } }",
        )])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(mutation.headers()["allow"], "POST");
    let mutation = TestApp::read(mutation).await;
    assert_eq!(mutation.status, 405);
    assert_eq!(mutation.error_code(), "BAD_USER_INPUT");
    assert_eq!(app.device_count(&admin).await, 0);

    let garbage = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "{ __typename }"), ("variables", "{not json")])
        .send()
        .await
        .unwrap();
    let garbage = TestApp::read(garbage).await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.error_code(), "BAD_USER_INPUT");
}

async fn a_browser_gets_graphiql(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let page = app
        .client
        .get(app.url("/graphql"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // Built into the binary with the dashboard: nothing from a CDN, no
    // inline script, scripts from this origin only.
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    assert!(!csp.contains("http"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>Ferrite GraphiQL</title>"), "{html}");
    assert!(!html.contains("://"), "{html}");
    assert!(!html.contains("<script>"), "no inline script: {html}");
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a script");
    assert!(script.starts_with("/assets/"), "{script}");
    let asset = app.client.get(app.url(script)).send().await.unwrap();
    assert_eq!(asset.status(), 200);
    assert!(asset.text().await.unwrap().contains("GraphiQL"));
}

async fn an_oversized_body_is_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.limits.body_bytes = 64 * 1024;
        config.limits.payload_bytes = 32 * 1024;
    })
    .await;
    let admin = app.admin_token().await;
    let body =
        json!({"query": "{ __typename }", "variables": {"pad": "p".repeat(70 * 1024)}}).to_string();
    let response = app.post_raw(Some(&admin), "application/json", body).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    // The server is still healthy.
    app.gql(Some(&admin), "{ __typename }", json!({}))
        .await
        .data();
}

/// GraphiQL's introspection query: deep, and it must pass the depth and
/// complexity limits (async-graphql issue 1696).
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;

async fn introspection_works_within_the_query_limits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.gql(None, INTROSPECTION, json!({})).await;
    let types = response.data()["__schema"]["types"].as_array().unwrap();
    for name in [
        "Device",
        "Event",
        "Command",
        "DateTime",
        "JSON",
        "DeviceConnection",
    ] {
        assert!(
            types.iter().any(|t| t["name"] == name),
            "{name} missing from introspection"
        );
    }
}

async fn a_too_deep_query_is_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.limits.query_depth = 3).await;
    let admin = app.admin_token().await;
    let deep = app
        .gql(
            Some(&admin),
            "{ events { edges { node { device { name } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(deep.error_code(), "BAD_USER_INPUT");
    app.gql(Some(&admin), "{ me { permission } }", json!({}))
        .await
        .data();
}

async fn health_and_readiness_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}
