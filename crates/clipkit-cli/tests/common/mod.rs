//! What the binary's integration tests share: the committed fixtures, and a `clipkit` command
//! that cannot see the developer's own setup.
//!
//! Every `CLIPKIT_*` variable is removed (a developer's `CLIPKIT_STORE` or `CLIPKIT_MODEL`
//! would otherwise change what a test runs against), and HOME, XDG_CACHE_HOME and
//! CLIPKIT_CACHE point into cargo's temp dir for integration tests, so the packed weights the
//! binary caches never land in the developer's own `~/.cache/clipkit`.

// Each test file uses its own subset of these.
#![allow(dead_code, unused_macros)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The tiny QuickGELU checkpoint most tests run.
pub fn model() -> PathBuf {
    fixtures().join("models/tiny-quickgelu")
}

pub fn image(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

/// The home and cache folders the binary sees: inside cargo's temp dir for this package's
/// integration tests (under `target/`), kept between runs so packing the tiny models is not
/// repeated, and shared by the tests running at once as the real cache would be.
pub fn sandbox_home() -> PathBuf {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clipkit-cli-home");
    std::fs::create_dir_all(&home).expect("the sandbox home can be created");
    home
}

/// `clipkit`, ready for arguments, in the sandboxed environment (offline Hugging Face Hub).
pub fn clipkit() -> Command {
    let home = sandbox_home();
    let cache = home.join(".cache");
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipkit"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CLIPKIT_") {
            command.env_remove(&name);
        }
    }
    command
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", &cache)
        .env("CLIPKIT_CACHE", cache.join("clipkit"))
        .env("HF_HUB_OFFLINE", "1");
    command
}

/// Runs `clipkit` with these arguments to completion.
pub fn run_clipkit(args: &[&OsStr]) -> Output {
    clipkit().args(args).output().expect("clipkit runs")
}

/// `run!("classify", "-m", model, image)`: any mix of `&str`, `String`, `Path` and `PathBuf`.
macro_rules! run {
    ($($arg:expr),* $(,)?) => {
        $crate::common::run_clipkit(&[$(std::ffi::OsStr::new(&$arg)),*])
    };
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout as JSON; on failure the panic shows both streams.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}\nstdout: {}\nstderr: {}", stdout(o), stderr(o)))
}
