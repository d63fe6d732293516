//! Child processes that die with their handle, and small waiting helpers.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) when dropped, unless it already exited.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Spawns `cmd`.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Proc> {
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawn {name}: {e}"))?;
        Ok(Proc {
            child,
            name: name.to_owned(),
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`libc`-free: through `kill`).
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{sig} {} failed", self.pid());
        Ok(())
    }

    /// SIGKILL now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where [`free_port`] looks: below the kernel's default range for ephemeral ports
/// (32768-60999), which every outgoing connection on the machine draws its local port from.
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A TCP port free on loopback, for a child process to listen on. The port is released before
/// the child binds it, so it is taken outside the ephemeral range: a port the kernel handed out
/// for `127.0.0.1:0` could meanwhile become the local port of any test's connection to
/// PostgreSQL, the broker or S3, and the child would fail to listen. Ports are tried from a
/// point that differs per process and per call, so concurrent test processes rarely try the
/// same one; a port something already listens on is skipped.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let start = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos)
        .wrapping_add(call.wrapping_mul(7_919));
    let span = PORTS.end - PORTS.start;
    for step in 0..span {
        let port = PORTS.start + start.wrapping_add(step.wrapping_mul(101)) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on 127.0.0.1 in {PORTS:?}")
}
