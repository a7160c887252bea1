//! The `ferrite-connector` binary on bad input: it refuses with a message
//! and exit code 2, before connecting anywhere. (Runs against a server are
//! in the workspace's end-to-end tests.)

use std::process::{Command, Output};

fn connector(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrite-connector"));
    command.current_dir(dir).args(args);
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("FERRITE_CONNECTOR_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command.output().expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_prints_the_configuration_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/connector.example.toml");
    let output = connector(
        dir.path(),
        &["--config", example, "check"],
        &[
            ("FERRITE_CONNECTOR_API_KEY", "frt_very_secret"),
            ("FERRITE_CONNECTOR_CONNECTOR_ID", "greenhouse"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(printed["connectorId"], "greenhouse");
    assert_eq!(printed["devices"].as_array().unwrap().len(), 4);
    assert!(!stdout.contains("frt_very_secret") && !stderr(&output).contains("frt_very_secret"));
}

#[test]
fn garbage_configuration_and_flags_exit_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connector.toml");
    let key = ("FERRITE_CONNECTOR_API_KEY", "frt_x");
    let id = ("FERRITE_CONNECTOR_CONNECTOR_ID", "gw");
    let long_id = "x".repeat(129);
    // (connector.toml, arguments, environment, expected in the message)
    type Case<'a> = (
        Option<&'a str>,
        Vec<&'a str>,
        Vec<(&'a str, &'a str)>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (None, vec!["check"], vec![id], "api_key is missing"),
        (
            None,
            vec!["--config", "nope.toml", "check"],
            vec![key, id],
            "does not exist",
        ),
        (Some("url = 12"), vec!["check"], vec![key, id], "url"),
        (
            Some("[outbox]\npath = 7"),
            vec!["check"],
            vec![key, id],
            "path",
        ),
        (
            Some("not toml at all ]["),
            vec!["check"],
            vec![key, id],
            "connector.toml",
        ),
        (
            Some("colour = \"red\""),
            vec!["check"],
            vec![key, id],
            "colour",
        ),
        (
            None,
            vec!["check"],
            vec![key, id, ("FERRITE_CONNECTOR_URL", "gopher://x")],
            "url",
        ),
        (
            None,
            vec!["--log", "[[[", "check"],
            vec![key, id],
            "log level",
        ),
        (None, vec!["run"], vec![key, id], "no [[device]]"),
        (
            None,
            vec!["--outbox", ".", "check"],
            vec![key, id],
            "outbox_path",
        ),
        (
            None,
            vec!["bogus-verb"],
            vec![key, id],
            "unrecognized subcommand",
        ),
        (None, vec!["event", "d", "s"], vec![key, id], "required"),
        (
            None,
            vec!["event", "d", "s", "1", "--occurred-at", "yesterday"],
            vec![key, id],
            "invalid value",
        ),
        (
            None,
            vec!["listen", "--answer", "maybe"],
            vec![key, id],
            "invalid value",
        ),
        (
            None,
            vec!["register", "x", "--attributes", "[1]"],
            vec![key, id],
            "attributes must be a JSON object",
        ),
        (
            None,
            vec!["register", "x", "--attributes", "nope"],
            vec![key, id],
            "not JSON",
        ),
        (
            None,
            vec!["register", &long_id],
            vec![key, id],
            "external id must be 1–128 characters",
        ),
    ];
    for (toml, args, env, expected) in cases {
        match toml {
            Some(toml) => std::fs::write(&file, toml).unwrap(),
            None => {
                let _ = std::fs::remove_file(&file);
            }
        }
        let output = connector(dir.path(), &args, &env);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{args:?} {toml:?}: expected {expected:?} in {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_payload_that_is_not_json_is_refused_before_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let output = connector(
        dir.path(),
        &["event", "thermo", "temperature", "{not json"],
        &[
            ("FERRITE_CONNECTOR_API_KEY", "frt_x"),
            ("FERRITE_CONNECTOR_CONNECTOR_ID", "gw"),
            // Nothing listens here: the payload is refused before any attempt.
            ("FERRITE_CONNECTOR_URL", "ws://127.0.0.1:9/graphql"),
            ("FERRITE_CONNECTOR_OUTBOX__PATH", "outbox.db"),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("not JSON"), "{}", stderr(&output));
}
