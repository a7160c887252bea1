//! What an operator relies on: one server per data directory, a killed
//! server restarting cleanly.

use std::{path::Path, process::Output};

use ferrite_e2e::{
    JWT_SECRET,
    process::{ServerProcess, free_loopback_addr, kill_hard, terminate, workspace_binary},
};

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
