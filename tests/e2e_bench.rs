//! The measuring tools of issue 15, run for real: the SIPp harness
//! (`bench/sipbench`) with `--cores` through a siptrack process, the
//! soak's and the side-by-side run's rules, and siptrack's wake-ups when
//! it has nothing to do.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, free_ports, Siptrack};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `cmd` to its end, at most `limit` (the tools bound themselves;
/// this only keeps a hung tool from hanging the suite). Returns stdout.
fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("a temp dir for the output");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create the stdout file"))
        .stderr(std::fs::File::create(&err).expect("create the stderr file"))
        .spawn()
        .expect("start python3 (scripts/test installs it)");
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait for the tool") {
            Some(s) => break Some(s),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status.is_some_and(|s| s.success()), read(&out), read(&err))
}

/// "0-2+5" (the harness's core lists) -> {0, 1, 2, 5}.
fn cores(text: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for part in text.split('+').filter(|p| !p.is_empty() && *p != "-") {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().expect("core"), b.parse().expect("core"));
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().expect("core"));
            }
        }
    }
    out
}

#[test]
fn the_harness_pins_the_proxy_and_sipp_to_cores_of_their_own() {
    let base = free_ports(3);
    let (proxy_port, uac_port, uas_port) = (base, base + 1, base + 2);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{proxy_port}"]
trusted_sources = ["127.0.0.0/8"]
[tracking]
default_destination = "sip:127.0.0.1:{uas_port}"
record_calls = false
[http]
listen = "127.0.0.1:{http}"
[shutdown]
drain_seconds = 0
[storage]
url = "sqlite:{db}"
"#,
        http = free_port(),
        db = dir.path().join("siptrack.db").display(),
    );
    let config_path = dir.path().join("siptrack.toml");
    std::fs::write(&config_path, config).expect("write the config");
    let proxy = format!(
        "siptrack={} run --config {}",
        env!("CARGO_BIN_EXE_siptrack"),
        config_path.display()
    );
    let (ok, out, err) = run_bounded(
        Command::new("python3")
            .arg(Path::new(ROOT).join("bench/sipbench/sipbench.py"))
            .args(["run", "--cores", "1", "--rate", "20", "--secs", "2"])
            .args(["--hold-ms", "200", "--cooldown", "0"])
            .args(["--proxy-port", &proxy_port.to_string()])
            .args(["--uac-port", &uac_port.to_string()])
            .args(["--uas-port", &uas_port.to_string()])
            .arg("--proxy")
            .arg(&proxy)
            .arg("--outdir")
            .arg(dir.path().join("bench")),
        Duration::from_secs(120),
    );
    assert!(
        ok,
        "sipbench failed\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("proxy=siptrack "))
        .unwrap_or_else(|| panic!("no result line\n{out}\n{err}"));
    let kv: std::collections::HashMap<&str, &str> =
        line.split(' ').filter_map(|p| p.split_once('=')).collect();
    let get = |k: &str| *kv.get(k).unwrap_or_else(|| panic!("{k} missing in {line}"));
    assert_eq!(get("failed"), "0", "{line}");
    assert_eq!(get("ok"), "40", "{line}");
    // The proxy on its core, both SIPp processes on the others; each side
    // read back from /proc, and the proxy's threads seen only on its own.
    let (proxy, uac, uas) = (
        cores(get("proxy_cores")),
        cores(get("uac_cores")),
        cores(get("uas_cores")),
    );
    assert_eq!(proxy.len(), 1, "{line}");
    assert!(!uac.is_empty() && uac == uas, "{line}");
    assert!(proxy.is_disjoint(&uac), "{line}");
    assert!(cores(get("proxy_ran_on")).is_subset(&proxy), "{line}");
    assert!(cores(get("uac_ran_on")).is_subset(&uac), "{line}");
    // Each side's CPU is measured, per call.
    for k in ["proxy_cpu_us_per_call", "sipp_cpu_us_per_call"] {
        let v: f64 = get(k).parse().unwrap_or_else(|_| panic!("{k} in {line}"));
        assert!(v > 0.0, "{k} in {line}");
    }
}

/// `scripts/<name> --self-test` passes: the script's table tests of its
/// own rules.
fn assert_self_test_passes(name: &str) {
    let (ok, out, err) = run_bounded(
        Command::new("python3")
            .arg(Path::new(ROOT).join("scripts").join(name))
            .arg("--self-test"),
        Duration::from_secs(30),
    );
    let passed = format!("{name} self-test ok");
    assert!(ok && out.contains(&passed), "{out}\n{err}");
}

#[test]
fn the_soak_rules_hold() {
    assert_self_test_passes("soak");
}

/// The side-by-side script's verdicts (issue 15's targets, pairs where
/// Kamailio failed calls left out) hold on their table.
#[test]
fn the_side_by_side_rules_hold() {
    assert_self_test_passes("side-by-side");
}

/// A `--binary` that names nothing stops side-by-side at once, with the
/// path it tried made absolute. sipbench starts the proxies from its own
/// folder, so a relative path used to start nothing there, and the run
/// went on for minutes to a table of "not measured" and exit code 0.
#[test]
fn side_by_side_stops_at_once_on_a_binary_that_is_not_there() {
    let outdir = tempfile::tempdir().expect("a temp dir for the results");
    let started = Instant::now();
    let (ok, out, err) = run_bounded(
        Command::new("python3")
            .current_dir(ROOT)
            .arg("scripts/side-by-side")
            .args(["--no-build", "--binary", "target/no-such-siptrack"])
            .arg("--outdir")
            .arg(outdir.path()),
        Duration::from_secs(30),
    );
    let absolute = Path::new(ROOT).join("target").join("no-such-siptrack");
    assert!(!ok, "{out}\n{err}");
    assert!(
        err.contains(&format!("{} does not exist", absolute.display())),
        "{out}\n{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it ran a benchmark first"
    );
    assert!(
        std::fs::read_dir(outdir.path()).map_or(0, |d| d.count()) == 0,
        "no sipbench run may start"
    );
}

/// Per thread of `pid`: (name, on-CPU ns, context switches), from /proc.
fn threads(pid: u32) -> std::collections::HashMap<u32, (String, u64, u64)> {
    let mut out = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
        let ns = read("schedstat")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let switches = read("status")
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        out.insert(tid, (read("comm").trim().to_string(), ns, switches));
    }
    out
}

/// Issue 15: no busy work when idle. The media relay slept 250 ms at a
/// time and spun through `epoll_wait(0)` for the last millisecond of each
/// (7,000 calls a second, 0.25 % of a core); now, with no call, it sleeps
/// until a command comes. The whole process wakes about twice a second
/// (the SIP loop's metrics tick).
#[test]
fn an_idle_siptrack_hardly_wakes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let media = free_ports(4);
    let st = Siptrack::start(&format!(
        r#"[storage]
url = "sqlite:{dir}/siptrack.db"
[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
[tracking]
default_destination = "sip:127.0.0.1:9"
record_calls = true
[media]
port_min = {media}
port_max = {max}
advertised_ip = "127.0.0.1"
recordings_dir = "{dir}/recordings"
[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
"#,
        dir = dir.path().display(),
        max = media + 3,
    ));
    std::thread::sleep(Duration::from_secs(2)); // start-up done
    let (t0, before) = (Instant::now(), threads(st.pid()));
    std::thread::sleep(Duration::from_secs(6));
    let (secs, after) = (t0.elapsed().as_secs_f64(), threads(st.pid()));
    let mut total = 0.0;
    let mut report = String::new();
    for (tid, (name, ns, switches)) in &after {
        let (_, ns0, sw0) = before.get(tid).cloned().unwrap_or_default();
        let (wakeups, cpu_us) = (
            (switches - sw0) as f64 / secs,
            (ns - ns0) as f64 / 1e3 / secs,
        );
        total += wakeups;
        report += &format!("{name}: {wakeups:.1} wake-ups/s, {cpu_us:.0} µs/s\n");
        if name == "media-relay" {
            assert!(wakeups < 0.5 && cpu_us < 100.0, "{report}");
        }
    }
    assert!(report.contains("media-relay"), "no relay thread?\n{report}");
    assert!(total < 4.0, "{report}");
}
