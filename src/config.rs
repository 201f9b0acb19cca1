//! Typed configuration: TOML in, validated settings out. Every error names
//! the key (and line) it is about, so `siptrack check-config` can list them
//! all at once.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::proxy::Transport;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// All problems found in one file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

#[derive(Debug, Clone)]
pub struct Config {
    pub sip: SipConfig,
    pub tracking: TrackingConfig,
    pub shutdown: ShutdownConfig,
    pub http: HttpConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct SipConfig {
    pub listen: Vec<ListenAddr>,
    pub trusted_sources: Vec<IpNet>,
    pub max_message_bytes: usize,
    pub udp_recv_buffer_bytes: usize,
    pub route_secret: Option<String>,
    pub advertised_host: Option<String>,
    pub timers: Timers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1_ms: u64,
    pub t2_ms: u64,
    /// How long a message may linger in the network (RFC 3261 T4): how
    /// long completed transactions absorb retransmissions (Timers I, K).
    pub t4_ms: u64,
    pub timer_c_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            timer_c_ms: 180_000,
        }
    }
}

/// A next hop taken from configuration (never from a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The URI as configured.
    pub uri: String,
    /// The user part, if the URI has one.
    pub user: Option<String>,
    /// Host as written in the URI (used in the Request-URI).
    pub host: String,
    pub port: Option<u16>,
    pub transport: Transport,
    /// Resolved once at start-up: no DNS on the call path.
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Default)]
pub struct TrackingConfig {
    pub default_destination: Option<Destination>,
}

#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    pub drain_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    sip: RawSip,
    #[serde(default)]
    tracking: RawTracking,
    #[serde(default)]
    shutdown: RawShutdown,
    #[serde(default)]
    http: RawHttp,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSip {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    trusted_sources: Option<Vec<Spanned<String>>>,
    max_message_bytes: Option<Spanned<i64>>,
    udp_recv_buffer_bytes: Option<Spanned<i64>>,
    route_secret: Option<String>,
    advertised_host: Option<String>,
    #[serde(default)]
    timers: RawTimers,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    t1_ms: Option<Spanned<i64>>,
    t2_ms: Option<Spanned<i64>>,
    t4_ms: Option<Spanned<i64>>,
    timer_c_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTracking {
    default_destination: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    drain_seconds: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<Spanned<String>>,
}

/// Collects errors with the line numbers of their spans.
struct Checker<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn line_of(&self, span: Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }
    fn err(
        &mut self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(s));
        self.errors.push(ConfigError {
            key: key.into(),
            line,
            message: message.into(),
        });
    }
    fn int(&mut self, key: &str, v: &Option<Spanned<i64>>, default: u64, range: Range<u64>) -> u64 {
        match v {
            None => default,
            Some(s) => {
                let n = *s.get_ref();
                if n < range.start as i64 || n >= range.end as i64 {
                    self.err(
                        key,
                        Some(s.span()),
                        format!("must be between {} and {}", range.start, range.end - 1),
                    );
                    default
                } else {
                    n as u64
                }
            }
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                key: path.display().to_string(),
                line: None,
                message: format!("cannot read: {e}"),
            }])
        })?;
        Config::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigErrors(vec![ConfigError {
                key: "toml".into(),
                line,
                message: e.message().to_string(),
            }])
        })?;
        let mut c = Checker {
            text,
            errors: Vec::new(),
        };

        let mut listen = Vec::new();
        match &raw.sip.listen {
            None => listen.push(ListenAddr {
                transport: Transport::Udp,
                addr: ([127, 0, 0, 1], 5060).into(),
            }),
            Some(list) => {
                if list.get_ref().is_empty() {
                    c.err(
                        "sip.listen",
                        Some(list.span()),
                        "needs at least one address",
                    );
                }
                for (i, item) in list.get_ref().iter().enumerate() {
                    match parse_listen(item.get_ref()) {
                        Ok(l) => listen.push(l),
                        Err(m) => c.err(format!("sip.listen[{i}]"), Some(item.span()), m),
                    }
                }
            }
        }
        let mut trusted_sources = Vec::new();
        for (i, item) in raw.sip.trusted_sources.iter().flatten().enumerate() {
            let s = item.get_ref().trim();
            let parsed = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(n) => trusted_sources.push(n),
                Err(_) => c.err(
                    format!("sip.trusted_sources[{i}]"),
                    Some(item.span()),
                    format!(
                        "\"{s}\" is not a CIDR network (e.g. \"192.0.2.0/24\") or an IP address"
                    ),
                ),
            }
        }
        let max_message_bytes = c.int(
            "sip.max_message_bytes",
            &raw.sip.max_message_bytes,
            65535,
            1024..16_777_217,
        ) as usize;
        let udp_recv_buffer_bytes = c.int(
            "sip.udp_recv_buffer_bytes",
            &raw.sip.udp_recv_buffer_bytes,
            4 << 20,
            0..1 << 30,
        ) as usize;
        let t = &raw.sip.timers;
        let d = Timers::default();
        let timers = Timers {
            t1_ms: c.int("sip.timers.t1_ms", &t.t1_ms, d.t1_ms, 1..60_001),
            t2_ms: c.int("sip.timers.t2_ms", &t.t2_ms, d.t2_ms, 1..600_001),
            t4_ms: c.int("sip.timers.t4_ms", &t.t4_ms, d.t4_ms, 0..600_001),
            timer_c_ms: c.int(
                "sip.timers.timer_c_ms",
                &t.timer_c_ms,
                d.timer_c_ms,
                1..86_400_001,
            ),
        };
        if timers.t2_ms < timers.t1_ms {
            c.err(
                "sip.timers.t2_ms",
                t.t2_ms.as_ref().map(|s| s.span()),
                "must not be smaller than t1_ms",
            );
        }

        let default_destination = match &raw.tracking.default_destination {
            Some(s) if !s.get_ref().trim().is_empty() => {
                match parse_destination(s.get_ref().trim()) {
                    Ok(d) => Some(d),
                    Err(m) => {
                        c.err("tracking.default_destination", Some(s.span()), m);
                        None
                    }
                }
            }
            _ => None,
        };
        let drain_seconds = c.int(
            "shutdown.drain_seconds",
            &raw.shutdown.drain_seconds,
            30,
            0..86_401,
        );
        let http_listen = match &raw.http.listen {
            None => ([127, 0, 0, 1], 8080).into(),
            Some(s) => s.get_ref().parse::<SocketAddr>().unwrap_or_else(|_| {
                c.err(
                    "http.listen",
                    Some(s.span()),
                    format!("\"{}\" is not an address like 127.0.0.1:8080", s.get_ref()),
                );
                ([127, 0, 0, 1], 8080).into()
            }),
        };

        if !c.errors.is_empty() {
            return Err(ConfigErrors(c.errors));
        }
        Ok(Config {
            sip: SipConfig {
                listen,
                trusted_sources,
                max_message_bytes,
                udp_recv_buffer_bytes,
                route_secret: raw.sip.route_secret.filter(|s| !s.is_empty()),
                advertised_host: raw.sip.advertised_host.filter(|s| !s.is_empty()),
                timers,
            },
            tracking: TrackingConfig {
                default_destination,
            },
            shutdown: ShutdownConfig { drain_seconds },
            http: HttpConfig {
                listen: http_listen,
            },
        })
    }
}

/// `udp:127.0.0.1:5060`, `tcp:[::1]:5060`.
pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    let (proto, addr) = s
        .split_once(':')
        .ok_or_else(|| format!("\"{s}\" is not \"<udp|tcp>:<ip>:<port>\""))?;
    let transport = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        other => return Err(format!("transport \"{other}\" is not udp or tcp")),
    };
    let addr = addr
        .parse::<SocketAddr>()
        .map_err(|_| format!("\"{addr}\" is not an IP address with port (IPv6 in brackets)"))?;
    Ok(ListenAddr { transport, addr })
}

/// A configured SIP URI such as `sip:pbx@192.0.2.10:5080;transport=tcp`.
pub fn parse_destination(s: &str) -> Result<Destination, String> {
    let uri = crate::sip::Uri::parse(s.as_bytes())
        .map_err(|e| format!("\"{s}\" is not a SIP URI ({e})"))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let transport = match uri.param(b"transport") {
        Some(t) if t.eq_ignore_ascii_case(b"tcp") => Transport::Tcp,
        Some(t) if t.eq_ignore_ascii_case(b"udp") => Transport::Udp,
        None => Transport::Udp,
        Some(t) => return Err(format!("transport \"{}\" is not udp or tcp", text(t))),
    };
    let host = text(uri.host());
    let port = uri.port;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (bare, port.unwrap_or(5060))
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("host \"{host}\" does not resolve"))?;
    Ok(Destination {
        uri: s.to_string(),
        user: uri.user().map(text),
        host,
        port,
        transport,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<ConfigError> {
        match Config::parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../config/siptrack.toml");
        let c = Config::parse(text).expect("shipped config parses");
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.sip.timers, Timers::default());
        let d = c.tracking.default_destination.expect("destination");
        assert_eq!(
            (d.addr, d.transport),
            ("127.0.0.1:5070".parse().expect("addr"), Transport::Udp)
        );
    }

    #[test]
    fn every_error_names_its_key_and_line() {
        let text = "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"sctp:127.0.0.1:5060\"]\ntrusted_sources = [\"10.0.0.0/33\"]\n\n[sip.timers]\nt1_ms = 0\n\n[tracking]\ndefault_destination = \"http://pbx\"\n";
        let e = errors(text);
        let keys: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("sip.listen[1]", Some(2)),
                ("sip.trusted_sources[0]", Some(3)),
                ("sip.timers.t1_ms", Some(6)),
                ("tracking.default_destination", Some(9)),
            ]
        );
        assert!(e[0].message.contains("sctp"), "{}", e[0].message);
        assert!(e[1].message.contains("10.0.0.0/33"), "{}", e[1].message);
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_reported_with_lines() {
        let e = errors("[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\ntrusted_source = []\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(3));
        assert!(e[0].message.contains("trusted_source"), "{}", e[0].message);
        let e = errors("[sip\nlisten = 1\n");
        assert_eq!(e[0].line, Some(1));
    }

    #[test]
    fn destinations_choose_transport_and_port() {
        let d = parse_destination("sip:pbx@127.0.0.1:5080;transport=tcp").expect("parses");
        assert_eq!(
            (d.transport, d.port, d.user.as_deref()),
            (Transport::Tcp, Some(5080), Some("pbx"))
        );
        let d = parse_destination("sip:[::1]").expect("parses");
        assert_eq!(d.addr, "[::1]:5060".parse().expect("addr"));
        assert!(parse_destination("sip:127.0.0.1;transport=sctp").is_err());
    }

    #[test]
    fn listen_addresses_take_both_families() {
        assert_eq!(
            parse_listen("tcp:[::1]:5060"),
            Ok(ListenAddr {
                transport: Transport::Tcp,
                addr: "[::1]:5060".parse().expect("addr")
            })
        );
        assert!(parse_listen("udp:localhost:5060").is_err());
    }
}
