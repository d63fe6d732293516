//! A private PostgreSQL cluster on its own port, for tests that stop and restart the database
//! (never the shared server). `initdb` refuses to run as root, so the cluster runs as `postgres`
//! when the tests run as root.

use crate::process::free_port;
use std::path::PathBuf;
use std::process::Command;

/// A private cluster; stopped and removed when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    pub port: u16,
    pub dir: tempfile::TempDir,
    bin: PathBuf,
}

fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    dirs.sort();
    dirs.pop()
        .filter(|d| d.join("initdb").exists())
        .ok_or_else(|| anyhow::anyhow!("initdb not found"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivatePostgres {
    /// Initialises and starts a cluster with trust authentication on a free port.
    pub fn start() -> anyhow::Result<PrivatePostgres> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg")
            .tempdir_in("/tmp")?;
        let pg = PrivatePostgres {
            port: free_port()?,
            dir,
            bin: pg_bin_dir()?,
        };
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status()?
                .success();
            anyhow::ensure!(ok, "chown of the private cluster directory failed");
        }
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        pg.start_server()?;
        Ok(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(tool);
        let out = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()?
        } else {
            Command::new(&exe).args(args).output()?
        };
        anyhow::ensure!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Starts (or restarts) the server.
    pub fn start_server(&self) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        )
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop_server(&self) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-m", "fast", "-w", "stop"],
        )
    }

    /// URL of database `postgres` on this cluster.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop_server();
    }
}
