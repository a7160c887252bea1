//! The README's shell blocks, run verbatim against a fresh server (only
//! the address, the admin password and the token are filled in): the
//! first-steps walkthrough, and persisted queries with curl.

use ferrite_e2e::{ADMIN_PASSWORD, Backend, TestApp};

/// The bash block between `<!-- name -->` and `<!-- /name -->`.
fn block(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let block = readme
        .split(&format!("<!-- {name} -->"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("<!-- /{name} -->")).next())
        .unwrap_or_else(|| panic!("README.md has a {name} block"));
    block
        .trim()
        .strip_prefix("```bash")
        .and_then(|b| b.strip_suffix("```"))
        .unwrap_or_else(|| panic!("the {name} block is one bash code block"))
        .to_owned()
}

fn walkthrough() -> String {
    block("walkthrough")
}

/// Runs a script with bash's strict flags; its stdout.
async fn bash(script: &str, env: &[(&str, &str)]) -> String {
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .envs(env.iter().copied())
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_persisted_queries_work_verbatim() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let script = block("persisted-queries").replace("localhost:8080", &app.addr.to_string());
    let stdout = bash(&script, &[("TOKEN", &admin)]).await;
    let answers: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(answers.len(), 3, "{stdout}");
    assert!(answers[0].contains("PERSISTED_QUERY_NOT_FOUND"), "{stdout}");
    assert_eq!(answers[1], r#"{"data":{"devices":{"totalCount":0}}}"#);
    assert_eq!(answers[2], answers[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_verbatim() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let placeholder = "ADMIN_PASSWORD='paste the printed password here'";
    let script = walkthrough();
    assert!(
        script.contains(placeholder),
        "the walkthrough sets ADMIN_PASSWORD"
    );
    let script = script
        .replace(placeholder, &format!("ADMIN_PASSWORD='{ADMIN_PASSWORD}'"))
        .replace("localhost:8080", &app.addr.to_string());

    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the walkthrough failed:\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("\"errors\""),
        "the walkthrough hit errors:\n{stdout}"
    );
    assert!(stdout.contains("API key: frt_"), "{stdout}");
    assert!(stdout.contains("\"totalCount\":1"), "{stdout}");
    assert!(
        stdout.contains("\"payload\":{\"celsius\":21.5}"),
        "{stdout}"
    );
    assert!(stdout.contains("\"status\":\"PENDING\""), "{stdout}");

    // What the walkthrough did is really stored.
    let admin = app.admin_token().await;
    assert_eq!(app.device_count(&admin).await, 1);
    assert_eq!(app.event_count(&admin).await, 1);
}
