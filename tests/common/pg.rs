//! A throwaway PostgreSQL for tests, shared by the lib's unit tests
//! (`src/lib.rs` includes this file) and the end-to-end tests
//! (`tests/common`). Only std: it must compile in both.
//!
//! One cluster per test process, started on first use: `initdb` into a
//! fresh directory under the temp dir, `postgres` on a free port of
//! 127.0.0.1 with its socket in that directory, as the `postgres` user
//! when the process is root (PostgreSQL refuses to run as root; Debian's
//! `postgresql` package creates that user). Each test gets a fresh
//! database (`database()`). A watchdog shell stops the cluster and
//! removes its directory when the test process is gone, however it ended
//! (Rust never drops statics, and a crash runs nothing), so no earlier
//! run's cluster holds a port or a directory for long; a directory whose
//! test process is dead is removed at the next start too.
//!
//! A missing PostgreSQL is a panic naming the package, never a skip.

#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DIR_PREFIX: &str = "siptrack-pg-";

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Outlives this process on purpose (it cleans up after it); kept so
    /// that it is not a forgotten child.
    _watchdog: Option<std::process::Child>,
}

/// A frozen server (`Cluster::freeze`): SIGCONT to each of its processes
/// when dropped.
pub struct Frozen {
    pids: Vec<libc::pid_t>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in self.pids.iter().rev() {
            // SAFETY: kill(2) to a process this guard stopped.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// The directory holding PostgreSQL's server programs: `$SIPTRACK_PG_BIN`,
/// else the newest /usr/lib/postgresql/<version>/bin (Debian puts them
/// there, not on PATH), else `pg_config --bindir`.
fn bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SIPTRACK_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").is_file() {
            return p;
        }
    }
    panic!(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: the storage tests \
         need them. Install them with `apt-get install postgresql` (./scripts/test does), or \
         set SIPTRACK_PG_BIN=/path/to/bin."
    )
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `program` from `bin`, as the `postgres` user when we are root.
fn pg_command(bin: &Path, program: &str) -> Command {
    let exe = bin.join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Removes clusters of test processes that are gone (their watchdog was
/// killed too, e.g. by a machine reboot): stops their server, deletes
/// the directory.
fn sweep_dead(bin: &Path) {
    let tmp = std::env::temp_dir();
    for e in fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let data = e.path().join("data");
        if data.join("postmaster.pid").exists() {
            let mut stop = pg_command(bin, "pg_ctl");
            stop.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        let _ = fs::remove_dir_all(e.path());
    }
}

impl Cluster {
    /// The test process's cluster, started on first use.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(Cluster::start)
    }

    /// A cluster of its own (for a test that stops and starts it), gone
    /// with the process like the shared one.
    pub fn start() -> Cluster {
        static N: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir();
        sweep_dead(&bin);
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the cluster directory");
        if is_root() {
            // PostgreSQL runs as `postgres`: it must own its directory,
            // and reach it through the temp dir (world-searchable /tmp).
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(&dir);
                    c
                },
                "chown postgres the cluster directory",
            );
        }
        let data = dir.join("data");
        let mut init = pg_command(&bin, "initdb");
        init.arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        run(init, "initdb");
        // The watchdog: stops the server and removes the directory once
        // this process is gone.
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} -D '{data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            stop = if is_root() {
                format!("runuser -u postgres -- '{}'", bin.join("pg_ctl").display())
            } else {
                format!("'{}'", bin.join("pg_ctl").display())
            },
            data = data.display(),
            dir = dir.display(),
        );
        // In a session of its own (setsid, util-linux): a kill of the
        // test's process group (a timeout, Ctrl-C) does not take the
        // watchdog with it.
        let mut shell = if Path::new("/usr/bin/setsid").is_file() {
            let mut c = Command::new("/usr/bin/setsid");
            c.arg("sh");
            c
        } else {
            Command::new("sh")
        };
        let mut watchdog = Some(
            shell
                .arg("-c")
                .arg(watchdog)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the cluster's watchdog"),
        );
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut cluster = Cluster {
                bin: bin.clone(),
                dir: dir.clone(),
                port,
                _watchdog: None,
            };
            match cluster.try_start_server() {
                Ok(()) => {
                    cluster._watchdog = watchdog.take();
                    return cluster;
                }
                // Another process took the port meanwhile: another one.
                Err(log) => last = log,
            }
        }
        panic!("PostgreSQL did not start in {}:\n{last}", dir.display())
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn try_start_server(&self) -> Result<(), String> {
        let log = self.dir.join("server.log");
        let mut c = pg_command(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "-t", "30", "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match c.status() {
            Ok(s) if s.success() => Ok(()),
            _ => Err(fs::read_to_string(&log).unwrap_or_default()),
        }
    }

    /// Stops the server (fast: connections are cut), as an outage would.
    pub fn stop(&self) {
        let mut c = pg_command(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"]);
        run(c, "pg_ctl stop");
    }

    /// The server's processes: the postmaster (from its pid file) and
    /// its children.
    fn processes(&self) -> Vec<String> {
        let pid = fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
            .expect("the server's pid file");
        let mut out: Vec<String> = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let stat = fs::read_to_string(e.path().join("stat")).ok()?;
                // pid (comm) state ppid …: comm may hold spaces.
                let after = &stat[stat.rfind(')')? + 2..];
                let ppid = after.split(' ').nth(1)?;
                (ppid == pid).then(|| e.file_name().to_string_lossy().into_owned())
            })
            .collect();
        out.push(pid);
        out
    }

    /// Stops every process of the server with SIGSTOP: connections stay
    /// open and nothing is answered, as with a frozen host or a network
    /// that drops everything (unlike `stop`, which refuses). The server
    /// goes on when the guard is dropped (also when the test fails: a
    /// frozen server would never stop).
    pub fn freeze(&self) -> Frozen {
        let pids: Vec<libc::pid_t> = self
            .processes()
            .iter()
            .map(|p| p.parse().expect("a pid"))
            .collect();
        for &pid in &pids {
            // SAFETY: kill(2) to a process of this test's own server.
            let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
            assert_eq!(rc, 0, "SIGSTOP {pid}");
        }
        Frozen { pids }
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(log) = self.try_start_server() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start again:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` maintenance database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A fresh, empty database; its URL.
    pub fn database(&self) -> String {
        self.database_with(&[])
    }

    /// A fresh, empty database made with more `createdb` options (another
    /// collation); its URL.
    pub fn database_with(&self, options: &[&str]) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = Command::new(self.bin.join("createdb"));
        c.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .args(options)
            .arg(&name);
        run(c, "createdb");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

/// A fresh database on the test process's cluster; its URL.
pub fn database() -> String {
    Cluster::shared().database()
}

/// A fresh database that compares text as people read it (ICU's en-US:
/// case and punctuation count for little), not byte by byte as the
/// cluster's C locale does; its URL.
#[allow(dead_code)] // Used by the unit tests, not every e2e binary.
pub fn database_collated_en_us() -> String {
    Cluster::shared().database_with(&[
        "--template=template0",
        "--locale-provider=icu",
        "--icu-locale=en-US",
    ])
}
