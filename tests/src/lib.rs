//! Helpers for Ferrite's end-to-end tests: spawn the real server on a
//! loopback port with a fresh database, and talk GraphQL to it over HTTP.
//!
//! # Layout
//! - [`Backend`]: SQLite (a temp file) or PostgreSQL (a fresh database per
//!   test on the cluster named by `FERRITE_TEST_POSTGRES_URL`).
//! - [`TestApp`]: one running server and typed helpers for the calls most
//!   tests make.
//! - [`on_both_backends!`]: turns `async fn name(backend: Backend)` into one
//!   test per backend.
//!
//! - [`ws`]: WebSocket clients (graphql-ws-client, and a raw socket).
//! - [`process`]: the built binaries as child processes, to kill -9.
//!
//! Logs stay silent unless `TEST_LOG` is set (to a `tracing` filter).
//!
//! # Writing an end-to-end test
//! Put it in the module of its area in `tests/api/` (one test binary, so
//! the suite links once; `main.rs` lists the modules), as
//! `async fn what_it_proves(backend: Backend)` added to that module's
//! [`on_both_backends!`] list, unless it is about something the backend
//! cannot change (then a plain `#[tokio::test]` on `Backend::Sqlite`).
//! Start with `TestApp::spawn(backend)` (or `spawn_with` to change the
//! config), get a token with `admin_token()` or `create_member()`, and
//! talk to the server as a client would: `gql()` over HTTP, `raw_session()`
//! or `ws_client()` over the WebSocket. Wait for what happens eventually
//! with [`eventually`], never a fixed sleep, and assert on what a client
//! sees (data, `extensions.code`, close codes), not on internals. For the
//! binaries themselves (SIGKILL, restarts), see [`process`].

/// The real binaries (`ferrite`, `ferrite-connector`) as child processes.
pub mod process;
/// WebSocket clients for the tests.
pub mod ws;

use std::{net::SocketAddr, sync::Once};

use ferrite_server::{
    Server,
    config::{Config, Secret},
};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

/// The password of `admin` in every test server.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The JWT secret of every test server, so tests can forge tokens.
pub const JWT_SECRET: &str = "test-jwt-secret-of-at-least-32-bytes!";
/// The password of members created by [`TestApp::create_member`].
pub const MEMBER_PASSWORD: &str = "member-password";

/// Names the PostgreSQL server tests use: a URL to a database the tests may
/// create databases from, e.g. `postgres://postgres@127.0.0.1:5433/postgres`.
pub const POSTGRES_URL_VAR: &str = "FERRITE_TEST_POSTGRES_URL";

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed `async fn name(backend: Backend)` as two tests,
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// A fresh database on the test PostgreSQL cluster, or a loud failure.
pub async fn fresh_postgres_database() -> String {
    use sea_orm::{ConnectionTrait, Database};
    let admin_url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_URL_VAR} is not set: PostgreSQL tests need a server. \
             Run ./scripts/test.sh, which starts a throwaway cluster, or point \
             {POSTGRES_URL_VAR} at a PostgreSQL you may create databases on."
        )
    });
    let name = format!("ferrite_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(&admin_url)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to {admin_url}: {err}"));
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    admin.close().await.ok();
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("the PostgreSQL URL names a database");
    format!("{base}/{name}")
}

/// A GraphQL request over HTTP to a server at `addr` (a child process, not
/// a [`TestApp`]); panics on errors, returns `data`.
pub async fn gql_at(addr: SocketAddr, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"].clone()
}

/// A running server with a fresh database.
pub struct TestApp {
    pub addr: SocketAddr,
    config: Config,
    pub client: reqwest::Client,
    pub backend: Backend,
    pub database_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    _data_dir: tempfile::TempDir,
}

/// Polls `probe` (every 100 ms) until it yields a value, for up to `limit`;
/// panics naming `what` otherwise. For states that are reached eventually
/// (a process started, a device back online), without fixed sleeps.
pub async fn eventually<T, F, Fut>(what: &str, limit: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A server that is down, with its database and address kept.
pub struct StoppedApp {
    backend: Backend,
    config: Config,
    database_url: String,
    data_dir: tempfile::TempDir,
}

impl StoppedApp {
    /// The address it will listen on again.
    pub fn addr(&self) -> SocketAddr {
        self.config.listen
    }

    /// Starts the server again on the same address and database.
    pub async fn start_again(self) -> TestApp {
        TestApp::start(self.backend, self.config, self.database_url, self.data_dir).await
    }
}

/// Event payloads that are hard to render the same twice: escapes,
/// astral characters, negative zero, the largest integers, huge and tiny
/// doubles, nesting and empty containers; a string, a number, a list.
pub fn odd_payloads() -> Vec<Value> {
    vec![
        json!({
            "text": "quote \" backslash \\ newline \n tab \t crab \u{1F980} bell \u{7} <script>",
            "negative zero": -0.0, "big": u64::MAX, "huge": 1.5e300, "tiny": 1e-7, "neg": -42,
            "list": [1, "x", null, true, {"k": []}],
            "nested": {"z": 1, "a": {"b": {}}},
        }),
        json!("just a string"),
        json!(42.25),
        json!([null, false]),
    ]
}

/// The value of the metric sample named exactly `sample` (labels
/// included, e.g. `ferrite_devices{status="ONLINE"}`) in `/metrics` text.
pub fn metric_sample(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// What a GraphQL call answered.
#[derive(Debug)]
pub struct GqlResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl GqlResponse {
    /// `data`, after checking there are no errors.
    pub fn data(&self) -> &Value {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected errors (HTTP {}): {}",
            self.status,
            self.body
        );
        &self.body["data"]
    }

    /// The `extensions.code` of the first error; panics when there is none.
    pub fn error_code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "expected an error with a code, got (HTTP {}): {}",
                    self.status, self.body
                )
            })
    }

    pub fn error_message(&self) -> &str {
        self.body["errors"][0]["message"].as_str().unwrap_or("")
    }
}

impl TestApp {
    /// A server with the default configuration.
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A server whose configuration `adjust` may change first.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
        init_logging();
        let data_dir = tempfile::tempdir().expect("a temp dir");
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", data_dir.path().join("ferrite.db").display()),
            Backend::Postgres => fresh_postgres_database().await,
        };
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("an address"),
            data_dir: data_dir.path().to_owned(),
            database_url: Some(Secret::new(database_url.clone())),
            jwt_secret: Some(Secret::new(JWT_SECRET)),
            admin_password: Some(Secret::new(ADMIN_PASSWORD)),
            ..Config::default()
        };
        adjust(&mut config);
        config.validate().expect("a valid test configuration");
        Self::start(backend, config, database_url, data_dir).await
    }

    async fn start(
        backend: Backend,
        config: Config,
        database_url: String,
        data_dir: tempfile::TempDir,
    ) -> TestApp {
        let server = Server::start(config.clone())
            .await
            .expect("the server starts");
        let addr = server.local_addr();
        let (shutdown, stop) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stop.await;
                })
                .await
                .expect("the server runs");
        });
        TestApp {
            addr,
            config,
            client: reqwest::Client::new(),
            backend,
            database_url,
            shutdown: Some(shutdown),
            handle: Some(handle),
            _data_dir: data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server gracefully and waits until it has.
    pub async fn stop(mut self) {
        self.stop_server().await;
    }

    async fn stop_server(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("the server task ends cleanly");
        }
    }

    /// A second server (another node) on the same database, as a cluster of
    /// two would run: same JWT secret, own data directory and port.
    pub async fn spawn_peer(&self) -> TestApp {
        let data_dir = tempfile::tempdir().expect("a temp dir");
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("an address");
        config.data_dir = data_dir.path().to_owned();
        Self::start(self.backend, config, self.database_url.clone(), data_dir).await
    }

    /// Stops the server and starts a new one (a new node, on a new port) on
    /// the same database and data directory.
    pub async fn restart(mut self) -> TestApp {
        self.stop_server().await;
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("an address");
        let data_dir = std::mem::replace(
            &mut self._data_dir,
            tempfile::tempdir().expect("a temp dir"),
        );
        Self::start(self.backend, config, self.database_url.clone(), data_dir).await
    }

    /// Stops the server and starts it again on the same address and
    /// database, as an operator restarting the service would: clients
    /// configured with its URL find it again.
    pub async fn restart_in_place(self) -> TestApp {
        self.stop_for_now().await.start_again().await
    }

    /// Stops the server but keeps its database and address, for
    /// [`StoppedApp::start_again`]: a server that is down for a while.
    pub async fn stop_for_now(mut self) -> StoppedApp {
        self.stop_server().await;
        let mut config = self.config.clone();
        config.listen = self.addr;
        StoppedApp {
            backend: self.backend,
            config,
            database_url: self.database_url.clone(),
            data_dir: std::mem::replace(
                &mut self._data_dir,
                tempfile::tempdir().expect("a temp dir"),
            ),
        }
    }

    /// POSTs a GraphQL request.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> GqlResponse {
        let body = json!({ "query": query, "variables": variables });
        self.post_raw(token, "application/json", body.to_string())
            .await
    }

    /// POSTs a GraphQL request and returns the response body as sent.
    pub async fn gql_text(&self, token: &str, query: &str, variables: Value) -> String {
        let body = json!({ "query": query, "variables": variables });
        self.send_raw(Some(token), "application/json", body.to_string())
            .await
            .text()
            .await
            .expect("a body")
    }

    /// POSTs a whole GraphQL request (`query`, `variables`,
    /// `operationName`, `extensions`) and returns the response body as sent.
    pub async fn post_request_text(&self, token: &str, request: &Value) -> String {
        self.send_raw(Some(token), "application/json", request.to_string())
            .await
            .text()
            .await
            .expect("a body")
    }

    /// POSTs any body to `/graphql`.
    pub async fn post_raw(
        &self,
        token: Option<&str>,
        content_type: &str,
        body: String,
    ) -> GqlResponse {
        Self::read(self.send_raw(token, content_type, body).await).await
    }

    async fn send_raw(
        &self,
        token: Option<&str>,
        content_type: &str,
        body: String,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the server answers")
    }

    pub async fn read(response: reqwest::Response) -> GqlResponse {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("expected JSON (HTTP {status}), got: {text}"));
        GqlResponse {
            status,
            content_type,
            body,
        }
    }

    /// `GET /metrics` with an optional bearer token: status and body.
    pub async fn scrape_metrics(&self, token: Option<&str>) -> (u16, String) {
        let mut request = self.client.get(self.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        (status, response.text().await.expect("a body"))
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let response = self
            .gql(
                None,
                "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }",
                json!({ "u": username, "p": password }),
            )
            .await;
        response.data()["login"]["accessToken"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    pub async fn admin_token(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates a MEMBER and returns its access token.
    pub async fn create_member(&self, username: &str) -> String {
        let admin = self.admin_token().await;
        self.gql(
            Some(&admin),
            "mutation($u: String!, $p: String!) { createUser(input: {username: $u, password: $p}) { id } }",
            json!({ "u": username, "p": MEMBER_PASSWORD }),
        )
        .await
        .data();
        self.login(username, MEMBER_PASSWORD).await
    }

    /// Creates an API key with `permission` for the token's user; returns the secret.
    pub async fn create_api_key(&self, token: &str, permission: &str) -> String {
        self.create_api_key_with_id(token, permission).await.0
    }

    /// Creates an API key with `permission` for the token's user; returns
    /// the secret and the key's id.
    pub async fn create_api_key_with_id(&self, token: &str, permission: &str) -> (String, Value) {
        let response = self
            .gql(
                Some(token),
                &format!(
                    "mutation {{ createApiKey(name: \"test key\", permission: {permission}) {{ secret apiKey {{ id }} }} }}"
                ),
                json!({}),
            )
            .await;
        let created = &response.data()["createApiKey"];
        let secret = created["secret"].as_str().expect("a secret").to_owned();
        (secret, created["apiKey"]["id"].clone())
    }

    /// Registers a device and returns its id.
    pub async fn register_device(&self, token: &str, external_id: &str) -> String {
        let response = self
            .gql(
                Some(token),
                "mutation($e: String!) { registerDevice(input: {externalId: $e}) { id } }",
                json!({ "e": external_id }),
            )
            .await;
        response.data()["registerDevice"]["id"]
            .as_str()
            .expect("a device id")
            .to_owned()
    }

    /// Publishes one event and returns its id.
    pub async fn publish(
        &self,
        token: &str,
        device_id: &str,
        service: &str,
        payload: Value,
    ) -> String {
        let response = self
            .gql(
                Some(token),
                "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
                json!({ "i": { "deviceId": device_id, "service": service, "payload": payload } }),
            )
            .await;
        response.data()["publishEvent"]["id"]
            .as_str()
            .expect("an event id")
            .to_owned()
    }

    /// Publishes `count` events to `device` from a task, over HTTP, in calls
    /// of `per_call`; event `n` (from 0) gets `payload(n)`. The task panics on
    /// any error.
    pub fn spawn_publisher(
        &self,
        token: &str,
        device: &str,
        count: usize,
        per_call: usize,
        payload: impl Fn(usize) -> Value + Send + 'static,
    ) -> JoinHandle<()> {
        let url = self.url("/graphql");
        let token = token.to_owned();
        let device = device.to_owned();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let numbers: Vec<usize> = (0..count).collect();
            for chunk in numbers.chunks(per_call) {
                let inputs: Vec<Value> = chunk
                    .iter()
                    .map(|n| json!({"deviceId": device, "service": "n", "payload": payload(*n)}))
                    .collect();
                let answer: Value = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"query": "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }", "variables": {"i": inputs}}))
                    .send()
                    .await
                    .expect("the server answers")
                    .json()
                    .await
                    .expect("JSON");
                assert!(answer.get("errors").is_none(), "{answer}");
            }
        })
    }

    /// How many events the token's scope sees.
    pub async fn event_count(&self, token: &str) -> u64 {
        self.gql(Some(token), "{ events { totalCount } }", json!({}))
            .await
            .data()["events"]["totalCount"]
            .as_u64()
            .expect("a count")
    }

    /// How many devices the token's scope sees.
    pub async fn device_count(&self, token: &str) -> u64 {
        self.gql(Some(token), "{ devices { totalCount } }", json!({}))
            .await
            .data()["devices"]["totalCount"]
            .as_u64()
            .expect("a count")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
