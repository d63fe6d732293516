//! A private `s3s-fs` server per test, on a free loopback port, over a temporary directory.

use crate::process::{free_port, wait_for, Proc};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Access key of test servers.
pub const ACCESS_KEY: &str = "sluice-test";
/// Secret key of test servers.
pub const SECRET_KEY: &str = "sluice-test-secret";

/// A running S3 server with one bucket.
#[derive(Debug)]
pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    pub root: tempfile::TempDir,
    pub port: u16,
    proc: Option<Proc>,
}

/// The `s3s-fs` binary: `S3S_FS_BIN`, else `.local/bin/s3s-fs`, else `s3s-fs` on PATH.
pub fn s3s_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS_BIN") {
        return PathBuf::from(p);
    }
    let local = crate::paths::workspace_root().join(".local/bin/s3s-fs");
    if local.exists() {
        local
    } else {
        PathBuf::from("s3s-fs")
    }
}

impl S3Server {
    /// Starts a server with bucket `bucket` and waits until it accepts connections.
    pub fn start(bucket: &str) -> anyhow::Result<S3Server> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join(bucket))?;
        let port = free_port()?;
        let mut s = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_owned(),
            root,
            port,
            proc: None,
        };
        s.restart()?;
        Ok(s)
    }

    /// Stops the server (objects stay on disk).
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts the server again on the same port and directory. With `S3S_FS_CPUS` set (a CPU
    /// list as `taskset` reads it), the server runs on those CPUs only: benches use it to give
    /// the object store cores of its own, as it would have on its own machine.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.proc = None;
        let mut cmd = match std::env::var("S3S_FS_CPUS") {
            Ok(cpus) if !cpus.is_empty() => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpus]).arg(s3s_bin());
                c
            }
            _ => Command::new(s3s_bin()),
        };
        cmd.args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc::spawn("s3s-fs", cmd).map_err(|e| {
            anyhow::anyhow!(
                "{e} (install it with scripts/services up, or set S3S_FS_BIN; with S3S_FS_CPUS \
                 set, `taskset` from util-linux runs it)"
            )
        })?;
        self.proc = Some(proc);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("s3s-fs to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(&addr).ok()
        })?;
        Ok(())
    }

    /// `OBJECT_STORE_URL` for this server's bucket under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix)
    }

    /// The `AWS_*` environment object_store reads to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Where an object's bytes live on disk.
    pub fn file_of(&self, key: &str) -> PathBuf {
        self.root.path().join(&self.bucket).join(key)
    }
}
