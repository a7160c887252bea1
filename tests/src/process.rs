//! The workspace's binaries as real child processes, for tests that kill
//! them (SIGKILL: no shutdown code runs) and start them again.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

use crate::{ADMIN_PASSWORD, JWT_SECRET};

/// A binary of the workspace, built next to the test executable
/// (`cargo test --workspace` builds `ferrite` and `ferrite-connector`
/// because their crates have integration tests).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A loopback address with a port that was free a moment ago.
pub fn free_loopback_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// Kills a child with SIGKILL and reaps it.
pub async fn kill_hard(child: &mut Child) {
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("the child is reaped");
}

/// Sends SIGTERM and waits up to 20 s for the child to exit; returns its code.
pub async fn terminate(child: &mut Child) -> Option<i32> {
    let pid = child.id().expect("the child is running") as i32;
    // kill(1) rather than libc: one process, one signal.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the child exits within 20 s after SIGTERM")
        .expect("the child is reaped")
        .code()
}

/// The `ferrite` server as a child process on SQLite in `data_dir`.
pub struct ServerProcess {
    pub addr: SocketAddr,
    pub child: Child,
}

impl ServerProcess {
    /// Starts `ferrite serve` and waits until `/healthz` answers.
    pub async fn start(addr: SocketAddr, data_dir: &Path) -> ServerProcess {
        Self::start_with(addr, data_dir, None, &[]).await
    }

    /// Starts `ferrite serve` on `database_url` (default: SQLite in
    /// `data_dir`) with extra `FERRITE_*` variables, and waits until
    /// `/healthz` answers.
    pub async fn start_with(
        addr: SocketAddr,
        data_dir: &Path,
        database_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let mut command = Command::new(workspace_binary("ferrite"));
        command
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            .env("FERRITE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("FERRITE_JWT_SECRET", JWT_SECRET)
            .env("FERRITE_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let child = command.spawn().expect("ferrite starts");
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/healthz");
        for _ in 0..200 {
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return ServerProcess { addr, child };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("ferrite did not answer /healthz on {addr} within 10 s");
    }

    /// The process's resident memory, in KiB; `None` once it has exited.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.child.id()?)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The resident memory of process `pid`, in KiB (Linux), if it runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Runs a one-shot verb of `ferrite` (`user …`, `apikey …`) on
/// `database_url`, as an operator would beside a running server, with
/// `stdin` as its input; panics unless it succeeds. Returns its output.
pub async fn ferrite_cli(database_url: &str, args: &[&str], stdin: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let data_dir = tempfile::tempdir().expect("a temp dir");
    let mut child = Command::new(workspace_binary("ferrite"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["--database-url", database_url])
        .env("FERRITE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ferrite starts");
    let mut input = child.stdin.take().expect("a stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("stdin is written");
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the verb ends within 60 s")
        .expect("the verb runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "ferrite {args:?} failed: {}{}",
        text,
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// Runs a `ferrite` verb on `database_url` that must fail; returns what it
/// printed on standard error.
pub async fn ferrite_cli_fails(database_url: &str, args: &[&str]) -> String {
    let data_dir = tempfile::tempdir().expect("a temp dir");
    let output = Command::new(workspace_binary("ferrite"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["--database-url", database_url])
        .env("FERRITE_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("ferrite runs");
    assert!(!output.status.success(), "ferrite {args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
