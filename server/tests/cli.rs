//! The `ferrite` binary as a user runs it: help, schema, user and key
//! management, configuration errors, and a first start that serves and stops
//! cleanly on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

fn ferrite(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrite"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("FERRITE_DATABASE_URL")
        .env_remove("FERRITE_ADMIN_PASSWORD")
        .env("FERRITE_LOG", "warn")
        // Keep ./ferrite.toml and the user's config out of the tests.
        .env("XDG_CONFIG_HOME", data_dir)
        .current_dir(data_dir);
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn schema_graphql_matches_the_server() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    let printed = ferrite_server::graphql::sdl();
    assert!(
        on_disk == printed,
        "schema.graphql is out of date with the server's schema. Regenerate it with\n\n    \
         cargo run -p ferrite-server -- schema > schema.graphql\n"
    );
}

#[test]
fn help_explains_every_verb() {
    let dir = tempfile::tempdir().unwrap();
    let help = run(ferrite(dir.path()).arg("--help"));
    assert!(help.status.success());
    let text = stdout(&help);
    for verb in ["serve", "migrate", "schema", "user", "apikey"] {
        assert!(
            text.contains(verb),
            "--help does not mention {verb}:\n{text}"
        );
    }
    let user = stdout(&run(ferrite(dir.path()).args(["user", "--help"])));
    for verb in ["add", "list", "passwd"] {
        assert!(user.contains(verb), "user --help does not mention {verb}");
    }
    let apikey = stdout(&run(ferrite(dir.path()).args(["apikey", "--help"])));
    for verb in ["create", "list", "revoke"] {
        assert!(
            apikey.contains(verb),
            "apikey --help does not mention {verb}"
        );
    }
}

#[test]
fn schema_prints_the_sdl() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(ferrite(dir.path()).arg("schema"));
    assert!(output.status.success());
    assert_eq!(stdout(&output), ferrite_server::graphql::sdl());
}

#[test]
fn users_and_keys_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let migrate = run(ferrite(dir.path()).arg("migrate"));
    assert!(migrate.status.success(), "{}", stderr(&migrate));

    let added = run(ferrite(dir.path()).args(["user", "add", "alice"]));
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(stdout(&added).contains("password: "));

    let mut with_stdin = ferrite(dir.path());
    with_stdin
        .args(["user", "add", "bob", "--role", "admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = with_stdin.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"bobs password\n")
        .unwrap();
    let bob = child.wait_with_output().unwrap();
    assert!(bob.status.success(), "{}", stderr(&bob));
    assert!(!stdout(&bob).contains("bobs password"));

    let duplicate = run(ferrite(dir.path()).args(["user", "add", "alice"]));
    assert!(!duplicate.status.success());
    assert!(
        stderr(&duplicate).contains("already exists"),
        "{}",
        stderr(&duplicate)
    );
    let bad_name = run(ferrite(dir.path()).args(["user", "add", "a b"]));
    assert!(!bad_name.status.success());

    let listed = stdout(&run(ferrite(dir.path()).args(["user", "list"])));
    assert!(
        listed.contains("alice") && listed.contains("MEMBER"),
        "{listed}"
    );
    assert!(
        listed.contains("bob") && listed.contains("ADMIN"),
        "{listed}"
    );

    let too_strong = run(ferrite(dir.path()).args([
        "apikey",
        "create",
        "--user",
        "alice",
        "--name",
        "gw",
        "--permission",
        "admin",
    ]));
    assert!(!too_strong.status.success());
    assert!(
        stderr(&too_strong).contains("at most"),
        "{}",
        stderr(&too_strong)
    );

    let created = run(ferrite(dir.path()).args([
        "apikey",
        "create",
        "--user",
        "alice",
        "--name",
        "gateway-1",
    ]));
    assert!(created.status.success(), "{}", stderr(&created));
    let text = stdout(&created);
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret (shown only now): "))
        .expect("the secret is printed");
    assert!(secret.starts_with("frt_"));
    let id = text.split_whitespace().nth(3).expect("the key id");

    let keys = stdout(&run(ferrite(dir.path()).args(["apikey", "list"])));
    assert!(
        keys.contains("gateway-1") && keys.contains("active"),
        "{keys}"
    );
    assert!(!keys.contains(secret), "a secret was listed");

    let revoked = run(ferrite(dir.path()).args(["apikey", "revoke", id]));
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let keys = stdout(&run(
        ferrite(dir.path()).args(["apikey", "list", "--user", "alice"])
    ));
    assert!(keys.contains("revoked"), "{keys}");
    let unknown =
        run(ferrite(dir.path()).args(["apikey", "revoke", "00000000-0000-0000-0000-000000000000"]));
    assert!(!unknown.status.success());
    let garbage = run(ferrite(dir.path()).args(["apikey", "revoke", "not-a-uuid"]));
    assert_eq!(garbage.status.code(), Some(2));

    let passwd = run(ferrite(dir.path()).args(["user", "passwd", "alice"]));
    assert!(passwd.status.success(), "{}", stderr(&passwd));
    let nobody = run(ferrite(dir.path()).args(["user", "passwd", "nobody"]));
    assert!(!nobody.status.success());
}

/// One configuration mistake and what its error must name.
struct Case {
    file: &'static str,
    env: &'static [(&'static str, &'static str)],
    flags: &'static [&'static str],
    names: &'static str,
}

impl Case {
    const fn file(file: &'static str, names: &'static str) -> Self {
        Case {
            file,
            env: &[],
            flags: &[],
            names,
        }
    }

    const fn env(env: &'static [(&'static str, &'static str)], names: &'static str) -> Self {
        Case {
            file: "",
            env,
            flags: &[],
            names,
        }
    }
}

/// Every configuration mistake is refused before anything starts, with a
/// message naming it.
#[test]
fn bad_configuration_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let cases = [
        Case::file("lisen = \"0.0.0.0:1\"\n", "lisen"),
        Case::file("listen = \n", "bad.toml"),
        Case::file("listen = \"nowhere\"\n", "listen"),
        Case::file("[limits]\npayload_bytes = \"big\"\n", "payload_bytes"),
        Case::file(
            "[limits]\npayload_bytes = 99999999\n",
            "limits.payload_bytes",
        ),
        Case::file("jwt_secret = \"short\"\n", "jwt_secret"),
        Case::file("database_url = \"mysql://x\"\n", "database_url"),
        Case::file(
            "[limits]\ntelemetry_buckets = 0\n",
            "limits.telemetry_buckets",
        ),
        Case::file("[limits]\ntelemetry_buckets = -1\n", "telemetry_buckets"),
        Case::file("[metrics]\npublic = \"yes\"\n", "public"),
        Case::file("[metrics]\nopen = true\n", "open"),
        Case::env(&[("FERRITE_LIMITS__PAYLOAD_BYTES", "abc")], "payload_bytes"),
        Case::env(
            &[("FERRITE_LIMITS__TELEMETRY_BUCKETS", "lots")],
            "telemetry_buckets",
        ),
        Case::env(&[("FERRITE_LISTEN", "garbage")], "listen"),
        Case::env(&[("FERRITE_ADMIN_PASSWORD", "short")], "admin_password"),
        Case {
            flags: &["--log", "[[[not a filter"],
            ..Case::file("", "log filter")
        },
    ];
    for Case {
        file: contents,
        env,
        flags,
        names: expected,
    } in cases
    {
        std::fs::write(&file, contents).unwrap();
        let mut command = ferrite(dir.path());
        command
            .arg("--config")
            .arg(&file)
            .args(flags)
            .arg("migrate");
        for (key, value) in env {
            command.env(key, value);
        }
        let output = run(&mut command);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{contents:?} {env:?} {flags:?} was accepted"
        );
        assert!(
            stderr(&output).to_lowercase().contains(expected),
            "the error for {contents:?} {env:?} {flags:?} does not name {expected}: {}",
            stderr(&output)
        );
    }
    let missing =
        run(ferrite(dir.path()).args(["--config", "/nonexistent/ferrite.toml", "migrate"]));
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("does not exist"));
    let bad_flag = run(ferrite(dir.path()).args(["serve", "--listen", "not-an-address"]));
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(stderr(&bad_flag).contains("--listen"));
    // Nothing was created by the refused runs.
    assert!(!dir.path().join("ferrite.db").exists());
}

/// A `ferrite serve` child and where it listens.
struct Served {
    child: Child,
    addr: String,
    stdout_lines: Vec<String>,
}

fn serve(dir: &Path, extra_env: &[(&str, &str)]) -> Served {
    let mut command = ferrite(dir);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("FERRITE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("ferrite serve starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    for line in stderr.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("ferrite is listening addr=").nth(1) {
            addr = Some(rest.trim().to_owned());
            break;
        }
    }
    let addr = addr.expect("the server says where it listens");
    // Keep reading the log, as a terminal or journald would.
    std::thread::spawn(move || stderr.for_each(drop));
    // The banner is printed before the listening line is logged.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stdout_lines = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
        stdout_lines.push(line);
    }
    Served {
        child,
        addr,
        stdout_lines,
    }
}

fn terminate(mut served: Served) -> std::process::ExitStatus {
    let pid = served.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    served.child.wait().unwrap()
}

async fn gql(addr: &str, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn first_start_creates_admin_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &[]);
    let password = served
        .stdout_lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .expect("the first start prints the admin password")
        .to_owned();
    let addr = served.addr.clone();

    let login = gql(
        &addr,
        None,
        "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken } }",
        json!({"p": password}),
    )
    .await;
    let token = login["data"]["login"]["accessToken"]
        .as_str()
        .expect("login works")
        .to_owned();
    let device = gql(
        &addr,
        Some(&token),
        "mutation { registerDevice(input: {externalId: \"t\"}) { id } }",
        json!({}),
    )
    .await;
    assert!(
        device["data"]["registerDevice"]["id"].is_string(),
        "{device}"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // --data-dir points at the temp dir itself.
        let mode = std::fs::metadata(dir.path().join("jwt-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the JWT secret is owner-only");
    }

    let status = terminate(served);
    assert!(status.success(), "ferrite exited with {status} on SIGTERM");

    // A second start keeps the data and prints no password.
    let again = serve(dir.path(), &[]);
    assert!(
        !again.stdout_lines.iter().any(|l| l.contains("password")),
        "{:?}",
        again.stdout_lines
    );
    let login = gql(
        &again.addr,
        None,
        "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken } }",
        json!({"p": password}),
    )
    .await;
    let token = login["data"]["login"]["accessToken"]
        .as_str()
        .expect("the same password works")
        .to_owned();
    let count = gql(
        &again.addr,
        Some(&token),
        "{ devices { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(count["data"]["devices"]["totalCount"], 1);
    assert!(terminate(again).success());
}

#[tokio::test]
async fn the_admin_password_can_be_given_by_environment() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(
        dir.path(),
        &[("FERRITE_ADMIN_PASSWORD", "chosen by the operator")],
    );
    assert!(!served.stdout_lines.iter().any(|l| l.contains("password")));
    let login = gql(
        &served.addr,
        None,
        "mutation { login(username: \"admin\", password: \"chosen by the operator\") { accessToken } }",
        json!({}),
    )
    .await;
    assert!(login["data"]["login"]["accessToken"].is_string(), "{login}");
    assert!(terminate(served).success());
}
