//! Builds the dashboard (`web/`) into `OUT_DIR` and hands it to memory-serve,
//! which embeds it in release builds (precompressed) and serves it from
//! `OUT_DIR` in debug builds.
//!
//! - `npm ci` runs only when `web/package-lock.json` differs from the copy
//!   left in `node_modules` by the last install (offline-friendly: nothing is
//!   fetched once the lock is installed).
//! - Then `vite build` writes into `OUT_DIR/web`, never into the source tree.
//! - Parallel cargo invocations (clippy and test, two profiles) share
//!   `web/node_modules`: a lock directory serialises the installs and
//!   builds.
//! - Node missing or older than 20.19 is a build error that says so.
//! - `FERRITE_SKIP_WEB=1` builds the server without Node, serving a page that
//!   says the dashboard was left out (for Rust-only work and the fuzzers; the
//!   README's commands and CI never set it).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Vite 8 needs Node ^20.19 (or ≥ 22.12).
const NODE_MIN: (u32, u32) = (20, 19);
/// Inputs of the bundle: a change to any of them rebuilds it.
const SOURCES: &[&str] = &[
    "src",
    "index.html",
    "graphiql.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = manifest.join("..").join("web");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets it")).join("web");
    println!("cargo::rerun-if-env-changed=FERRITE_SKIP_WEB");
    for source in SOURCES {
        let path = web.join(source);
        if path.exists() {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }
    if env::var_os("FERRITE_SKIP_WEB").is_some_and(|v| v != "0") {
        placeholder(&out);
    } else {
        build(&web, &out);
    }
    backdate(&out);
    memory_serve::load_directory(&out);
}

/// Gives everything under `dir` an old modification time.
///
/// memory-serve declares `rerun-if-changed` on the directory it embeds, and
/// cargo reruns a build script when anything there is newer than the moment
/// the script *started*: a directory the script fills itself would make
/// every later `cargo build` or `cargo test` run vite again and recompile
/// the server and everything above it. The files are generated from the
/// sources declared above, so their own times carry no information.
fn backdate(dir: &Path) {
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
    let entries = fs::read_dir(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            backdate(&path);
        } else if let Ok(file) = fs::File::options().write(true).open(&path) {
            let _ = file.set_modified(old);
        }
    }
    // A directory's own time changes as files are written into it.
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.set_modified(old);
    }
}

fn fail(message: &str) -> ! {
    // A panic in a build script shows its message in full; `cargo::error`
    // is not stable on every toolchain the workspace allows.
    panic!(
        "\n\nferrite-server: cannot build the dashboard (web/): {message}\n\
         The dashboard needs Node.js >= {}.{} and npm on PATH (see README, \"Dashboard\").\n\
         For Rust-only work, FERRITE_SKIP_WEB=1 builds the server without it.\n",
        NODE_MIN.0, NODE_MIN.1
    );
}

fn build(web: &Path, out: &Path) {
    check_node();
    let lock = BuildLock::take(&web.join("node_modules.lock"));

    let lockfile = fs::read(web.join("package-lock.json"))
        .unwrap_or_else(|e| fail(&format!("web/package-lock.json: {e}")));
    let installed = web
        .join("node_modules")
        .join(".ferrite-installed-lock.json");
    if fs::read(&installed).ok().as_deref() != Some(&lockfile[..]) {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
                .current_dir(web),
            "npm ci",
        );
        fs::write(&installed, &lockfile)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", installed.display())));
    }
    run(
        Command::new("node")
            .arg(web.join("node_modules/vite/bin/vite.js"))
            .args(["build", "--emptyOutDir", "--logLevel", "warn", "--outDir"])
            .arg(out)
            .current_dir(web),
        "vite build",
    );
    drop(lock);
}

/// A directory that exists while one build script works in `web/`
/// (`create_dir` is atomic; `File::lock` needs a newer Rust than the
/// workspace's minimum). One left by a killed build is taken over after
/// ten minutes.
struct BuildLock(PathBuf);

impl BuildLock {
    fn take(path: &Path) -> BuildLock {
        loop {
            match fs::create_dir(path) {
                Ok(()) => return BuildLock(path.to_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > std::time::Duration::from_secs(600));
                    if stale {
                        let _ = fs::remove_dir(path);
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                }
                Err(e) => fail(&format!("{}: {e}", path.display())),
            }
        }
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

fn check_node() {
    let output = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| fail(&format!("`node --version` did not run: {e}")));
    let version = String::from_utf8_lossy(&output.stdout);
    let mut parts = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < NODE_MIN {
        fail(&format!("Node.js {} is too old", version.trim()));
    }
}

fn run(command: &mut Command, what: &str) {
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("`{what}` failed ({status}); its output is above")),
        Err(e) => fail(&format!("`{what}` did not run: {e}")),
    }
}

fn placeholder(out: &Path) {
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out).unwrap_or_else(|e| fail(&format!("{}: {e}", out.display())));
    fs::write(
        out.join("index.html"),
        "<!doctype html><meta charset=utf-8><title>Ferrite</title>\
         <p>This server was built with FERRITE_SKIP_WEB=1: the dashboard was left out. \
         The API is at <a href=/graphql>/graphql</a>.</p>\n",
    )
    .unwrap_or_else(|e| fail(&format!("{}: {e}", out.display())));
}
