//! Gateways and servers as real processes, killed with SIGKILL and started
//! again: what the connector accepted is stored exactly once, in order.

use std::{path::Path, process::Stdio, time::Duration};

use ferrite_connector::{Connector, ConnectorOptions, DeviceSpec, Event};
use ferrite_e2e::{
    ADMIN_PASSWORD, eventually, gql_at,
    process::{ServerProcess, free_loopback_addr, kill_hard, terminate, workspace_binary},
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// GraphQL over HTTP to a server process.
/// Sends a command over HTTP to a server process; returns its id.
async fn send_command(
    addr: std::net::SocketAddr,
    token: &str,
    device_id: &str,
    service: &str,
    payload: Value,
) -> String {
    let sent = gql_at(
        addr,
        Some(token),
        "mutation($d: ID!, $s: String!, $p: JSON) { sendCommand(input: {deviceId: $d, service: $s, payload: $p}) { id } }",
        json!({"d": device_id, "s": service, "p": payload}),
    )
    .await;
    sent["sendCommand"]["id"]
        .as_str()
        .expect("a command id")
        .to_owned()
}

/// An admin token and a WRITE key on a fresh server process.
async fn admin_and_key(addr: std::net::SocketAddr) -> (String, String) {
    let login = gql_at(
        addr,
        None,
        "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken } }",
        json!({"p": ADMIN_PASSWORD}),
    )
    .await;
    let token = login["login"]["accessToken"].as_str().unwrap().to_owned();
    let key = gql_at(
        addr,
        Some(&token),
        "mutation { createApiKey(name: \"gateway\", permission: WRITE) { secret } }",
        json!({}),
    )
    .await["createApiKey"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    (token, key)
}

/// Every stored event as (id, device external id, payload, idempotency key),
/// in id order.
async fn all_events(addr: std::net::SocketAddr, token: &str) -> Vec<(i64, String, Value, String)> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = gql_at(
            addr,
            Some(token),
            "query($a: String) { events(first: 500, after: $a) { nodes { id payload idempotencyKey device { externalId } } pageInfo { endCursor hasNextPage } } }",
            json!({"a": after}),
        )
        .await;
        for node in page["events"]["nodes"].as_array().unwrap() {
            events.push((
                node["id"].as_str().unwrap().parse().unwrap(),
                node["device"]["externalId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                node["payload"].clone(),
                node["idempotencyKey"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
        if page["events"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["events"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    }
    events.sort_by_key(|event| event.0);
    events
}

/// The server is killed (SIGKILL, mid-batch) while a gateway publishes
/// continuously, and started again: every event the gateway accepted is
/// stored exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_nothing_the_gateway_accepted() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let mut server = ServerProcess::start(addr, data.path()).await;
    let (token, key) = admin_and_key(addr).await;

    let outbox = tempfile::tempdir().unwrap();
    let options = ConnectorOptions::new(format!("ws://{addr}/graphql"), &key, "gw")
        .unwrap()
        .outbox_path(outbox.path().join("outbox.db"))
        .unwrap()
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(300))
        .unwrap();
    let connector = Connector::start(options).await.unwrap();
    connector.register(DeviceSpec::new("meter")).await.unwrap();

    const EVENTS: i64 = 3000;
    let publisher = {
        let connector = connector.clone();
        tokio::spawn(async move {
            for n in 0..EVENTS {
                connector
                    .queue(vec![Event::new("meter", "n", json!(n))])
                    .await
                    .expect("the outbox accepts every event");
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    // Kill the server while events are in flight.
    tokio::time::sleep(Duration::from_millis(400)).await;
    kill_hard(&mut server.child).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _server = ServerProcess::start(addr, data.path()).await;
    publisher.await.unwrap();
    connector.flush(Duration::from_secs(60)).await.unwrap();

    let events = all_events(addr, &token).await;
    let payloads: Vec<i64> = events.iter().map(|e| e.2.as_i64().unwrap()).collect();
    assert_eq!(
        payloads,
        (0..EVENTS).collect::<Vec<_>>(),
        "exactly once, in order"
    );
    connector.shutdown().await.unwrap();
}

fn write_config(path: &Path, addr: std::net::SocketAddr, key: &str, outbox: &Path, devices: &str) {
    std::fs::write(
        path,
        format!(
            "url = \"ws://{addr}/graphql\"\napi_key = \"{key}\"\nconnector_id = \"sim\"\n\
             [outbox]\npath = \"{}\"\n\
             [timeouts]\nreconnect_min_seconds = 0.05\nreconnect_max_seconds = 0.3\nrequest_seconds = 3.0\n\
             {devices}",
            outbox.display()
        ),
    )
    .unwrap();
}

fn start_gateway(config: &Path, log: &str) -> Child {
    Command::new(workspace_binary("ferrite-connector"))
        .arg("--config")
        .arg(config)
        .args(["--log", log, "run"])
        .stdout(Stdio::null())
        .stderr(if log == "info" {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("ferrite-connector starts")
}

/// The idempotency keys waiting in an outbox file (read after its gateway
/// died, when its lock is gone).
async fn outbox_keys(path: &Path) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(format!("sqlite://{}?mode=rw", path.display()))
        .await
        .unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT idempotency_key FROM outbox ORDER BY seq",
        ))
        .await
        .unwrap();
    let keys = rows
        .iter()
        .map(|row| row.try_get::<String>("", "idempotency_key").unwrap())
        .collect();
    db.close().await.unwrap();
    keys
}

/// The gateway process is killed with events still in its outbox (the
/// server was down), then started again: none lost, none duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_sends_its_outbox_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let mut server = ServerProcess::start(addr, data.path()).await;
    let (token, key) = admin_and_key(addr).await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.db");
    let config = dir.path().join("connector.toml");
    write_config(
        &config,
        addr,
        &key,
        &outbox,
        "[[device]]\nid = \"thermo\"\nkind = \"thermometer\"\ninterval_seconds = 0.01\n",
    );

    // Online for a moment, then the server goes away and the gateway keeps
    // measuring into its outbox; then the gateway is killed.
    let mut gateway = start_gateway(&config, "warn");
    eventually("the gateway publishes", Duration::from_secs(30), || async {
        (!all_events(addr, &token).await.is_empty()).then_some(())
    })
    .await;
    kill_hard(&mut server.child).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    kill_hard(&mut gateway).await;
    let waiting = outbox_keys(&outbox).await;
    assert!(
        waiting.len() >= 10,
        "the outbox held {} events",
        waiting.len()
    );

    // Both come back; the gateway sends what it had before anything new.
    let _server = ServerProcess::start(addr, data.path()).await;
    let mut gateway = start_gateway(&config, "warn");
    eventually(
        "the outbox is delivered",
        Duration::from_secs(30),
        || async {
            let stored = all_events(addr, &token).await;
            let keys: Vec<&str> = stored.iter().map(|e| e.3.as_str()).collect();
            waiting
                .iter()
                .all(|key| keys.contains(&key.as_str()))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        terminate(&mut gateway).await,
        Some(0),
        "a clean exit on SIGTERM"
    );

    let stored = all_events(addr, &token).await;
    let keys: Vec<&str> = stored.iter().map(|e| e.3.as_str()).collect();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len(), "no event stored twice");
    // The events that waited were stored in the order they were taken.
    let positions: Vec<usize> = waiting
        .iter()
        .map(|key| keys.iter().position(|k| k == key).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(
        stored
            .iter()
            .all(|e| e.1 == "thermo" && e.2["celsius"].is_number())
    );
}

/// The simulator from a config file: devices online, a thermometer
/// publishing, a lamp following a switch, a relay answering commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_gateway_brings_its_devices_to_life() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let _server = ServerProcess::start(addr, data.path()).await;
    let (token, key) = admin_and_key(addr).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("connector.toml");
    write_config(
        &config,
        addr,
        &key,
        &dir.path().join("outbox.db"),
        &format!(
            "[log]\ndirectory = \"{}\"\n{}",
            logs.path().display(),
            "[[device]]\nid = \"thermo\"\nkind = \"thermometer\"\ninterval_seconds = 0.2\n\
         [[device]]\nid = \"switch\"\nkind = \"switch\"\ninterval_seconds = 0.3\n\
         [[device]]\nid = \"lamp\"\nkind = \"lamp\"\nfollows = \"switch\"\n\
         [[device]]\nid = \"pump\"\nkind = \"relay\"\n"
        ),
    );
    let mut gateway = start_gateway(&config, "info");

    // Everything online and publishing within a few seconds.
    let pump_id = eventually("all four alive", Duration::from_secs(30), || async {
        let devices = gql_at(
            addr,
            Some(&token),
            "query { devices(first: 10) { nodes { id externalId status connectorId } } }",
            json!({}),
        )
        .await;
        let nodes = devices["devices"]["nodes"].as_array().unwrap().clone();
        let events = all_events(addr, &token).await;
        let published = |device: &str| events.iter().filter(|e| e.1 == device).count();
        let online = nodes.iter().filter(|n| n["status"] == "ONLINE").count();
        let alive = online == 4 && published("thermo") >= 3 && published("lamp") >= 2;
        alive.then(|| {
            nodes.iter().find(|n| n["externalId"] == "pump").unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
    })
    .await;

    // The lamp follows the switch: each of its states names the switch
    // event it followed, which had that state, in the switch's order.
    let events = all_events(addr, &token).await;
    let switch: std::collections::HashMap<i64, bool> = events
        .iter()
        .filter(|e| e.1 == "switch")
        .map(|e| (e.0, e.2["on"].as_bool().unwrap()))
        .collect();
    let mut followed = Vec::new();
    for lamp in events.iter().filter(|e| e.1 == "lamp") {
        let following = lamp.2["following"].as_i64().unwrap();
        assert_eq!(
            switch.get(&following),
            lamp.2["on"].as_bool().as_ref(),
            "{lamp:?}"
        );
        assert!(following < lamp.0, "a lamp follows an earlier switch event");
        followed.push(following);
    }
    assert!(followed.windows(2).all(|w| w[0] < w[1]), "{followed:?}");

    // The relay answers `set`, and refuses what it does not know.
    for (service, payload, status, result) in [
        ("set", json!({"on": true}), "SUCCEEDED", json!({"on": true})),
        (
            "explode",
            json!(null),
            "FAILED",
            json!({"error": "unknown service \"explode\"; try set or get"}),
        ),
    ] {
        let id = send_command(addr, &token, &pump_id, service, payload).await;
        let answered = eventually(service, Duration::from_secs(10), || async {
            let command = gql_at(
                addr,
                Some(&token),
                "query($id: ID!) { command(id: $id) { status result } }",
                json!({"id": id}),
            )
            .await;
            (command["command"]["status"] == status).then_some(command)
        })
        .await;
        assert_eq!(answered["command"]["result"], result);
    }

    // SIGTERM: a clean exit, and the devices go OFFLINE with the session.
    assert_eq!(terminate(&mut gateway).await, Some(0));
    // It logged to a rotating file (the writer is flushed at exit).
    let log_files: Vec<_> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(log_files.len(), 1, "{log_files:?}");
    let name = log_files[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("ferrite-connector.") && name.ends_with(".log"),
        "{name}"
    );
    let log = std::fs::read_to_string(&log_files[0]).unwrap();
    assert!(
        log.contains("registered") && log.contains("command"),
        "{log}"
    );
    assert!(!log.contains(&key), "the API key is never logged");
    eventually("every device OFFLINE", Duration::from_secs(10), || async {
        let devices = gql_at(
            addr,
            Some(&token),
            "query { devices(first: 10) { nodes { status } } }",
            json!({}),
        )
        .await;
        let nodes = devices["devices"]["nodes"].as_array().unwrap().clone();
        nodes.iter().all(|n| n["status"] == "OFFLINE").then_some(())
    })
    .await;
}

/// Runs a one-shot verb of `ferrite-connector` with `config`.
async fn verb(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(workspace_binary("ferrite-connector"))
        .arg("--config")
        .arg(config)
        .args(["--log", "error"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("ferrite-connector runs")
}

fn stdout_json(output: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON: {line}")))
        .collect()
}

/// `register`, `event` and `listen` from a script, including an event
/// published while the server is down (exit 75, kept, sent next time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_shot_verbs_work_from_a_script() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let mut server = ServerProcess::start(addr, data.path()).await;
    let (token, key) = admin_and_key(addr).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("connector.toml");
    write_config(&config, addr, &key, &dir.path().join("outbox.db"), "");

    let registered = verb(
        &config,
        &[
            "register",
            "boiler",
            "--name",
            "Boiler",
            "--type",
            "heater",
            "--attributes",
            "{\"kw\": 24}",
        ],
    )
    .await;
    assert!(registered.status.success(), "{registered:?}");
    let device = &stdout_json(&registered)[0];
    assert_eq!(device["externalId"], "boiler");
    assert_eq!(device["name"], "Boiler");
    assert_eq!(device["attributes"], json!({"kw": 24}));
    assert_eq!(device["status"], "ONLINE");

    let published = verb(
        &config,
        &["event", "boiler", "temperature", "{\"celsius\": 61}"],
    )
    .await;
    assert!(published.status.success(), "{published:?}");
    let ack = &stdout_json(&published)[0];
    assert!(ack["id"].as_i64().is_some(), "{ack}");

    // The server is down: the event is kept, exit code 75.
    kill_hard(&mut server.child).await;
    let offline = verb(
        &config,
        &["event", "boiler", "temperature", "{\"celsius\": 62}"],
    )
    .await;
    assert_eq!(offline.status.code(), Some(75), "{offline:?}");
    assert!(String::from_utf8_lossy(&offline.stderr).contains("outbox"));

    // Back up: the next run sends the kept event first.
    let _server = ServerProcess::start(addr, data.path()).await;
    let later = verb(
        &config,
        &["event", "boiler", "temperature", "{\"celsius\": 63}"],
    )
    .await;
    assert!(later.status.success(), "{later:?}");
    let celsius: Vec<i64> = all_events(addr, &token)
        .await
        .iter()
        .map(|e| e.2["celsius"].as_i64().unwrap())
        .collect();
    assert_eq!(celsius, [61, 62, 63]);

    // listen: host the device, print one command, answer it.
    let listener = Command::new(workspace_binary("ferrite-connector"))
        .arg("--config")
        .arg(&config)
        .args([
            "--log", "error", "listen", "boiler", "--answer", "ok", "--count", "1",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let device_id = device["id"].as_str().unwrap();
    let sent = send_command(addr, &token, device_id, "heat", json!({"target": 70})).await;
    let output = tokio::time::timeout(Duration::from_secs(20), listener.wait_with_output())
        .await
        .expect("listen exits after one command")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let command = &stdout_json(&output)[0];
    assert_eq!(command["id"], sent);
    assert_eq!(command["device"], "boiler");
    assert_eq!(command["payload"], json!({"target": 70}));
    let state = gql_at(
        addr,
        Some(&token),
        "query($id: ID!) { command(id: $id) { status result } }",
        json!({"id": command["id"]}),
    )
    .await;
    assert_eq!(state["command"]["status"], "SUCCEEDED");
}
