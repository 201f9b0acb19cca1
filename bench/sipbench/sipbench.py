#!/usr/bin/env python3
# Copied from ../shared/tools/sipbench/sipbench.py (2026-11-29), extended here: --cores, per-process CPU.
"""sipbench: SIPp-driven SIP proxy benchmark. Loopback (127.0.0.1) only.

    UAC (sipp, :5061) --> proxy under test (:5060/udp) --> UAS (sipp, :5070)

Every run is bounded in call count and wall time and stops by itself.
Processes are only ever stopped by the PID (or the process group) this
script created.

  sipbench.py run     [--proxy NAME=CMD ...] [--baseline] --rate R [--secs S] [--pcap]
  sipbench.py findmax [--proxy NAME=CMD ...] [--baseline] [--ladder 200,500,...] [--repeat K]

--cores N pins the proxy under test to the last N cores and both SIPp
processes to the others (taskset), so the load generator cannot take the
proxy's CPU; every result line says which cores each side was allowed.

Without --proxy the UAC talks straight to the UAS (harness ceiling); with
several --proxy the proxies are measured one after another, interleaved per
repeat, in the same invocation.
One key=value summary line per step is printed and appended to
<outdir>/results.txt.
"""
import argparse
import glob
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
UAC_XML = os.path.join(HERE, "scenarios", "uac.xml")
UAS_XML = os.path.join(HERE, "scenarios", "uas.xml")
HOST = "127.0.0.1"
LADDER = "200,500,1000,1500,2000,2500,3000,4000,5000,6000,8000,10000,12000,15000,20000"
# capture only INVITEs and "SIP/2.0 200 " replies (6 packets a call) to keep dumpcap cheap
PCAP_FILTER = ("(udp port %d or udp port %d) and (udp[8:4]=0x494e5649 or "
               "(udp[8:4]=0x5349502f and udp[12:4]=0x322e3020 and udp[16:4]=0x32303020))")
SOCK_BUF = "4194304"  # sipp -buff_size; net.core.rmem_max is 4 MiB here


# ---------------------------------------------------------------- processes
def udp_bound(port):
    """True if something has a UDP socket bound to 127.0.0.1:port (or any)."""
    want = ":%04X" % port
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    if line.split()[1].endswith(want):
                        return True
        except OSError:
            pass
    return False


def wait_until(pred, timeout, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def pinned(cmd, cpus):
    """cmd run by taskset on the cores `cpus` (a list), or as it is without."""
    if not cpus:
        return cmd
    return ["taskset", "-c", ",".join(map(str, cpus))] + cmd


def spawn(cmd, cwd, logname, cpus=None):
    log = open(os.path.join(cwd, logname), "w")
    return subprocess.Popen(pinned(cmd, cpus), cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def split_cores(n, available):
    """(proxy cores, SIPp cores) for --cores n: the proxy gets the last n of
    the cores this process may use, SIPp the rest; n=0 pins nothing."""
    cores = sorted(available)
    if n == 0:
        return [], []
    if n < 0 or n >= len(cores):
        sys.exit("--cores %d: this machine offers cores %s; the proxy needs at least one and "
                 "SIPp at least one of its own" % (n, ",".join(map(str, cores))))
    return cores[-n:], cores[:-n]


def wait_rusage(p, timeout, on_tick=None):
    """Wait for child p up to timeout s; returns (rc or None, cpu seconds).
    on_tick() is called about every 50 ms while waiting."""
    end = time.time() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru.ru_utime + ru.ru_stime
        if time.time() > end:
            return None, 0.0
        if on_tick:
            on_tick()
        time.sleep(0.05)


def stop(p, sig=signal.SIGTERM, grace=5.0):
    """Signal our own child p, then its process group if it lingers."""
    if p.returncode is not None:
        return p.returncode, 0.0
    try:
        os.kill(p.pid, sig)
    except ProcessLookupError:
        pass
    rc, cpu = wait_rusage(p, grace)
    if rc is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # group created by spawn()
        except ProcessLookupError:
            pass
        rc, cpu = wait_rusage(p, 5)
    return rc, cpu


def group_pids(pgid):
    pids = []
    for d in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 (pgrp) overall
                pids.append(int(d.split("/")[2]))
        except (OSError, IndexError, ValueError):
            pass
    return pids


def proc_cpu(pid):
    """utime+stime (s) of one live process (all its threads), from /proc."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def group_cpu(pgid):
    """utime+stime (s) of live processes in process group pgid."""
    return sum(proc_cpu(pid) for pid in group_pids(pgid))


def cores_of(pids):
    """(cores the processes may run on, cores their threads last ran on), each
    as "0-1" style text, read from /proc: proof that a pin took effect."""
    allowed, ran = set(), set()
    for pid in pids:
        for task in glob.glob("/proc/%d/task/[0-9]*" % pid):
            try:
                with open(task + "/status") as f:
                    for line in f:
                        if line.startswith("Cpus_allowed_list:"):
                            allowed.update(expand_cpus(line.split(":", 1)[1].strip()))
                with open(task + "/stat") as f:
                    ran.add(int(f.read().rsplit(")", 1)[1].split()[36]))  # field 39: processor
            except (OSError, IndexError, ValueError):
                pass
    return compact_cpus(allowed), compact_cpus(ran)


def expand_cpus(text):
    """"0-2,5" -> [0, 1, 2, 5]"""
    out = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def compact_cpus(cpus):
    """{0, 1, 2, 5} -> "0-2+5" (no commas: result lines are split on spaces and
    commas by readers); "-" when empty."""
    runs, out = [], []
    for c in sorted(cpus):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    for a, b in runs:
        out.append(str(a) if a == b else "%d-%d" % (a, b))
    return "+".join(out) or "-"


def group_mem(pgid):
    """(nprocs, sum RSS kB, sum PSS kB) of process group pgid."""
    n = rss = pss = 0
    for pid in group_pids(pgid):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    k, v = line.split(":", 1)
                    if k == "Rss":
                        rss += int(v.split()[0])
                    elif k == "Pss":
                        pss += int(v.split()[0])
            n += 1
        except OSError:
            pass
    return n, rss, pss


class Proxy:
    def __init__(self, cmd, port, outdir, cpus=None):
        self.cmd, self.port, self.outdir, self.cpus = cmd, port, outdir, cpus
        self.p = None

    def start(self):
        if udp_bound(self.port):
            sys.exit("port %d already bound; stop whatever holds it" % self.port)
        self.p = spawn(shlex.split(self.cmd), self.outdir, "proxy.log", self.cpus)
        if not wait_until(lambda: udp_bound(self.port) or self.p.poll() is not None, 20):
            self.stop()
            sys.exit("proxy did not bind udp %d in 20 s (see %s/proxy.log)" % (self.port, self.outdir))
        if self.p.poll() is not None:
            sys.exit("proxy exited rc=%s (see %s/proxy.log)" % (self.p.returncode, self.outdir))
        time.sleep(1.0)  # let all workers come up

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def cpu(self):
        return group_cpu(self.p.pid) if self.p else 0.0

    def mem(self):
        return group_mem(self.p.pid) if self.p else (0, 0, 0)

    def cores(self):
        return cores_of(group_pids(self.p.pid)) if self.p else ("-", "-")

    def stop(self):
        if self.p:
            stop(self.p, signal.SIGTERM, 10)
            try:
                os.killpg(self.p.pid, signal.SIGKILL)  # leftover workers of our group
            except ProcessLookupError:
                pass
            self.p = None


def udp_drops(port):
    """(kernel-wide UDP RcvbufErrors, drops on the socket bound to port)."""
    glob_err = sock = 0
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Udp:")]
    if len(rows) >= 2:
        glob_err = int(dict(zip(rows[0], rows[1])).get("RcvbufErrors", 0))
    want = ":%04X" % port
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            p = line.split()
            if p[1].endswith(want):
                sock += int(p[-1])
    return glob_err, sock


# ---------------------------------------------------------------- parsing
def last_stat(stepdir, prefix):
    files = glob.glob(os.path.join(stepdir, prefix + "_*_.csv"))
    if not files:
        return {}
    with open(files[0]) as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";")))


def unexpected_msgs(stepdir):
    """Sum of SIPp's Unexpected-Msg column (recv rows and Pause rows) on the final
    UAC screen: mostly late 180s that a multi-worker proxy reordered after the 200."""
    try:
        text = open(os.path.join(stepdir, "uac.screen"), errors="replace").read()
    except OSError:
        return -1
    block = text.split("Messages  Retrans")[-1].split("------------------------------")[0]
    n = 0
    for line in block.splitlines():
        nums = [int(x) for x in line.split("]")[-1].split() if x.isdigit()]
        if ("<----------" in line and len(nums) == 4) or ("Pause" in line and len(nums) == 2):
            n += nums[-1]
    return n


def read_rtt(stepdir):
    """[(t_ms, rtt_ms)] for rtd 1 (INVITE -> 200) from -trace_rtt."""
    out = []
    for fn in glob.glob(os.path.join(stepdir, "uac_*_rtt.csv")):
        with open(fn) as f:
            next(f, None)
            for line in f:
                p = line.strip().split(";")
                if len(p) == 3 and p[2] == "1":
                    out.append((float(p[0]), float(p[1])))
    return out


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


_CID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.I)
_CSEQ = re.compile(rb"\r\nCSeq[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)", re.I)


def sip_packets(path):
    """Yield (t, sport, dport, payload) from a classic pcap (dumpcap -P) of lo/Ethernet."""
    with open(path, "rb") as f:
        gh = f.read(24)
        magic = gh[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            end = "<"
        else:
            end = ">"
        nsec = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        link = struct.unpack(end + "I", gh[20:24])[0]
        l2 = 14 if link == 1 else (16 if link == 113 else 0)
        div = 1e9 if nsec else 1e6
        rh = struct.Struct(end + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, _ = rh.unpack(h)
            pkt = f.read(incl)
            ip = pkt[l2:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            udp = ip[(ip[0] & 15) * 4:]
            sport, dport = struct.unpack(">HH", udp[:4])
            yield sec + frac / div, sport, dport, udp[8:]


def first_times(path, uac_port, uas_port):
    first = {}
    for t, sp, dp, pl in sip_packets(path):
        if pl.startswith(b"INVITE "):
            what = "inv"
        elif pl.startswith(b"SIP/2.0 200"):
            m = _CSEQ.search(pl)
            if not m or m.group(1).upper() != b"INVITE":
                continue
            what = "ok"
        else:
            continue
        m = _CID.search(pl)
        if not m:
            continue
        cid = m.group(1).strip()
        for leg, port in (("uac", uac_port), ("uas", uas_port)):
            if port in (sp, dp):
                first.setdefault((leg, what, cid), t)
    return first


def wire_latency_us(pcap, uac_port, uas_port):
    """From a capture of both legs: per Call-ID INVITE -> 200(INVITE) as seen on
    the UAC leg (end to end) and the part of it spent between the two legs
    (= proxy added: INVITE in->out plus 200 in->out). Microseconds."""
    first = first_times(pcap, uac_port, uas_port)
    e2e, added = [], []
    for (leg, what, cid), t_inv in first.items():
        if leg != "uac" or what != "inv" or ("uac", "ok", cid) not in first:
            continue
        d_uac = first[("uac", "ok", cid)] - t_inv
        e2e.append(d_uac * 1e6)
        if ("uas", "inv", cid) in first and ("uas", "ok", cid) in first:
            d_uas = first[("uas", "ok", cid)] - first[("uas", "inv", cid)]
            added.append((d_uac - d_uas) * 1e6)
    return sorted(e2e), sorted(added)


# ---------------------------------------------------------------- one step
def run_step(a, name, rate, calls, outdir, proxy=None, on_tick=None):
    stepdir = os.path.join(outdir, "%s_r%d_%d" % (name, rate, int(time.time())))
    os.makedirs(stepdir)
    hold_s = a.hold_ms / 1000.0
    limit = int(rate * (hold_s + 12)) + 100           # never throttle on -l
    tmax = calls / rate + hold_s + 25                 # hard bound for the UAC
    common = ["-i", HOST, "-nostdin", "-buff_size", SOCK_BUF,
              "-trace_stat", "-fd", "1", "-recv_timeout", "10000"]

    uas = spawn(["sipp", "-sf", UAS_XML, "-p", str(a.uas_port),
                 "-timeout", "%ds" % int(tmax + 40)] + common,   # ends itself if we die
                stepdir, "uas.screen", a.sipp_cpus)
    if not wait_until(lambda: udp_bound(a.uas_port), 10):
        stop(uas)
        sys.exit("UAS did not bind %d" % a.uas_port)

    target = a.proxy_port if proxy else a.uas_port
    cap = None
    if a.pcap:
        cap = spawn(["dumpcap", "-q", "-P", "-i", "lo", "-f", PCAP_FILTER % (a.uac_port, a.uas_port),
                     "-w", os.path.join(stepdir, "uac.pcap"),
                     "-a", "duration:%d" % int(tmax + 5)], stepdir, "dumpcap.log")
        time.sleep(1.0)

    drops0 = udp_drops(target)
    pcpu0 = proxy.cpu() if proxy else 0.0
    idle_mem = proxy.mem() if proxy else (0, 0, 0)
    uas_cpu0 = proc_cpu(uas.pid)
    t0 = time.time()
    # -trace_rtt writes a line per call: off for long runs (--no-rtt), where
    # the achieved rate comes from SIPp's own counters instead
    rtt = [] if a.no_rtt else ["-trace_rtt", "-rtt_freq", "1"]
    uac = spawn(["sipp", "%s:%d" % (HOST, target), "-sf", UAC_XML, "-s", a.service,
                 "-p", str(a.uac_port), "-r", str(rate), "-m", str(calls),
                 "-d", str(a.hold_ms), "-l", str(limit), "-timeout", "%ds" % int(tmax)]
                + rtt + ["-default_behaviors", "all,-abortunexp"] + common,
                stepdir, "uac.screen", a.sipp_cpus)
    seen = {}

    def watch():
        # where each side runs, read while both are alive; the caller's hook
        if "uac" not in seen and time.time() - t0 > 1.0:
            seen["uac"] = cores_of([uac.pid])
            seen["uas"] = cores_of([uas.pid])
            seen["proxy"] = proxy.cores() if proxy else ("-", "-")
        if on_tick:
            on_tick()
    uac_rc, uac_cpu = wait_rusage(uac, tmax + 10, watch)
    if uac_rc is None:
        uac_rc, uac_cpu = stop(uac, signal.SIGKILL)
    wall = time.time() - t0
    pcpu = (proxy.cpu() - pcpu0) if proxy else 0.0
    # the UAS over the same window as the UAC and the proxy (its 2 s
    # timewait after the last call is left out)
    uas_cpu_load = proc_cpu(uas.pid) - uas_cpu0
    proxy_alive = proxy.alive() if proxy else True
    drops1 = udp_drops(target)

    # UAS: let timewait (2 s) run out, then soft-quit (SIGUSR1) so it writes final stats
    time.sleep(2.5)
    _, uas_cpu = stop(uas, signal.SIGUSR1, 15)
    if cap:
        stop(cap, signal.SIGINT, 10)

    s, u = last_stat(stepdir, "uac"), last_stat(stepdir, "uas")
    ok = int(s.get("SuccessfulCall(C)", 0))
    failed = calls - ok                                   # incomplete counts as failed
    retrans = int(s.get("Retransmissions(C)", 0)) + int(u.get("Retransmissions(C)", 0))
    rt = read_rtt(stepdir)
    vals = sorted(v for _, v in rt)
    if len(rt) > 1 and rt[-1][0] > rt[0][0]:
        achieved = (len(rt) - 1) / ((rt[-1][0] - rt[0][0]) / 1000.0)
    elif a.no_rtt:
        # completed calls over the time they took to start: the UAC's wall
        # time less the hold and the last call's ~ms of signalling
        achieved = ok / max(wall - hold_s, 0.001)
    else:
        achieved = 0.0
    retrans_pct = 100.0 * retrans / calls
    load_s = calls / float(rate)
    passed = (failed == 0 and retrans_pct < 1.0 and achieved >= 0.95 * rate
              and proxy_alive)
    r = dict(proxy=name, rate=rate, calls=calls, ok=ok, failed=failed,
             sipp_failed=int(s.get("FailedCall(C)", 0)), retrans=retrans,
             unexpected=unexpected_msgs(stepdir),
             retrans_pct="%.2f" % retrans_pct, achieved_cps="%.0f" % achieved,
             rtt_p50_ms="%g" % pct(vals, 50), rtt_p90_ms="%g" % pct(vals, 90),
             rtt_p99_ms="%g" % pct(vals, 99), rtt_max_ms="%g" % (vals[-1] if vals else float("nan")),
             udp_rcvbuf_err=drops1[0] - drops0[0], target_sock_drops=drops1[1] - drops0[1],
             wall_s="%.1f" % wall,
             # CPU use: % of one core over the load window (calls/rate s; the short
             # tail after it is included in the numerator), and CPU us per call
             proxy_cpu_pct="%.0f" % (100 * pcpu / load_s),
             proxy_cpu_us_per_call="%.0f" % (1e6 * pcpu / max(ok, 1)),
             uac_cpu_pct="%.0f" % (100 * uac_cpu / load_s),
             uas_cpu_pct="%.0f" % (100 * uas_cpu / load_s),
             # SIPp's own CPU per call, UAC + UAS, over the load window (utime +
             # stime: the UAC's from wait4, the UAS's from /proc before and after)
             sipp_cpu_us_per_call="%.0f" % (1e6 * (uac_cpu + uas_cpu_load) / max(ok, 1)),
             # which cores each side may use / its threads were last seen on
             proxy_cores=seen.get("proxy", ("-", "-"))[0],
             proxy_ran_on=seen.get("proxy", ("-", "-"))[1],
             uac_cores=seen.get("uac", ("-", "-"))[0], uac_ran_on=seen.get("uac", ("-", "-"))[1],
             uas_cores=seen.get("uas", ("-", "-"))[0], uas_ran_on=seen.get("uas", ("-", "-"))[1])
    if cap:
        w, add = wire_latency_us(os.path.join(stepdir, "uac.pcap"), a.uac_port, a.uas_port)
        r.update(wire_n=len(w), wire_p50_us="%.0f" % pct(w, 50), wire_p99_us="%.0f" % pct(w, 99),
                 added_p50_us="%.0f" % pct(add, 50), added_p99_us="%.0f" % pct(add, 99))
    if proxy:
        n, rss, pss = proxy.mem()
        r.update(proxy_procs=n, proxy_rss_kb=rss, proxy_pss_kb=pss,
                 proxy_alive=int(proxy_alive), proxy_rss_idle_kb=idle_mem[1])
        if a.after_secs:
            # does the proxy give its memory back once the load is over?
            time.sleep(a.after_secs)
            _, rss, pss = proxy.mem()
            r.update(proxy_rss_after_kb=rss, proxy_pss_after_kb=pss,
                     proxy_after_pct_of_idle="%.0f" % (100.0 * rss / max(idle_mem[1], 1)))
    r["pass"] = int(passed)
    emit(outdir, r)
    if not a.keep:
        for f in glob.glob(os.path.join(stepdir, "*.pcap")):
            os.remove(f)
    return r


def emit(outdir, r):
    line = " ".join("%s=%s" % kv for kv in r.items())
    print(line, flush=True)
    with open(os.path.join(outdir, "results.txt"), "a") as f:
        f.write(line + "\n")


# ---------------------------------------------------------------- modes
def with_proxy(a, cmd, outdir, fn):
    if not cmd:
        return fn(None)
    px = Proxy(cmd, a.proxy_port, outdir, a.proxy_cpus)
    px.start()
    try:
        return fn(px)
    finally:
        px.stop()


def search(a, name, px, rep, outdir):
    """Step up the ladder until a step fails, then bisect; returns max passing rate."""
    ladder = [int(x) for x in a.ladder.split(",")]
    best, best_r, fail, r = 0, None, None, None
    for rate in ladder:
        r = run_step(a, name, rate, int(rate * a.secs), outdir, px)
        if not r["pass"]:
            fail = rate
            break
        best, best_r = rate, r
        time.sleep(a.cooldown)
    lo, hi = best, fail
    for _ in range(a.refine if fail else 0):   # bisect between last pass and first fail
        mid = int(round((lo + hi) / 2.0 / 50.0) * 50)
        if mid <= lo or mid >= hi:
            break
        if px and not r["pass"]:                # an overloaded proxy keeps stale
            px.stop()                           # transactions: restart it fresh
            time.sleep(1)
            px.start()
        time.sleep(a.cooldown)
        r = run_step(a, name, mid, int(mid * a.secs), outdir, px)
        if r["pass"]:
            lo, best, best_r = mid, mid, r
        else:
            hi = mid
    out = dict(FINDMAX=1, proxy=name, repeat=rep, max_cps=best,
               first_fail=hi if hi else "none")
    if best_r:
        for k in ("rtt_p50_ms", "rtt_p99_ms", "proxy_cpu_pct", "proxy_cpu_us_per_call",
                  "uac_cpu_pct", "uas_cpu_pct", "sipp_cpu_us_per_call", "proxy_cores",
                  "uac_cores", "proxy_rss_kb", "proxy_pss_kb"):
            if k in best_r:
                out["at_max_" + k] = best_r[k]
    emit(outdir, out)
    return best


def cmd_run(a, targets, outdir):
    calls = a.calls or int(a.rate * a.secs)
    for _ in range(a.repeat):
        for name, cmd in targets:
            with_proxy(a, cmd, outdir, lambda px: run_step(a, name, a.rate, calls, outdir, px))
            time.sleep(a.cooldown)


def cmd_findmax(a, targets, outdir):
    bests = {name: [] for name, _ in targets}
    for rep in range(1, a.repeat + 1):          # interleaved: A B A B ... (drift hits all alike)
        for name, cmd in targets:
            bests[name].append(with_proxy(a, cmd, outdir, lambda px: search(a, name, px, rep, outdir)))
            time.sleep(a.cooldown)
    for name, v in bests.items():
        emit(outdir, dict(FINDMAX_SUMMARY=1, proxy=name, runs=",".join(map(str, v)),
                          min=min(v), median=sorted(v)[len(v) // 2], max=max(v)))


def parse_targets(a):
    """--proxy 'NAME=CMD' (repeatable; a bare CMD is named by --name or argv[0])."""
    targets = []
    for spec in a.proxy or []:
        m = re.match(r"^([A-Za-z0-9_.+-]+)=(.*)$", spec)
        if m and " " not in m.group(1):
            targets.append((m.group(1), m.group(2)))
        else:
            targets.append((a.name or os.path.basename(shlex.split(spec)[0]), spec))
    if a.baseline or not targets:
        targets.insert(0, ("none", None))
    return targets


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["run", "findmax"])
    ap.add_argument("--proxy", action="append",
                    help="'NAME=COMMAND' of a proxy under test, repeatable (several are "
                         "measured interleaved in one run). It runs in the foreground, listens "
                         "on udp 127.0.0.1:--proxy-port and sends INVITEs to 127.0.0.1:--uas-port. "
                         "None given = no proxy, UAC -> UAS direct")
    ap.add_argument("--baseline", action="store_true", help="also measure UAC -> UAS direct")
    ap.add_argument("--name", default=None, help="name for a bare --proxy COMMAND")
    ap.add_argument("--proxy-port", type=int, default=5060)
    ap.add_argument("--uas-port", type=int, default=5070)
    ap.add_argument("--uac-port", type=int, default=5061)
    ap.add_argument("--service", default="74951234567")
    ap.add_argument("--rate", type=int, default=500, help="run: calls/s")
    ap.add_argument("--calls", type=int, default=0, help="run: total calls (default rate*secs)")
    ap.add_argument("--secs", type=float, default=10, help="seconds of load per step")
    ap.add_argument("--hold-ms", type=int, default=1000, help="pause between ACK and BYE")
    ap.add_argument("--ladder", default=LADDER, help="findmax: rates to try, ascending")
    ap.add_argument("--refine", type=int, default=2, help="findmax: bisection steps after first fail")
    ap.add_argument("--repeat", type=int, default=1, help="whole searches / runs (proxy restarted)")
    ap.add_argument("--cooldown", type=float, default=3, help="seconds between steps")
    ap.add_argument("--pcap", action="store_true",
                    help="capture both legs (INVITE and 200 only) and report wire INVITE->200 "
                         "latency and the part the proxy added, in us")
    ap.add_argument("--keep", action="store_true", help="keep pcaps")
    ap.add_argument("--cores", type=int, default=0,
                    help="pin the proxy to the last N cores and SIPp (UAC and UAS) to the others "
                         "with taskset (2 cores, --cores 1: proxy on 1, SIPp on 0); 0 = no pinning")
    ap.add_argument("--after-secs", type=float, default=0,
                    help="wait this long after each step and report the proxy's memory then "
                         "(proxy_rss_after_kb, and as %% of its memory before the step)")
    ap.add_argument("--no-rtt", action="store_true",
                    help="no per-call -trace_rtt file (long runs); rtt_* are then nan")
    ap.add_argument("--outdir", default=None)
    a = ap.parse_args()
    a.proxy_cpus, a.sipp_cpus = split_cores(a.cores, os.sched_getaffinity(0))
    targets = parse_targets(a)
    outdir = a.outdir or os.path.join("/tmp/sipbench", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(outdir, exist_ok=True)
    for port in (a.uac_port, a.uas_port):
        if udp_bound(port):
            sys.exit("udp port %d is already in use" % port)
    (cmd_run if a.mode == "run" else cmd_findmax)(a, targets, outdir)


if __name__ == "__main__":
    main()
