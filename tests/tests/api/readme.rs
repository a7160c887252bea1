//! The README's first-steps walkthrough, run verbatim against a fresh server
//! (only the address and the admin password are filled in).

use ferrite_e2e::{ADMIN_PASSWORD, Backend, TestApp};

fn walkthrough() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let block = readme
        .split("<!-- walkthrough -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /walkthrough -->").next())
        .expect("README.md has a walkthrough block");
    block
        .trim()
        .strip_prefix("```bash")
        .and_then(|b| b.strip_suffix("```"))
        .expect("the walkthrough is one bash code block")
        .to_owned()
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
