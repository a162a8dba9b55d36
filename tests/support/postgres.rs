//! A real PostgreSQL for the tests: a throwaway cluster (initdb + pg_ctl) in a temporary
//! directory, listening only on a unix socket inside it, so no port is shared with anything.
//!
//! Each test binary starts at most one shared cluster ([`Cluster::shared`]) and each test
//! server gets a fresh database in it ([`Cluster::create_database`]). The cluster is stopped
//! (`pg_ctl stop -m immediate`) when the test binary exits, by an `atexit` hook; a watchdog
//! process stops it too if the binary is killed, so no postgres is ever left running.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then the cluster runs as the
//! `postgres` user (`runuser -u postgres --`), with its directory chowned to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use chatd::store::postgres::PostgresOptions;
use chatd::store::{Retention, StoreConfig};

/// The port only names the socket file (`.s.PGSQL.5432`); nothing listens on TCP.
const PORT: u16 = 5432;

pub struct Cluster {
    /// Holds the data directory and the socket; removed on drop.
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    /// `Some("postgres")` when running as root.
    run_as: Option<String>,
    /// Whether commits are fsynced (benchmarks); tests run without.
    durable: bool,
    next_database: AtomicU32,
}

/// Why a cluster could not start, for the skip message.
pub type Unavailable = String;

impl Cluster {
    /// Starts a new cluster (about a second). `Err` says what is missing.
    pub fn start() -> Result<Cluster, Unavailable> {
        Cluster::start_with(false)
    }

    /// A cluster whose commits are fsynced, as a production server's are (for benchmarks).
    pub fn start_durable() -> Result<Cluster, Unavailable> {
        Cluster::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Cluster, Unavailable> {
        let bin = find_bin_dir().ok_or_else(|| {
            "no PostgreSQL binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin; \
             install the postgresql package"
                .to_owned()
        })?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = root.then(|| "postgres".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("chatd-pg")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown the cluster dir to {user}: {e}"))?;
        }
        let cluster = Cluster {
            dir: Some(dir),
            bin,
            run_as,
            durable,
            next_database: AtomicU32::new(0),
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    /// The binary's shared cluster, started on first use. `None` (after saying why, once)
    /// when PostgreSQL is not installed and this is not CI; in CI that is a failure.
    pub fn shared() -> Option<&'static Cluster> {
        static SHARED: OnceLock<Result<Cluster, Unavailable>> = OnceLock::new();
        let cluster = SHARED.get_or_init(|| {
            let cluster = Cluster::start();
            match &cluster {
                Ok(started) => {
                    watchdog(started);
                    extern "C" fn stop_shared() {
                        if let Some(Ok(cluster)) = SHARED.get() {
                            cluster.stop();
                        }
                    }
                    // SAFETY: registering a plain extern "C" fn.
                    unsafe { libc::atexit(stop_shared) };
                }
                Err(why) if std::env::var_os("CI").is_some() => {
                    panic!("CI must run the PostgreSQL tests, but: {why}")
                }
                Err(why) => eprintln!("skipping the PostgreSQL tests: {why}"),
            }
            cluster
        });
        cluster.as_ref().ok()
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("cluster dir").path()
    }

    fn data(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// A libpq connection string for `database` in this cluster.
    pub fn url(&self, database: &str) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname={database}",
            self.dir().display()
        )
    }

    /// A new, empty database; returns its connection string.
    pub fn create_database(&self) -> String {
        let n = self.next_database.fetch_add(1, Ordering::SeqCst);
        let name = format!("chatd_test_{n}");
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test PostgreSQL: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(&name)
    }

    /// A store config on a fresh database, as tests use it: no retention passes.
    pub fn store(&self) -> StoreConfig {
        self.store_at(&self.create_database())
    }

    /// A store config on the database `url`, as tests use it: no retention passes.
    pub fn store_at(&self, url: &str) -> StoreConfig {
        StoreConfig::Postgres(PostgresOptions {
            url: url.to_owned(),
            retention: Retention {
                interval: Duration::from_secs(3600),
                ..Retention::default()
            },
        })
    }

    /// A clean, fast restart (`pg_ctl restart -m fast`): every connection is cut.
    pub fn restart(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
        .expect("pg_ctl stop");
        self.pg_ctl_start().expect("pg_ctl start");
    }

    /// Stops the server at once (no checkpoint: the cluster is thrown away anyway).
    pub fn stop(&self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    fn pg_ctl_start(&self) -> Result<(), Unavailable> {
        // fsync off: tests check behaviour, not power loss (commits still wait for the WAL
        // write, so a chatd crash loses nothing acknowledged).
        let options = format!(
            "-c listen_addresses='' -k {} -p {PORT} -c max_connections=400 \
             -c shared_buffers=128MB {}",
            self.dir().display(),
            if self.durable {
                ""
            } else {
                "-c fsync=off -c full_page_writes=off"
            }
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.dir().join("log").display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(self.dir().join("log")).unwrap_or_default();
            format!("{e}\n{log}")
        })
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), Unavailable> {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {program}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {args:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

/// A test's own cluster (one it restarts, say) is stopped and removed when dropped.
impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Stops the shared cluster if this test binary dies without running its atexit hook
/// (SIGKILL, a timeout): a shell polls for the binary's pid once a second.
fn watchdog(cluster: &Cluster) {
    let pg_ctl = cluster.bin.join("pg_ctl");
    let stop = format!(
        "{}{} -D {} -m immediate stop",
        cluster
            .run_as
            .as_ref()
            .map(|user| format!("runuser -u {user} -- "))
            .unwrap_or_default(),
        pg_ctl.display(),
        cluster.data().display()
    );
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {}",
        std::process::id(),
        cluster.dir().display()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// The directory holding initdb and pg_ctl: PATH first, then Debian's versioned directories
/// (newest first).
fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    on_path
        .into_iter()
        .chain(debian)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        // Debian's PATH entries are symlinks; resolve to where postgres itself lives.
        .map(|dir| {
            std::fs::canonicalize(dir.join("pg_ctl"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(dir)
        })
}

fn user_ids(user: &str) -> Result<(u32, u32), Unavailable> {
    let id = |flag: &str| -> Result<u32, Unavailable> {
        let output = Command::new("id")
            .args([flag, user])
            .output()
            .map_err(|e| format!("id {flag} {user}: {e}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("running as root, and there is no {user} user to run PostgreSQL"))
    };
    Ok((id("-u")?, id("-g")?))
}
