//! What an operator relies on: one server per data directory, a killed
//! server restarting cleanly, HTTPS and WSS with certificates renewed in
//! place.

use std::{net::SocketAddr, path::Path, process::Output, sync::Arc, time::Duration};

use ferrite_connector::{Connector, ConnectorOptions, DeviceSpec, DeviceStatus};
use ferrite_e2e::{
    Backend, JWT_SECRET, TestApp, eventually, gql_at, on_both_backends,
    process::{ServerProcess, free_loopback_addr, kill_hard, terminate, workspace_binary},
    ws::{RawSocket, initialised, next_json, send_json},
};
use serde_json::{Value, json};

on_both_backends!(a_backup_taken_under_load_holds_everything_committed_before_it);

/// Runs `ferrite ARGS --data-dir DIR` to its end.
async fn ferrite(args: &[&str], data_dir: &Path) -> Output {
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(workspace_binary("ferrite"))
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("FERRITE_JWT_SECRET", JWT_SECRET)
            .env("FERRITE_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ferrite ends within 60 s")
    .expect("ferrite runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_per_data_directory_and_a_killed_one_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = ServerProcess::start(free_loopback_addr(), dir.path()).await;
    let pid = first.child.id().expect("running");

    // A second server on the same directory refuses, naming the first.
    let second_addr = free_loopback_addr().to_string();
    let second = ferrite(&["serve", "--listen", &second_addr], dir.path()).await;
    assert!(!second.status.success(), "a second server started");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains(&format!("already served by PID {pid}")),
        "{said}"
    );
    // So does `migrate`; the small verbs work beside the server.
    let migrate = ferrite(&["migrate"], dir.path()).await;
    assert!(!migrate.status.success());
    assert!(String::from_utf8_lossy(&migrate.stderr).contains("already served by PID"));
    let users = ferrite(&["user", "list"], dir.path()).await;
    assert!(
        users.status.success(),
        "{}",
        String::from_utf8_lossy(&users.stderr)
    );
    assert!(String::from_utf8_lossy(&users.stdout).contains("admin"));

    // SIGKILL: no shutdown code runs, the lock file stays with its PID, and
    // still the next start takes the directory over.
    kill_hard(&mut first.child).await;
    let lock_file = std::fs::read_to_string(dir.path().join("ferrite.lock")).unwrap();
    assert_eq!(lock_file.trim(), pid.to_string());
    let mut again = ServerProcess::start(free_loopback_addr(), dir.path()).await;
    assert_eq!(terminate(&mut again.child).await, Some(0));
    // Stopped cleanly, the directory is free for `migrate`.
    let migrate = ferrite(&["migrate"], dir.path()).await;
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
}

/// A self-signed certificate for 127.0.0.1, written as PEM files.
fn certificate(
    dir: &Path,
    name: &str,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    rustls::pki_types::CertificateDer<'static>,
) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().clone())
}

/// A TLS client that trusts `cert` alone.
fn trusting(cert: &rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// One HTTP/1.1 request over TLS; the whole response as text.
async fn https(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    body: &Value,
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nFerrite-Session: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// A graphql-transport-ws socket over WSS, initialised with `token`.
async fn wss(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, token: &str) -> RawSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("wss://{addr}/graphql")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        true,
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    )
    .await
    .expect("the WSS upgrade succeeds");
    initialised(socket, token, None).await
}

/// The next `next` payload's event on a raw socket.
async fn next_event(socket: &mut RawSocket) -> Value {
    loop {
        let message = next_json(socket).await;
        if message["type"] == "next" {
            return message["payload"]["data"]["events"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_on_the_listener_with_a_certificate_swapped_under_open_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first) = certificate(dir.path(), "first");
    let (cert_file, key_file) = (cert.clone(), key.clone());
    let app = TestApp::spawn_with(Backend::Sqlite, move |config| {
        config.tls_cert = Some(cert_file);
        config.tls_key = Some(key_file);
    })
    .await;
    let tls = trusting(&first);

    // HTTPS: a query, and a sign-in whose refresh cookie is Secure.
    let login = json!({"username": "admin", "password": ferrite_e2e::ADMIN_PASSWORD});
    let answer = https(app.addr, tls.clone(), "/auth/login", &login)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let token = answer
        .split("\"accessToken\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    // Plain HTTP on the TLS port gets nowhere.
    assert!(app.client.get(app.url("/healthz")).send().await.is_err());

    // WSS: a subscription sees what HTTPS publishes.
    let device = {
        let register =
            json!({"query": "mutation { registerDevice(input: {externalId: \"tls\"}) { id } }"});
        let answer = https_gql(&app, tls.clone(), &token, &register).await;
        answer["data"]["registerDevice"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut socket = wss(app.addr, tls.clone(), &token).await;
    send_json(&mut socket, json!({"type": "subscribe", "id": "e", "payload": {"query": "subscription { events { id payload } }"}})).await;
    let publish = |n: u64| json!({"query": "mutation($i: EventInput!) { publishEvent(input: $i) { id } }", "variables": {"i": {"deviceId": device, "service": "n", "payload": n}}});
    // The subscription starts a moment after `subscribe`: publish until it shows.
    let mut n = 0;
    loop {
        n += 1;
        https_gql(&app, tls.clone(), &token, &publish(n)).await;
        if let Ok(event) =
            tokio::time::timeout(Duration::from_millis(500), next_event(&mut socket)).await
        {
            assert!(event["payload"].as_u64().unwrap() <= n);
            break;
        }
        assert!(n < 40, "the WSS subscription never got an event");
    }
    while tokio::time::timeout(Duration::from_millis(300), next_event(&mut socket))
        .await
        .is_ok()
    {}

    // A renewal: new files in place (as certbot would). New handshakes get
    // the new certificate within the reload check; the open socket runs on.
    let (renewed_cert, renewed_key, second) = certificate(dir.path(), "second");
    std::fs::rename(&renewed_key, &key).unwrap();
    std::fs::rename(&renewed_cert, &cert).unwrap();
    let renewed = trusting(&second);
    eventually(
        "the renewed certificate to be served",
        Duration::from_secs(30),
        || {
            let renewed = renewed.clone();
            async move {
                https(
                    app.addr,
                    renewed,
                    "/graphql",
                    &json!({"query": "{ __typename }"}),
                )
                .await
                .ok()
            }
        },
    )
    .await;
    // (A fresh client: one that resumes an earlier session is not shown a
    // certificate at all.)
    assert!(
        https(
            app.addr,
            trusting(&first),
            "/graphql",
            &json!({"query": "{ __typename }"})
        )
        .await
        .is_err(),
        "the old certificate is still served"
    );
    https_gql(&app, renewed.clone(), &token, &publish(1000)).await;
    let event = tokio::time::timeout(Duration::from_secs(15), next_event(&mut socket))
        .await
        .expect("the old socket still delivers");

    // A gateway that trusts the (renewed) certificate with `tls_ca_file`.
    let created = https_gql(
        &app,
        renewed.clone(),
        &token,
        &json!({"query": "mutation { createApiKey(name: \"gw\", permission: WRITE) { secret } }"}),
    )
    .await;
    let api_key = created["data"]["createApiKey"]["secret"].as_str().unwrap();
    let options = ConnectorOptions::new(format!("wss://{}/graphql", app.addr), api_key, "tls-gw")
        .unwrap()
        .outbox_path(dir.path().join("outbox.db"))
        .unwrap()
        .tls_ca_file(&cert)
        .unwrap();
    let connector = Connector::start(options).await.unwrap();
    let registered = connector.register(DeviceSpec::new("secure")).await.unwrap();
    assert_eq!(registered.status, DeviceStatus::Online);
    connector.shutdown().await.unwrap();
    assert_eq!(event["payload"], 1000);
}

async fn https_gql(
    app: &TestApp,
    tls: Arc<rustls::ClientConfig>,
    token: &str,
    body: &Value,
) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let body = body.to_string();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (_, json) = response.split_once("\r\n\r\n").expect("a body");
    serde_json::from_str(json).unwrap_or_else(|_| panic!("not JSON: {response}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_refuse_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path(), "good");
    let (_, other_key, _) = certificate(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    for (cert, key, says) in [
        (
            &garbage,
            &key,
            format!(
                "the TLS certificate file {} holds no PEM certificate",
                garbage.display()
            ),
        ),
        (
            &missing,
            &key,
            format!("cannot read the TLS certificate file {}", missing.display()),
        ),
        (
            &cert,
            &other_key,
            format!(
                "the TLS key file {} does not fit the certificate",
                other_key.display()
            ),
        ),
    ] {
        let data_dir = tempfile::tempdir().unwrap();
        let addr = free_loopback_addr().to_string();
        let cert = cert.to_str().unwrap();
        let key = key.to_str().unwrap();
        let out = ferrite(
            &[
                "serve",
                "--listen",
                &addr,
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
            data_dir.path(),
        )
        .await;
        assert!(!out.status.success(), "started with {cert} / {key}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&says), "{stderr}");
    }
    // One without the other is a configuration error.
    let data_dir = tempfile::tempdir().unwrap();
    let out = ferrite(
        &["serve", "--tls-cert", cert.to_str().unwrap()],
        data_dir.path(),
    )
    .await;
    assert!(!out.status.success());
}

/// `Type=notify`: READY=1 once the server answers, STOPPING=1 on SIGTERM,
/// over the datagram socket systemd names in NOTIFY_SOCKET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_once_the_server_answers_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let addr = free_loopback_addr();
    let mut child = tokio::process::Command::new(workspace_binary("ferrite"))
        .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("FERRITE_JWT_SECRET", JWT_SECRET)
        .env("FERRITE_ADMIN_PASSWORD", ferrite_e2e::ADMIN_PASSWORD)
        .env("FERRITE_LOG", "warn")
        .env("NOTIFY_SOCKET", &notify_path)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut message = vec![0u8; 4096];
    let heard = |buf: &[u8], n: usize| String::from_utf8_lossy(&buf[..n]).into_owned();
    let n = tokio::time::timeout(Duration::from_secs(60), notify.recv(&mut message))
        .await
        .expect("READY within 60 s")
        .unwrap();
    assert_eq!(heard(&message, n).trim(), "READY=1");
    // Ready means ready: the first request after it is answered.
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert!(health.status().is_success());
    assert_eq!(terminate(&mut child).await, Some(0));
    let n = tokio::time::timeout(Duration::from_secs(5), notify.recv(&mut message))
        .await
        .expect("STOPPING was sent")
        .unwrap();
    assert_eq!(heard(&message, n).trim(), "STOPPING=1");
}

/// The unit file in `deploy/` is one systemd accepts, sandboxed.
#[test]
fn the_systemd_unit_verifies() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/ferrite.service"
    ))
    .unwrap();
    for directive in [
        "Type=notify",
        "User=ferrite",
        "StateDirectory=ferrite",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == directive),
            "the unit lacks {directive}"
        );
    }
    // Verified with ExecStart pointing at the binary this test built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferrite.service");
    let binary = workspace_binary("ferrite");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/ferrite", binary.to_str().unwrap()),
    )
    .unwrap();
    let verify = std::process::Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = std::process::Command::new(&analyze)
        // The threshold counts tenths: 20 is an exposure of 2.0 ("OK").
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "exposure above 2.0:\n{}",
        String::from_utf8_lossy(&security.stdout)
    );
}

/// A program on PATH.
fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

/// `ferrite backup` beside a running server under a steady publisher: the
/// file holds every event committed before it started, checks out, and
/// publishing never stopped. A damaged or foreign file does not check out.
async fn a_backup_taken_under_load_holds_everything_committed_before_it(backend: Backend) {
    use ferrite_server::store::{BackupError, inspect_backup};
    let app = TestApp::spawn(backend).await;
    let token = app.admin_token().await;
    let device = app.register_device(&token, "busy").await;
    let publisher = app.spawn_publisher(&token, &device, 20_000, 100, |n| json!(n));
    let committed_before = eventually("some events", Duration::from_secs(60), || async {
        let n = app.event_count(&token).await;
        (n >= 2_000).then_some(n)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nightly.db");
    let out = ferrite_e2e::process::ferrite_cli(
        &app.database_url,
        &["backup", file.to_str().unwrap()],
        "",
    )
    .await;
    assert!(out.contains("checked"), "{out}");
    publisher
        .await
        .expect("publishing went on through the backup");
    assert_eq!(app.event_count(&token).await, 20_000);

    let summary = inspect_backup(&file).await.unwrap();
    assert!(
        summary.events as u64 >= committed_before && summary.events <= 20_000,
        "{} events in the backup, {committed_before} committed before it",
        summary.events
    );
    assert_eq!((summary.users, summary.devices), (1, 1));
    // A backup never overwrites.
    let refused = ferrite_e2e::process::ferrite_cli_fails(
        &app.database_url,
        &["backup", file.to_str().unwrap()],
    )
    .await;
    assert!(refused.contains("exists"), "{refused}");

    // Cut short, or not Ferrite's: refused, with the reason.
    let bytes = std::fs::read(&file).unwrap();
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let foreign = dir.path().join("foreign.db");
    std::fs::write(&foreign, b"SQLite format 3\0 but not really").unwrap();
    let other = dir.path().join("other.db");
    {
        let db = sea_orm::Database::connect(format!("sqlite://{}?mode=rwc", other.display()))
            .await
            .unwrap();
        use sea_orm::ConnectionTrait;
        db.execute_unprepared("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
            .await
            .unwrap();
        db.close().await.unwrap();
    }
    for (path, expected) in [
        (&truncated, "damaged|not a readable"),
        (&foreign, "damaged|not a readable"),
        (&other, "not a Ferrite backup"),
    ] {
        let err = inspect_backup(path).await.unwrap_err();
        assert!(
            matches!(
                err,
                BackupError::Damaged(..) | BackupError::Unreadable(..) | BackupError::Foreign(..)
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            expected.split('|').any(|e| text.contains(e)),
            "{path:?}: {text}"
        );
    }
}

/// What a client sees of the whole installation, for comparing two: the
/// accounts, devices and commands, then every event page by page (cursors
/// included).
async fn everything(addr: SocketAddr, token: &str) -> Vec<Value> {
    const ACCOUNTS: &str = r#"{
      users { id username role createdAt disabledAt }
      apiKeys { id name prefix permission ownerId createdAt revokedAt }
      devices(first: 10) { totalCount edges { cursor node { id externalId name status attributes
        statusHistory(first: 10) { status at } } } }
      commands(first: 10) { totalCount nodes { id deviceId service payload status result } }
    }"#;
    const EVENTS: &str = "query($after: String) { events(first: 500, after: $after) { totalCount \
      edges { cursor node { id deviceId service payload occurredAt receivedAt } } pageInfo { hasNextPage endCursor } } }";
    let mut pages = vec![gql_at(addr, Some(token), ACCOUNTS, json!({})).await];
    let mut after = Value::Null;
    loop {
        let page = gql_at(addr, Some(token), EVENTS, json!({"after": after})).await;
        after = page["events"]["pageInfo"]["endCursor"].clone();
        let more = page["events"]["pageInfo"]["hasNextPage"] == true;
        pages.push(page);
        if !more {
            return pages;
        }
    }
}

async fn admin_at(addr: SocketAddr) -> String {
    let login = gql_at(
        addr,
        None,
        "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken } }",
        json!({"p": ferrite_e2e::ADMIN_PASSWORD}),
    )
    .await;
    login["login"]["accessToken"].as_str().unwrap().to_owned()
}

/// A SQLite installation with a row in every table, backed up, restored
/// into PostgreSQL (the move) and into a new SQLite directory, and the
/// PostgreSQL one backed up and restored into SQLite again: all answer
/// every query as the original did, cursors included, and a subscriber
/// resuming with `after` on the new backend misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_postgres_and_sqlite_with_every_row_and_cursor() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let alice = app.create_member("alice").await;
    let key = app.create_api_key(&alice, "WRITE").await;
    app.create_api_key(&admin, "READ").await;
    let device = app.register_device(&key, "thermo").await;
    let gone = app.register_device(&key, "gone").await;
    app.gql(
        Some(&key),
        "mutation($id: ID!) { deleteDevice(id: $id) }",
        json!({"id": gone}),
    )
    .await
    .data();
    for n in [0, 500, 1000] {
        app.publish(&key, &device, "n", json!(n)).await;
    }
    app.spawn_publisher(&key, &device, 1_200, 100, |n| json!({"n": n}))
        .await
        .unwrap();
    let sent = app
        .gql(
            Some(&admin),
            "mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }",
            json!({"i": {"deviceId": device, "service": "set", "payload": {"on": true}}}),
        )
        .await;
    assert!(sent.data()["sendCommand"]["id"].is_string());
    let original = everything(app.addr, &admin).await;
    assert_eq!(original[1]["events"]["totalCount"], 1_203);
    assert_eq!(original.len(), 4, "three pages of events");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("move.db");
    ferrite_e2e::process::ferrite_cli(&app.database_url, &["backup", file.to_str().unwrap()], "")
        .await;
    app.stop().await;

    // Into PostgreSQL, and into a fresh SQLite data directory.
    let postgres = ferrite_e2e::fresh_postgres_database().await;
    let out =
        ferrite_e2e::process::ferrite_cli(&postgres, &["restore", file.to_str().unwrap()], "")
            .await;
    assert!(
        out.contains("restored") && out.contains("1203 events"),
        "{out}"
    );
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = format!(
        "sqlite://{}",
        sqlite_dir.path().join("ferrite.db").display()
    );
    let out =
        ferrite_e2e::process::ferrite_cli(&sqlite, &["restore", file.to_str().unwrap()], "").await;
    assert!(out.contains("1203 events"), "{out}");

    // And back: a backup of the PostgreSQL database, restored into SQLite.
    let from_postgres = dir.path().join("from-postgres.db");
    let out = ferrite_e2e::process::ferrite_cli(
        &postgres,
        &["backup", from_postgres.to_str().unwrap()],
        "",
    )
    .await;
    assert!(out.contains("1203 events"), "{out}");
    let back_dir = tempfile::tempdir().unwrap();
    let back = format!("sqlite://{}", back_dir.path().join("ferrite.db").display());
    ferrite_e2e::process::ferrite_cli(&back, &["restore", from_postgres.to_str().unwrap()], "")
        .await;

    for url in [&postgres, &sqlite, &back] {
        let data_dir = tempfile::tempdir().unwrap();
        let mut server =
            ServerProcess::start_with(free_loopback_addr(), data_dir.path(), Some(url), &[]).await;
        let token = admin_at(server.addr).await;
        let restored = everything(server.addr, &token).await;
        assert_eq!(restored, original, "{url}");
        // Resuming after the 103rd newest event: the 102 after it, then a
        // new one with a higher id than any restored.
        let after = original[1]["events"]["edges"][102]["node"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let ws_app_token = token.clone();
        let mut socket = raw_socket_at(server.addr, &ws_app_token).await;
        send_json(
            &mut socket,
            json!({"type": "subscribe", "id": "e", "payload": {"query": "subscription($a: ID) { events(after: $a) { id } }", "variables": {"a": after}}}),
        )
        .await;
        let mut ids = Vec::new();
        for _ in 0..102 {
            ids.push(
                next_event(&mut socket).await["id"]
                    .as_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
            );
        }
        let newest = original[1]["events"]["edges"][0]["node"]["id"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap();
        assert_eq!(ids.first().copied(), Some(newest - 101), "{url}");
        assert_eq!(ids.last().copied(), Some(newest), "{url}");
        let published = gql_at(
            server.addr,
            Some(&token),
            "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
            json!({"i": {"deviceId": device, "service": "after-restore", "payload": 1}}),
        )
        .await;
        let new_id = published["publishEvent"]["id"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap();
        assert!(new_id > newest, "{url}: {new_id} after {newest}");
        assert_eq!(next_event(&mut socket).await["id"], new_id.to_string());
        // Not under a running server: on SQLite even named by its database
        // URL alone; on PostgreSQL while any node heartbeats.
        let refused =
            ferrite_e2e::process::ferrite_cli_fails(url, &["restore", file.to_str().unwrap()])
                .await;
        let expected = if url == &postgres {
            "stop them first"
        } else {
            "already served by PID"
        };
        assert!(refused.contains(expected), "{url}: {refused}");
        assert_eq!(terminate(&mut server.child).await, Some(0));
    }

    // A damaged file is refused before anything changes.
    let database = sqlite_dir.path().join("ferrite.db");
    let before = std::fs::read(&database).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let refused =
        ferrite_e2e::process::ferrite_cli_fails(&sqlite, &["restore", truncated.to_str().unwrap()])
            .await;
    assert!(
        refused.contains("damaged") || refused.contains("not a readable"),
        "{refused}"
    );
    assert!(
        std::fs::read(&database).unwrap() == before,
        "the database changed"
    );
}

async fn raw_socket_at(addr: SocketAddr, token: &str) -> RawSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/graphql")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    initialised(socket, token, None).await
}

/// `[backup] every_seconds`: the server writes checked backups by itself,
/// keeps the newest `keep`, and counts them (and failures) in /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_are_taken_pruned_and_counted() {
    use ferrite_e2e::metric_sample;
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().to_owned();
    let app = TestApp::spawn_with(Backend::Sqlite, move |config| {
        config.backup.every_seconds = 1;
        config.backup.keep = 2;
        config.backup.dir = Some(dir);
    })
    .await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "scheduled").await;
    app.publish(&admin, &device, "n", json!(1)).await;
    let files = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "db"))
            .collect();
        names.sort();
        names
    };
    let taken = eventually(
        "four scheduled backups",
        Duration::from_secs(60),
        || async {
            let (_, text) = app.scrape_metrics(Some(&admin)).await;
            metric_sample(&text, "ferrite_backups_total")
                .filter(|n| *n >= 4.0)
                .map(|_| text)
        },
    )
    .await;
    assert!(
        metric_sample(&taken, "ferrite_backup_last_success_timestamp_seconds").unwrap() > 1.7e9
    );
    assert_eq!(
        metric_sample(&taken, "ferrite_backup_failures_total"),
        Some(0.0)
    );
    let kept = files(backups.path());
    assert_eq!(kept.len(), 2, "{kept:?}");
    for file in kept {
        let summary = ferrite_server::store::inspect_backup(&file).await.unwrap();
        assert_eq!(summary.events, 1);
    }
    app.stop().await;

    // A directory that cannot be written: failures are counted, the
    // server runs on.
    let blocked = tempfile::NamedTempFile::new().unwrap();
    let path = blocked.path().join("backups");
    let app = TestApp::spawn_with(Backend::Sqlite, move |config| {
        config.backup.every_seconds = 1;
        config.backup.dir = Some(path);
    })
    .await;
    let admin = app.admin_token().await;
    eventually("a counted failure", Duration::from_secs(60), || async {
        let (_, text) = app.scrape_metrics(Some(&admin)).await;
        metric_sample(&text, "ferrite_backup_failures_total").filter(|n| *n >= 1.0)
    })
    .await;
    assert_eq!(
        app.gql(Some(&admin), "{ me { permission } }", json!({}))
            .await
            .data()["me"]["permission"],
        "ADMIN"
    );
}
