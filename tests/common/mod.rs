//! Shared harness for the end-to-end tests: start `siptrack run` on free
//! loopback ports, ping it over SIP, and drive SIPp (UAC and UAS) with every
//! process bounded in time and killed on drop.
//!
//! Use from a test file with `mod common;`. Everything binds to
//! 127.0.0.0/8 only.

#![allow(dead_code)]

pub mod amocrm;
pub mod bitrix24;
pub mod browser;
pub mod checks;
pub mod crm;
pub mod media;
pub mod pg;
pub mod rtp;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// Ports handed out by this process, so that two tests running on threads of
/// one test binary never get the same one.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

fn random_u64() -> u64 {
    // RandomState is seeded randomly per process; mix in time and pid so
    // that test processes started together (cargo nextest) differ too.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn port_is_free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A run of `len` consecutive ports, each free for UDP and TCP on 127.0.0.1.
///
/// Ports come from 20000..30000: below Linux's ephemeral range (32768+),
/// so the kernel does not hand them to outgoing connections meanwhile, and
/// below the media relay's default ports (`media.port_min = 30000`), which
/// the siptrack of another test may bind at any moment (the likely cause
/// of a callee port found taken once in CI). They are
/// picked at random so that parallel test processes rarely collide.
pub fn free_ports(len: u16) -> u16 {
    const LOW: u64 = 20000;
    const HIGH: u64 = 30000;
    let mut taken = handed_out().lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..2000 {
        let start = (LOW + random_u64() % (HIGH - LOW - u64::from(len))) as u16;
        let ports: Vec<u16> = (start..start + len).collect();
        if ports.iter().all(|p| !taken.contains(p) && port_is_free(*p)) {
            taken.extend(ports);
            return start;
        }
    }
    panic!("no run of {len} free ports on 127.0.0.1 in {LOW}..{HIGH}");
}

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_port() -> u16 {
    free_ports(1)
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Sends `signal` (e.g. "TERM") to one process we started, by its pid.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits up to `limit` for `child` to exit.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// SIGTERM, then SIGKILL if it does not exit within `grace`.
fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child.id(), "TERM");
    if let Some(status) = wait_bounded(child, grace) {
        return Some(status);
    }
    let _ = child.kill();
    wait_bounded(child, Duration::from_secs(5))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------

/// Which database a siptrack under test keeps its state in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in the test's directory.
    Sqlite,
    /// A fresh database on the test process's PostgreSQL (`pg.rs`).
    Postgres,
}

impl Db {
    /// `storage.url` of a fresh, empty database: `sqlite:<dir>/siptrack.db`,
    /// or a new database on the test process's PostgreSQL cluster.
    pub fn fresh_url(self, dir: &Path) -> String {
        match self {
            Db::Sqlite => format!("sqlite:{}", dir.join("siptrack.db").display()),
            Db::Postgres => pg::database(),
        }
    }
}

/// Runs end-to-end tests once per database: for each `fn name(db: Db)`,
/// `on_each_db!(name)` makes the tests `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! on_each_db {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(super::common::Db::Sqlite)
                }
                #[test]
                fn postgres() {
                    super::$name(super::common::Db::Postgres)
                }
            }
        )*
    };
}

// ---------------------------------------------------------------------------
// siptrack
// ---------------------------------------------------------------------------

/// A running `siptrack run` process with its own config and log file.
pub struct Siptrack {
    pub sip_port: u16,
    pub http_port: u16,
    child: Child,
    dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl Siptrack {
    /// `config` is TOML text; the strings "{SIP_PORT}" and "{HTTP_PORT}" are
    /// replaced by free ports chosen here. Spawns
    /// `siptrack run --config <tempdir>/siptrack.toml` with stdout and stderr
    /// in a log file, and waits (at most 10 s) until an OPTIONS over UDP to
    /// 127.0.0.1:SIP_PORT gets a response. Panics with the log if the
    /// process exits or never answers.
    ///
    /// Any response counts as ready: the 200 normally, or the 403 when the
    /// test's `trusted_sources` leaves out 127.0.0.1 on purpose.
    pub fn start(config: &str) -> Siptrack {
        Self::start_with_env(config, &[])
    }

    /// As [`Siptrack::start`], with extra environment variables (e.g.
    /// `RUST_LOG`).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Siptrack {
        let sip_port = free_port();
        let http_port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("siptrack-e2e-")
            .tempdir()
            .expect("create a temporary directory for siptrack");
        let text = config
            .replace("{SIP_PORT}", &sip_port.to_string())
            .replace("{HTTP_PORT}", &http_port.to_string());
        let config_path = dir.path().join("siptrack.toml");
        fs::write(&config_path, &text).expect("write siptrack.toml");
        let log_path = dir.path().join("siptrack.log");
        let log = fs::File::create(&log_path).expect("create siptrack.log");
        let log2 = log.try_clone().expect("clone the log file handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_siptrack"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_siptrack")));
        let mut st = Siptrack {
            sip_port,
            http_port,
            child,
            dir,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = st.child.try_wait() {
                panic!(
                    "siptrack exited during start-up ({status})\n--- config ---\n{text}\n--- log ---\n{}",
                    st.log()
                );
            }
            if let Some(resp) = options_ping(st.sip_addr(), Duration::from_millis(250)) {
                if resp.starts_with("SIP/2.0 ") {
                    return st;
                }
            }
            if Instant::now() >= deadline {
                let log = st.log();
                let _ = st.child.kill();
                let _ = st.child.wait();
                panic!(
                    "siptrack did not answer OPTIONS on udp 127.0.0.1:{sip_port} within 10 s\n--- config ---\n{text}\n--- log ---\n{log}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// 127.0.0.1:SIP_PORT.
    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.sip_port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    /// The temporary directory holding the config and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// 127.0.0.1:HTTP_PORT.
    pub fn api(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// `GET /api/v1/<what>?limit=1000` with the bearer `token`: the list
    /// under the key `<what>` (leads, calls, deals).
    pub fn list(&self, what: &str, token: &str) -> Vec<serde_json::Value> {
        let (status, body) = checks::get(
            self.api(),
            &format!("/api/v1/{what}?limit=1000"),
            Some(token),
        );
        assert_eq!(status, 200, "{what}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        v[what].as_array().cloned().unwrap_or_default()
    }

    /// Polls [`Siptrack::list`] until `n` entries are there (calls are
    /// recorded when they end, asynchronously), at most 15 s; then there
    /// must be exactly `n`.
    pub fn wait_for(&self, what: &str, n: usize, token: &str) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let rows = self.list(what, token);
            if rows.len() >= n || Instant::now() > deadline {
                assert_eq!(rows.len(), n, "{what}: {rows:#?}\n{}", self.log());
                return rows;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `/healthz` polled every 200 ms until it answers other than 200, at
    /// most `within`: its last status and body.
    pub fn healthz_until_failing(&self, within: Duration) -> (u16, String) {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = checks::get(self.api(), "/healthz", None);
            if status != 200 || Instant::now() > deadline {
                return (status, body);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL, at once: a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait up to `grace` (then SIGKILL). Returns the exit
    /// status if the process ended.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        terminate(&mut self.child, grace)
    }
}

impl Drop for Siptrack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- siptrack log (udp/tcp 127.0.0.1:{}) ---\n{}",
                self.sip_port,
                tail(&self.log(), 200)
            );
        }
    }
}

/// Sends one OPTIONS (Request-URI without user part, i.e. to the proxy
/// itself) over UDP from 127.0.0.1 and returns the text of the first
/// response, or None if none arrives within `timeout`.
pub fn options_ping(addr: SocketAddr, timeout: Duration) -> Option<String> {
    let sock = UdpSocket::bind(("127.0.0.1", 0)).ok()?;
    let local = sock.local_addr().ok()?;
    let tag = random_u64();
    let req = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-ping-{tag:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:ping@{local}>;tag={tag:x}\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: ping-{tag:x}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(req.as_bytes(), addr).ok()?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).ok()?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == addr => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                // Skip a provisional response, should one come.
                if text.starts_with("SIP/2.0 1") {
                    continue;
                }
                return Some(text);
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

// ---------------------------------------------------------------------------
// SIPp
// ---------------------------------------------------------------------------

/// The `sipp` executable. Panics (never skips) when it is not installed.
pub fn sipp_bin() -> PathBuf {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SIPP") {
            let p = PathBuf::from(p);
            return p.is_file().then_some(p);
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("sipp"))
                .find(|p| p.is_file())
        })
    })
    .clone()
    .unwrap_or_else(|| match std::env::var_os("SIPP") {
        Some(p) => panic!(
            "SIPP={} is not a file: the end-to-end tests need SIPp",
            p.to_string_lossy()
        ),
        None => panic!(
            "`sipp` is not installed (or not on PATH): the end-to-end tests need it. \
                 Install it with `apt-get install sip-tester`, or set SIPP=/path/to/sipp."
        ),
    })
}

/// Path of a scenario file under tests/sipp/, or an absolute path (a
/// scenario a test filled in from a template).
pub fn scenario(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name);
    assert!(p.is_file(), "SIPp scenario {} not found", p.display());
    p
}

/// A SIPp command line being built; `spawn` starts it in the background,
/// `run` starts it and waits for it.
#[derive(Clone, Debug)]
pub struct Sipp {
    name: String,
    scenario: PathBuf,
    remote: Option<SocketAddr>,
    port: u16,
    transport: &'static str,
    calls: Option<u32>,
    rate: Option<u32>,
    time_limit: Duration,
    args: Vec<String>,
}

impl Sipp {
    fn new(name: &str, scenario_file: &str, remote: Option<SocketAddr>) -> Sipp {
        Sipp {
            name: name.to_string(),
            scenario: scenario(scenario_file),
            remote,
            port: 0,
            transport: "u1",
            calls: None,
            rate: None,
            time_limit: Duration::from_secs(30),
            args: Vec::new(),
        }
    }

    /// A UAC running `tests/sipp/<scenario_file>` against `remote`.
    pub fn uac(scenario_file: &str, remote: SocketAddr) -> Sipp {
        Sipp::new("uac", scenario_file, Some(remote))
    }

    /// A UAS running `tests/sipp/<scenario_file>`.
    pub fn uas(scenario_file: &str) -> Sipp {
        Sipp::new("uas", scenario_file, None)
    }

    /// Name used in messages and file names (default "uac" / "uas").
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Local SIP port (-p). Without it a free port is chosen at spawn.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// One TCP connection for all calls (-t t1) instead of UDP.
    pub fn tcp(mut self) -> Self {
        self.transport = "t1";
        self
    }

    /// Stop after this many calls (-m).
    pub fn calls(mut self, n: u32) -> Self {
        self.calls = Some(n);
        self
    }

    /// Calls per second (-r).
    pub fn rate(mut self, cps: u32) -> Self {
        self.rate = Some(cps);
        self
    }

    /// Drop this percentage of sent and received messages (-lost).
    pub fn lost(self, percent: u32) -> Self {
        self.arg("-lost").arg(percent.to_string())
    }

    /// Default `<pause/>` duration in ms (-d).
    pub fn pause_ms(self, ms: u64) -> Self {
        self.arg("-d").arg(ms.to_string())
    }

    /// Upper bound on the whole run: SIPp's own -timeout, and past it (plus
    /// a few seconds) the process is terminated. Default 30 s.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// Any other SIPp argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn local_port(&self) -> u16 {
        self.port
    }

    /// Starts SIPp in the background (cwd = a fresh temporary directory that
    /// receives its stat, count, message and error files). A UAS is
    /// waited for until its port is bound.
    pub fn spawn(mut self) -> SippProcess {
        let bin = sipp_bin();
        if self.port == 0 {
            self.port = free_port();
        }
        // SIPp binds RTP echo sockets on -mp and -mp+2 and a control socket
        // on -cp; give each instance its own so parallel tests do not clash.
        let media = free_ports(4);
        let control = free_port();
        let dir = tempfile::Builder::new()
            .prefix(&format!("sipp-{}-", self.name))
            .tempdir()
            .expect("create a temporary directory for sipp");
        let d = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
        let limit_s = self.time_limit.as_secs().max(1);
        let mut args: Vec<String> = vec![
            "-sf".into(),
            self.scenario.to_string_lossy().into_owned(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-t".into(),
            self.transport.into(),
            "-mp".into(),
            media.to_string(),
            "-cp".into(),
            control.to_string(),
            "-nostdin".into(),
            "-timeout".into(),
            format!("{limit_s}s"),
            "-timeout_error".into(),
            "-trace_msg".into(),
            "-message_file".into(),
            d("messages.log"),
            "-trace_stat".into(),
            "-stf".into(),
            d("stat.csv"),
            "-fd".into(),
            "1".into(),
            "-trace_counts".into(),
            "-trace_err".into(),
            "-error_file".into(),
            d("errors.log"),
            "-trace_screen".into(),
            "-screen_file".into(),
            d("screen.log"),
            "-s".into(),
            "74950000001".into(),
        ];
        if let Some(m) = self.calls {
            args.push("-m".into());
            args.push(m.to_string());
        }
        if let Some(r) = self.rate {
            args.push("-r".into());
            args.push(r.to_string());
        }
        args.extend(self.args.iter().cloned());
        if let Some(remote) = self.remote {
            args.push(remote.to_string());
        }
        let stdout = fs::File::create(dir.path().join("stdout.log")).expect("create stdout.log");
        let stderr = stdout.try_clone().expect("clone the stdout.log handle");
        let cmdline = format!("{} {}", bin.display(), args.join(" "));
        let child = Command::new(&bin)
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut p = SippProcess {
            name: self.name.clone(),
            port: self.port,
            child: Some(child),
            dir: Some(dir),
            started: Instant::now(),
            limit: self.time_limit,
            cmdline,
        };
        if self.remote.is_none() {
            p.wait_bound(self.transport == "t1");
        }
        p
    }

    /// Spawns SIPp and waits for it to finish (bounded by the time limit).
    pub fn run(self) -> SippRun {
        self.spawn().wait()
    }
}

/// Whether a socket is bound to 127.0.0.1:`port` (UDP) or listens there
/// (TCP), from the kernel's table. It used to be probed by binding the
/// port: a probe that held it at the instant SIPp bound made SIPp exit
/// with "Address already in use" (a CI run failed so).
fn is_listening(port: u16, tcp: bool) -> bool {
    let table = if tcp {
        "/proc/net/tcp"
    } else {
        "/proc/net/udp"
    };
    let local = format!("0100007F:{port:04X}");
    fs::read_to_string(table).is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let mut f = l.split_whitespace().skip(1);
            let (addr, state) = (f.next(), f.nth(1));
            // 0A: TCP_LISTEN; a bound UDP socket is 07 (TCP_CLOSE).
            addr == Some(&local) && (!tcp || state == Some("0A"))
        })
    })
}

/// A SIPp process started by [`Sipp::spawn`]; killed when dropped.
pub struct SippProcess {
    name: String,
    port: u16,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    started: Instant,
    limit: Duration,
    cmdline: String,
}

impl SippProcess {
    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("sipp directory present").path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits until SIPp has bound its SIP port (it listens as soon as it
    /// has parsed the scenario).
    fn wait_bound(&mut self, tcp: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if is_listening(self.port, tcp) {
                return;
            }
            let child = self.child.as_mut().expect("sipp child present");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} (sipp) exited at start-up ({status})\n{}\n{}",
                    self.name,
                    self.cmdline,
                    self.read("stdout.log")
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} (sipp) did not bind 127.0.0.1:{} within 10 s\n{}\n{}",
                    self.name,
                    self.port,
                    self.cmdline,
                    self.read("stdout.log")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The messages SIPp traced so far (while it runs).
    pub fn messages(&self) -> Vec<SipTrace> {
        parse_message_log(&self.read("messages.log"))
    }

    fn read(&self, file: &str) -> String {
        fs::read(self.dir().join(file))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits for SIPp to exit by itself, at most its time limit plus 5 s;
    /// past that it is terminated (`SippRun::timed_out`).
    pub fn wait(mut self) -> SippRun {
        let left = (self.started + self.limit + Duration::from_secs(5))
            .saturating_duration_since(Instant::now());
        let child = self.child.as_mut().expect("sipp child present");
        let (status, timed_out) = match wait_bounded(child, left) {
            Some(s) => (Some(s), false),
            None => (terminate(child, Duration::from_secs(3)), true),
        };
        self.collect(status, timed_out)
    }

    /// Waits at most `max` (and never past the time limit) for SIPp to exit
    /// by itself, then terminates it (`SippRun::timed_out`). For a UAS once
    /// the UAC is done: it should finish its last calls shortly.
    pub fn wait_at_most(mut self, max: Duration) -> SippRun {
        let limit_left = (self.started + self.limit + Duration::from_secs(5))
            .saturating_duration_since(Instant::now());
        let child = self.child.as_mut().expect("sipp child present");
        let (status, timed_out) = match wait_bounded(child, max.min(limit_left)) {
            Some(s) => (Some(s), false),
            None => (terminate(child, Duration::from_secs(3)), true),
        };
        self.collect(status, timed_out)
    }

    /// Ends SIPp now (SIGTERM, SIGKILL after 3 s) and collects what it
    /// logged. For a UAS whose calls are not all expected to come.
    pub fn stop(mut self) -> SippRun {
        let child = self.child.as_mut().expect("sipp child present");
        let status = terminate(child, Duration::from_secs(3));
        self.collect(status, false)
    }

    fn collect(mut self, status: Option<ExitStatus>, timed_out: bool) -> SippRun {
        self.child = None;
        let stat_text = self.read("stat.csv");
        let stats = last_csv_row(&stat_text);
        let counts_text = fs::read_dir(self.dir())
            .ok()
            .and_then(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.to_string_lossy().ends_with("_counts.csv"))
            })
            .and_then(|p| fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let counts = last_csv_row(&counts_text)
            .into_iter()
            .filter_map(|(k, v)| v.trim().parse::<u64>().ok().map(|n| (k, n)))
            .collect();
        let messages = parse_message_log(&self.read("messages.log"));
        let stdout = self.read("stdout.log");
        let errors = self.read("errors.log");
        // SIPTRACK_E2E_KEEP=1 keeps SIPp's files for a look after the test.
        let dir = self.dir.take().expect("sipp directory present");
        let kept = std::env::var_os("SIPTRACK_E2E_KEEP").map(|_| dir.keep());
        SippRun {
            kept_dir: kept,
            name: self.name.clone(),
            cmdline: self.cmdline.clone(),
            exit_code: status.and_then(|s| s.code()),
            timed_out,
            elapsed: self.started.elapsed(),
            stats,
            counts,
            messages,
            stdout,
            errors,
        }
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Header and last data row of a SIPp CSV file (';'-separated).
fn last_csv_row(text: &str) -> BTreeMap<String, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return BTreeMap::new();
    };
    let Some(last) = lines.next_back() else {
        return BTreeMap::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Direction of a traced message, seen from the SIPp instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Sent,
    Received,
}

/// One SIP message from a SIPp `-trace_msg` log.
#[derive(Clone, Debug)]
pub struct SipTrace {
    pub dir: Dir,
    /// "UDP" or "TCP".
    pub transport: String,
    /// Seconds since midnight of the log's timestamp.
    pub time: f64,
    /// SIPp dropped it on purpose (-lost).
    pub lost: bool,
    /// The message, lines joined with "\n" (CRs removed).
    pub text: String,
}

/// Full header name for a compact form (RFC 3261 7.3.3).
fn long_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "v" => "via",
        "i" => "call-id",
        "f" => "from",
        "t" => "to",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "e" => "content-encoding",
        "k" => "supported",
        "s" => "subject",
        "o" => "event",
        "r" => "refer-to",
        "u" => "allow-events",
        _ => return n,
    }
    .to_string()
}

/// Splits a header value at commas that are outside quotes and <...>.
pub fn split_header_values(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut angle) = (false, false);
    let mut escaped = false;
    for ch in value.chars() {
        if quoted {
            cur.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                quoted = false;
            }
            continue;
        }
        match ch {
            '"' => quoted = true,
            '<' => angle = true,
            '>' => angle = false,
            ',' if !angle => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

impl SipTrace {
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        let l = self.first_line();
        if l.starts_with("SIP/2.0") {
            None
        } else {
            l.split_whitespace().next()
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let l = self.first_line();
        l.strip_prefix("SIP/2.0 ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|c| c.parse().ok())
    }

    pub fn is_request(&self, method: &str) -> bool {
        self.method() == Some(method)
    }

    pub fn is_response(&self, status: u16) -> bool {
        self.status() == Some(status)
    }

    /// Header lines as (lowercase long name, raw value), unfolded, in order.
    pub fn header_lines(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in self.text.lines().skip(1) {
            if line.is_empty() {
                break;
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = out.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((n, v)) = line.split_once(':') {
                out.push((long_name(n), v.trim().to_string()));
            }
        }
        out
    }

    /// Raw values of every header line called `name` (compact forms
    /// included), in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let want = long_name(name);
        self.header_lines()
            .into_iter()
            .filter(|(n, _)| *n == want)
            .map(|(_, v)| v)
            .collect()
    }

    /// Values of header `name`, comma-separated values split apart (so two
    /// Via lines and one "Via: a, b" line both give two values).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers(name)
            .iter()
            .flat_map(|v| split_header_values(v))
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }

    pub fn call_id(&self) -> Option<String> {
        self.headers("call-id").into_iter().next()
    }

    /// The method named in CSeq.
    pub fn cseq_method(&self) -> Option<String> {
        self.headers("cseq")
            .into_iter()
            .next()
            .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
    }

    /// The top Via value.
    pub fn top_via(&self) -> Option<String> {
        self.header("via")
    }

    /// `branch` parameter of the top Via.
    pub fn top_branch(&self) -> Option<String> {
        self.top_via().and_then(|v| via_param(&v, "branch"))
    }
}

/// A parameter of a Via value, e.g. `branch`.
pub fn via_param(via: &str, name: &str) -> Option<String> {
    via.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// "SIP/2.0/UDP 127.0.0.1:5060;branch=..." -> ("UDP", "127.0.0.1:5060").
pub fn via_sent_by(via: &str) -> Option<(String, String)> {
    let head = via.split(';').next()?.trim();
    let (proto, host) = head.split_once(char::is_whitespace)?;
    let transport = proto.rsplit('/').next()?.to_ascii_uppercase();
    Some((transport, host.trim().to_string()))
}

fn parse_time(stamp: &str) -> f64 {
    // "2026-11-22 14:16:36.764463"
    let t = stamp.split_whitespace().nth(1).unwrap_or("");
    let mut parts = t.split(':');
    let h: f64 = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let m: f64 = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let s: f64 = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
    h * 3600.0 + m * 60.0 + s
}

/// Parses a SIPp `-trace_msg` log.
///
/// Each entry is a line of 47 dashes and a timestamp, a line
/// "UDP message received [N] bytes :" or "UDP message sent (N bytes):", an
/// empty line and the message. SIPp appends notes such as
/// "UDP message lost (recv)." without a newline right before the next
/// separator; they mark the entry before as dropped by -lost.
pub fn parse_message_log(log: &str) -> Vec<SipTrace> {
    const SEP: &str = "----------------------------------------------- ";
    let mut out: Vec<SipTrace> = Vec::new();
    for chunk in log.split(SEP).skip(1) {
        let chunk = chunk.replace('\r', "");
        let mut lines = chunk.split('\n');
        let stamp = lines.next().unwrap_or("");
        let what = lines.next().unwrap_or("");
        let dir = if what.contains("message received") {
            Dir::Received
        } else if what.contains("message sent") {
            Dir::Sent
        } else {
            continue;
        };
        let transport = what.split_whitespace().next().unwrap_or("").to_string();
        let rest: Vec<&str> = lines.collect();
        // rest[0] is the empty line after the description.
        let mut body: Vec<&str> = rest.iter().skip(1).copied().collect();
        let mut lost = false;
        if let Some(last) = body.last() {
            if last.contains(" message ") && last.contains("lost") {
                // Several notes may be glued together; the first one is
                // about this entry.
                let first = last.trim_start().split('.').next().unwrap_or("");
                lost = match dir {
                    Dir::Received => first.ends_with("lost (recv)"),
                    Dir::Sent => first.ends_with("lost (while sending)"),
                };
                body.pop();
            }
        }
        while body.last().is_some_and(|l| l.trim().is_empty()) {
            body.pop();
        }
        if body.is_empty() {
            continue;
        }
        out.push(SipTrace {
            dir,
            transport,
            time: parse_time(stamp),
            lost,
            text: body.join("\n"),
        });
    }
    out
}

/// What one SIPp run left behind.
#[derive(Debug)]
pub struct SippRun {
    /// Where SIPp's files were left (with SIPTRACK_E2E_KEEP set).
    pub kept_dir: Option<PathBuf>,
    pub name: String,
    pub cmdline: String,
    /// None when killed by a signal.
    pub exit_code: Option<i32>,
    /// It had to be terminated after its time limit.
    pub timed_out: bool,
    pub elapsed: Duration,
    /// Last row of the -trace_stat file: "SuccessfulCall(C)" -> "100", ...
    pub stats: BTreeMap<String, String>,
    /// Last row of the -trace_counts file: "4_200_Recv" -> 100, ...
    pub counts: BTreeMap<String, u64>,
    /// The -trace_msg log, in order.
    pub messages: Vec<SipTrace>,
    /// SIPp's screen output (final statistics screens).
    pub stdout: String,
    /// The -trace_err log (unexpected messages, aborted calls).
    pub errors: String,
}

impl SippRun {
    /// A cumulative counter from the stat file, e.g. "SuccessfulCall".
    pub fn stat(&self, name: &str) -> u64 {
        self.stats
            .get(&format!("{name}(C)"))
            .or_else(|| self.stats.get(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn successful(&self) -> u64 {
        self.stat("SuccessfulCall")
    }

    pub fn failed(&self) -> u64 {
        self.stat("FailedCall")
    }

    /// Calls created (outgoing for a UAC, incoming for a UAS).
    pub fn created(&self) -> u64 {
        self.stat("TotalCallCreated")
    }

    pub fn retransmissions(&self) -> u64 {
        self.stat("Retransmissions")
    }

    /// Sum over the scenario's lines for `message` ("INVITE", "200", ...)
    /// of the count `kind` ("Sent", "Recv", "Retrans", "Timeout", "Unexp",
    /// "Lost").
    pub fn count(&self, message: &str, kind: &str) -> u64 {
        let suffix = format!("_{message}_{kind}");
        self.counts
            .iter()
            .filter(|(k, _)| {
                k.ends_with(&suffix)
                    && k[..k.len() - suffix.len()]
                        .chars()
                        .all(|c| c.is_ascii_digit())
            })
            .map(|(_, v)| *v)
            .sum()
    }

    pub fn received(&self) -> impl Iterator<Item = &SipTrace> {
        self.messages.iter().filter(|m| m.dir == Dir::Received)
    }

    pub fn sent(&self) -> impl Iterator<Item = &SipTrace> {
        self.messages.iter().filter(|m| m.dir == Dir::Sent)
    }

    /// Received requests with this method.
    pub fn received_requests(&self, method: &str) -> Vec<&SipTrace> {
        self.received().filter(|m| m.is_request(method)).collect()
    }

    /// Received responses with this status.
    pub fn received_responses(&self, status: u16) -> Vec<&SipTrace> {
        self.received().filter(|m| m.is_response(status)).collect()
    }

    /// Sent requests with this method.
    pub fn sent_requests(&self, method: &str) -> Vec<&SipTrace> {
        self.sent().filter(|m| m.is_request(method)).collect()
    }

    /// Distinct Call-IDs among `msgs`.
    pub fn call_ids<'a>(msgs: impl IntoIterator<Item = &'a SipTrace>) -> HashSet<String> {
        msgs.into_iter().filter_map(|m| m.call_id()).collect()
    }

    /// A description for assertion messages: command, exit, counters, the
    /// end of the screen output and of the error log.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "--- {} --- exit {:?}{} after {:.1} s: {} successful, {} failed, {} created, {} retransmissions, {} messages traced",
            self.name,
            self.exit_code,
            if self.timed_out { " (TIMED OUT, terminated)" } else { "" },
            self.elapsed.as_secs_f64(),
            self.successful(),
            self.failed(),
            self.created(),
            self.retransmissions(),
            self.messages.len(),
        );
        let _ = writeln!(s, "{}", self.cmdline);
        if let Some(d) = &self.kept_dir {
            let _ = writeln!(s, "files kept in {}", d.display());
        }
        let screen = self
            .stdout
            .rfind("------------------------------ Scenario Screen")
            .map(|i| &self.stdout[i..])
            .unwrap_or(&self.stdout);
        let _ = writeln!(s, "{}", tail(screen, 40));
        if !self.errors.trim().is_empty() {
            let _ = writeln!(
                s,
                "--- {} errors (end) ---\n{}",
                self.name,
                tail(&self.errors, 40)
            );
        }
        s
    }
}
