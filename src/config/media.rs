//! `[media]` and the recording switches of `[tracking]` (SPEC M-1, M-2):
//! parsed and checked into [`MediaConfig`], which the relay, the recorder,
//! the `/recordings` links and the retention sweep read.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{parse_listen, Checker, RawConfig};
use crate::media::ports::PortAllocator;

/// How calls' media is anchored and recorded, and where recordings go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// `tracking.record_calls` (default true): anchor, relay and record the
    /// media of every call. false: SDP and media pass untouched.
    pub record_calls: bool,
    /// `tracking.send_recording_to_crm` (default true): the recording link
    /// goes into webhooks (`link`, `recording_url`) and CRM comments.
    pub send_recording_to_crm: bool,
    /// `tracking.recording_links_require_auth` (default false): a signed
    /// link also needs the API token.
    pub recording_links_require_auth: bool,
    /// `media.port_min`..=`media.port_max` (30000–40000): RTP on even
    /// ports, RTCP on the odd one above.
    pub port_min: u16,
    pub port_max: u16,
    /// The address written into SDP: `media.advertised_ip`, else
    /// `sip.advertised_host` when it is an IP, else the first `sip.listen`
    /// address.
    pub advertised_ip: IpAddr,
    /// An address of the other family than `advertised_ip`'s, for the
    /// SDP of peers on that family: the first `sip.listen` address of it
    /// (not a wildcard). None: those peers get `advertised_ip` too.
    pub advertised_other: Option<IpAddr>,
    /// `media.rtp_timeout_seconds` (60): a call with no media either way for
    /// this long is ended.
    pub rtp_timeout_seconds: u64,
    /// `media.recordings_dir` (`data/recordings`), relative to the working
    /// directory like `storage.url`.
    pub recordings_dir: PathBuf,
    /// `media.retention_days` (90): recordings older than this are deleted
    /// and their links expire.
    pub retention_days: u64,
}

impl MediaConfig {
    /// How long a recording (and its link) lives, in seconds.
    pub fn retention_seconds(&self) -> u64 {
        self.retention_days * 86_400
    }
}

#[derive(Deserialize, Default)]
pub(super) struct RawMedia {
    port_min: Option<Spanned<i64>>,
    port_max: Option<Spanned<i64>>,
    advertised_ip: Option<Spanned<String>>,
    rtp_timeout_seconds: Option<Spanned<i64>>,
    recordings_dir: Option<Spanned<String>>,
    retention_days: Option<Spanned<i64>>,
}

pub(super) fn media_config(c: &mut Checker, raw: &RawConfig) -> MediaConfig {
    let m = &raw.media;
    let t = &raw.tracking;
    let record_calls = t.record_calls.unwrap_or(true);
    let port_min = c.int("media.port_min", &m.port_min, 30000, 1..65_536) as u16;
    let port_max = c.int("media.port_max", &m.port_max, 40000, 1..65_536) as u16;
    if port_min >= port_max {
        c.err(
            "media.port_max",
            m.port_max
                .as_ref()
                .or(m.port_min.as_ref())
                .map(|s| s.span()),
            format!("must be greater than media.port_min ({port_min})"),
        );
    } else if PortAllocator::new(port_min, port_max, 0).is_err() {
        c.err(
            "media.port_max",
            m.port_max
                .as_ref()
                .or(m.port_min.as_ref())
                .map(|s| s.span()),
            format!(
                "{port_min}..{port_max} holds no even RTP port with its odd RTCP port above it"
            ),
        );
    }
    let advertised_ip = advertised_ip(c, raw, record_calls);
    let advertised_other = listen_ips(raw).find(|ip| ip.is_ipv4() != advertised_ip.is_ipv4());
    let rtp_timeout_seconds = c.int(
        "media.rtp_timeout_seconds",
        &m.rtp_timeout_seconds,
        60,
        1..86_401,
    );
    let recordings_dir = match &m.recordings_dir {
        None => PathBuf::from("data/recordings"),
        Some(s) if s.get_ref().trim().is_empty() => {
            c.err(
                "media.recordings_dir",
                Some(s.span()),
                "must name a directory",
            );
            PathBuf::from("data/recordings")
        }
        Some(s) => PathBuf::from(s.get_ref()),
    };
    let retention_days = c.int("media.retention_days", &m.retention_days, 90, 1..36_501);
    MediaConfig {
        record_calls,
        send_recording_to_crm: t.send_recording_to_crm.unwrap_or(true),
        recording_links_require_auth: links_require_auth(c, raw),
        port_min,
        port_max,
        advertised_ip,
        advertised_other,
        rtp_timeout_seconds,
        recordings_dir,
        retention_days,
    }
}

/// `tracking.recording_links_require_auth`: with no `http.token` every
/// link would be refused, which is a mistake, not a setting.
/// `check-config`: the recordings directory must be one siptrack can
/// write in (when calls are recorded), reported at its key's line with
/// the file's other errors (trial, 2026-12-03: it came alone, without a
/// line, and only once every other error was fixed).
pub(super) fn probe_recordings_dir(c: &mut Checker, raw: &RawConfig, media: &MediaConfig) {
    if !media.record_calls {
        return;
    }
    if let Some(p) = super::paths::dir_write_problem(&media.recordings_dir) {
        let span = raw.media.recordings_dir.as_ref().map(Spanned::span);
        c.err(
            "media.recordings_dir",
            span,
            format!(
                "{p} (calls would go through unrecorded; or set tracking.record_calls = false)"
            ),
        );
    }
}

fn links_require_auth(c: &mut Checker, raw: &RawConfig) -> bool {
    let Some(v) = &raw.tracking.recording_links_require_auth else {
        return false;
    };
    let on = *v.get_ref();
    if on && raw.http.token.as_deref().unwrap_or("").is_empty() {
        c.err(
            "tracking.recording_links_require_auth",
            Some(v.span()),
            "needs http.token (without it every recording link would be refused)",
        );
    }
    on
}

/// `media.advertised_ip`, or the SIP address peers already reach siptrack
/// at. A host name cannot go into SDP's `c=` reliably, so with recording
/// on and only a name to go by, the key is required.
fn advertised_ip(c: &mut Checker, raw: &RawConfig, record_calls: bool) -> IpAddr {
    let fallback = IpAddr::from([127, 0, 0, 1]);
    if let Some(s) = &raw.media.advertised_ip {
        return match s.get_ref().trim().parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {
                c.err(
                    "media.advertised_ip",
                    Some(s.span()),
                    format!("{ip} is not an address peers can send media to"),
                );
                fallback
            }
            Ok(ip) => ip,
            Err(_) => {
                c.err(
                    "media.advertised_ip",
                    Some(s.span()),
                    format!("\"{}\" is not an IP address", s.get_ref()),
                );
                fallback
            }
        };
    }
    let host = raw.sip.advertised_host.as_deref().unwrap_or("").trim();
    if !host.is_empty() {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return ip;
        }
        if record_calls {
            c.err(
                "media.advertised_ip",
                None,
                format!(
                    "needed with tracking.record_calls: sip.advertised_host \"{host}\" is a name, and SDP needs an IP address"
                ),
            );
        }
        return fallback;
    }
    listen_ips(raw).next().unwrap_or(fallback)
}

/// The `sip.listen` addresses that name one (no wildcard), in order.
/// sip.listen's own checks report unreadable or unspecified addresses.
fn listen_ips(raw: &RawConfig) -> impl Iterator<Item = IpAddr> + '_ {
    raw.sip
        .listen
        .iter()
        .flat_map(|l| l.get_ref())
        .filter_map(|l| parse_listen(l.get_ref()).ok())
        .map(|l| l.addr.ip())
        .filter(|ip| !ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn media(text: &str) -> Result<MediaConfig, Vec<(String, Option<usize>, String)>> {
        Config::parse(text).map(|c| c.media).map_err(|e| {
            e.0.into_iter()
                .map(|e| (e.key, e.line, e.message))
                .collect()
        })
    }

    #[test]
    fn defaults() {
        let m = media("").expect("empty config is valid");
        assert_eq!(
            m,
            MediaConfig {
                record_calls: true,
                send_recording_to_crm: true,
                recording_links_require_auth: false,
                port_min: 30000,
                port_max: 40000,
                advertised_ip: "127.0.0.1".parse().expect("ip"),
                advertised_other: None,
                rtp_timeout_seconds: 60,
                recordings_dir: PathBuf::from("data/recordings"),
                retention_days: 90,
            }
        );
        assert_eq!(m.retention_seconds(), 90 * 86_400);
    }

    #[test]
    fn values_are_read() {
        let m = media(
            "[http]\ntoken = \"t\"\n[tracking]\nrecord_calls = false\nsend_recording_to_crm = false\nrecording_links_require_auth = true\n\
             [media]\nport_min = 20001\nport_max = 20004\nadvertised_ip = \"2001:db8::7\"\nrtp_timeout_seconds = 5\nrecordings_dir = \"/var/rec\"\nretention_days = 7\n",
        )
        .expect("valid");
        assert!(!m.record_calls && !m.send_recording_to_crm && m.recording_links_require_auth);
        assert_eq!((m.port_min, m.port_max), (20001, 20004));
        assert_eq!(
            m.advertised_ip,
            "2001:db8::7".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            (m.rtp_timeout_seconds, m.recordings_dir, m.retention_days),
            (5, PathBuf::from("/var/rec"), 7)
        );
    }

    /// Without `media.advertised_ip`: the SIP address, IP or listen.
    #[test]
    fn advertised_ip_falls_back_to_the_sip_address() {
        for (text, ip) in [
            ("[sip]\nadvertised_host = \"192.0.2.10\"\n", "192.0.2.10"),
            (
                "[sip]\nadvertised_host = \"[2001:db8::1]\"\n",
                "2001:db8::1",
            ),
            (
                "[sip]\nlisten = [\"udp:10.1.2.3:5060\", \"tcp:10.1.2.4:5060\"]\n",
                "10.1.2.3",
            ),
            // A name is fine when nothing is recorded.
            (
                "[sip]\nadvertised_host = \"sip.example.com\"\n[tracking]\nrecord_calls = false\n",
                "127.0.0.1",
            ),
        ] {
            let m = media(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(m.advertised_ip, ip.parse::<IpAddr>().expect("ip"), "{text}");
        }
    }

    /// Peers of the other family get an address of theirs when sip.listen
    /// has one (trial, 2026-12-03: an IPv6 caller was told an IPv4
    /// address and got no audio).
    #[test]
    fn the_other_familys_address_comes_from_sip_listen() {
        for (text, main, other) in [
            (
                "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"udp:[::1]:5060\"]\n",
                "127.0.0.1",
                Some("::1"),
            ),
            (
                "[sip]\nlisten = [\"udp:[2001:db8::5]:5060\", \"udp:192.0.2.5:5060\"]\n",
                "2001:db8::5",
                Some("192.0.2.5"),
            ),
            // A wildcard names no address.
            (
                "[sip]\nlisten = [\"udp:192.0.2.5:5060\", \"udp:[::]:5060\"]\n\
                 advertised_host = \"192.0.2.5\"\n",
                "192.0.2.5",
                None,
            ),
            (
                "[sip]\nlisten = [\"udp:192.0.2.5:5060\", \"udp:[2001:db8::5]:5060\"]\n\
                 [media]\nadvertised_ip = \"198.51.100.1\"\n",
                "198.51.100.1",
                Some("2001:db8::5"),
            ),
        ] {
            let m = media(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(
                m.advertised_ip,
                main.parse::<IpAddr>().expect("ip"),
                "{text}"
            );
            let other = other.map(|o| o.parse::<IpAddr>().expect("ip"));
            assert_eq!(m.advertised_other, other, "{text}");
        }
    }

    /// `http.public_url`, the base of recording links.
    #[test]
    fn public_url_is_checked() {
        let url = |text: &str| Config::parse(text).map(|c| c.http.public_url);
        assert_eq!(url("").ok(), Some(None));
        assert_eq!(
            url("[http]\npublic_url = \"https://rec.example/st/\"\n").ok(),
            Some(Some("https://rec.example/st".to_string()))
        );
        for bad in [
            "ftp://x",
            "https://",
            "https:///p",
            "https://x/?a=1",
            "calls.example",
        ] {
            let e = url(&format!("[http]\npublic_url = \"{bad}\"\n")).expect_err(bad);
            assert_eq!(
                (e.0[0].key.as_str(), e.0[0].line),
                ("http.public_url", Some(2))
            );
        }
    }

    #[test]
    fn errors_name_key_and_line() {
        for (text, key, line, needle) in [
            (
                "[media]\nport_min = 40000\nport_max = 30000\n",
                "media.port_max",
                Some(3),
                "greater than media.port_min (40000)",
            ),
            (
                "[media]\nport_max = 70000\n",
                "media.port_max",
                Some(2),
                "between 1 and 65535",
            ),
            (
                "[media]\nport_min = 30001\nport_max = 30002\n",
                "media.port_max",
                Some(3),
                "no even RTP port",
            ),
            (
                "[media]\nadvertised_ip = \"media.example\"\n",
                "media.advertised_ip",
                Some(2),
                "not an IP address",
            ),
            (
                "[media]\nadvertised_ip = \"0.0.0.0\"\n",
                "media.advertised_ip",
                Some(2),
                "not an address peers",
            ),
            (
                "[sip]\nadvertised_host = \"sip.example.com\"\n",
                "media.advertised_ip",
                None,
                "is a name",
            ),
            (
                "[media]\nrtp_timeout_seconds = 0\n",
                "media.rtp_timeout_seconds",
                Some(2),
                "between 1",
            ),
            (
                "[media]\nretention_days = 0\n",
                "media.retention_days",
                Some(2),
                "between 1 and 36500",
            ),
            (
                "[media]\nrecordings_dir = \" \"\n",
                "media.recordings_dir",
                Some(2),
                "must name a directory",
            ),
            (
                "[tracking]\nrecording_links_require_auth = true\n",
                "tracking.recording_links_require_auth",
                Some(2),
                "needs http.token",
            ),
            (
                "[media]\nport_mni = 1\n",
                "media.port_mni",
                Some(2),
                "did you mean media.port_min",
            ),
        ] {
            let e = media(text).expect_err(text);
            assert_eq!(e.len(), 1, "{text}: {e:?}");
            let (k, l, m) = &e[0];
            assert_eq!((k.as_str(), *l), (key, line), "{text}: {m}");
            assert!(m.contains(needle), "{text}: {m}");
        }
    }
}
