//! Serving and linking recordings (SPEC M-2, C-2 `recording_url`, C-2a
//! `link`): the rules for which link a call gets and where it goes
//! (`links`), byte ranges (`range`) and retention (`retention`). Making
//! recordings is `media`'s job; the HTTP route is `http::recordings`.

pub mod cli;
pub mod links;
pub mod range;
pub mod retention;

pub use links::LinkSettings;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;

/// How recording links are made: the store's key, the API's public
/// address (`http_addr`: where the API listens), the switches.
pub fn settings(config: &Config, key: Arc<[u8]>, http_addr: SocketAddr) -> LinkSettings {
    let host = config
        .sip
        .advertised_host
        .clone()
        .unwrap_or_else(|| config.media.advertised_ip.to_string());
    LinkSettings {
        key,
        base_url: base_url(config.http.public_url.as_deref(), http_addr, &host),
        retention_seconds: config.media.retention_seconds(),
        record_calls: config.media.record_calls,
        send_to_crm: config.media.send_recording_to_crm,
    }
}

/// The base of recording links: `http.public_url` when set (siptrack
/// behind a reverse proxy or NAT), else `http://` and the address the API
/// listens on; a wildcard listen address is replaced by `host` (the SIP
/// advertised address), since no browser can open 0.0.0.0.
pub fn base_url(public_url: Option<&str>, listen: SocketAddr, host: &str) -> String {
    if let Some(u) = public_url {
        return u.trim_end_matches('/').to_string();
    }
    if listen.ip().is_unspecified() {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        return format!("http://{host}:{}", listen.port());
    }
    format!("http://{listen}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_bases() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        for (public, listen, host, want) in [
            (
                Some("https://rec.example/siptrack/"),
                "127.0.0.1:8080",
                "x",
                "https://rec.example/siptrack",
            ),
            (None, "127.0.0.1:8080", "x", "http://127.0.0.1:8080"),
            (None, "[::1]:8080", "x", "http://[::1]:8080"),
            (
                None,
                "0.0.0.0:8080",
                "203.0.113.5",
                "http://203.0.113.5:8080",
            ),
            (
                None,
                "[::]:8080",
                "2001:db8::5",
                "http://[2001:db8::5]:8080",
            ),
            (None, "0.0.0.0:80", "pbx.example", "http://pbx.example:80"),
        ] {
            assert_eq!(base_url(public, a(listen), host), want);
        }
    }
}
