//! The web console (SPEC U-1): server-rendered pages, one module a page.
//! Each page is a pure function from rows to HTML; `http::ui` fetches
//! the rows, checks the session and answers. Everything that came from
//! the network (caller names, visit fields, CRM errors) goes through
//! [`esc`]; the pages' Content-Security-Policy allows no inline script
//! besides, so a missed escape still runs nothing.

use std::fmt::Write as _;

use chrono::FixedOffset;

pub mod calls;
pub mod deals;
pub mod ladder;
pub mod leads;
pub mod limits;
pub mod login;
pub mod outbox;
pub mod overview;
pub mod pools;
pub mod session;
pub mod texts;

pub use texts::Texts;

/// The stylesheet and the script, compiled in (no CDN, no build step).
pub const APP_CSS: &str = include_str!("assets/app.css");
pub const APP_JS: &str = include_str!("assets/app.js");

/// Text made safe for HTML element content and quoted attribute values.
/// Line breaks become character references too, so a rendered row is one
/// line (a server-sent event's data is one line).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// Text for a URL's query value (`?channel=…`): everything but
/// unreserved characters percent-encoded. Then [`esc`] for the attribute.
pub fn url_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What every page needs besides its rows.
pub struct Ctx<'a> {
    pub t: &'static Texts,
    /// `crm.timezone`.
    pub tz: FixedOffset,
    /// `crm.phone_format` (empty: digits as stored).
    pub phone_format: &'a str,
    /// `[phone]`, whose numbers `phone_format` is for.
    pub phone_rules: &'a crate::phone::PhoneRules,
    pub csrf: &'a str,
    pub user: &'a str,
}

impl Ctx<'_> {
    /// A Unix time (seconds) in the CRM's zone.
    pub fn date(&self, unix: i64) -> String {
        chrono::DateTime::from_timestamp(unix, 0)
            .map(|d| {
                d.with_timezone(&self.tz)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// A phone in `crm.phone_format`, escaped.
    pub fn phone(&self, p: &str) -> String {
        esc(&self.phone_text(p))
    }

    /// A phone in `crm.phone_format`, not escaped.
    fn phone_text(&self, p: &str) -> String {
        if self.phone_format.is_empty() {
            p.to_string()
        } else {
            crate::phone::format_for_crm(p, self.phone_format, self.phone_rules)
        }
    }

    /// A call lead's stored title or text in the page's language, its
    /// numbers as the phone column writes them; not escaped.
    pub fn stored(&self, s: &str) -> String {
        self.t.stored(s, &|p| self.phone_text(p))
    }

    /// The hidden CSRF field every form carries.
    pub fn csrf_field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(self.csrf)
        )
    }
}

/// The player of a recording (the calls page, a deal's notes): an audio
/// element for a WAV this node serves; for one another node of a cluster
/// holds, a link that opens it there ("play on node-a:8080").
pub fn player(ctx: &Ctx, p: &crate::recording::links::ConsolePlayer) -> String {
    use crate::recording::links::ConsolePlayer;
    match p {
        // preload="none": a page of 50 calls fetches no audio until one is played.
        ConsolePlayer::Here(src) => format!(
            "<audio controls preload=\"none\" src=\"{}\"></audio>",
            esc(src)
        ),
        ConsolePlayer::OnNode { node_base, link } => {
            let node = node_base
                .split_once("://")
                .map_or(node_base.as_str(), |(_, host)| host);
            format!(
                "<a class=\"play-elsewhere\" href=\"{}\" target=\"_blank\" rel=\"noopener\">{} {}</a>",
                esc(link),
                esc(ctx.t.play_on_node),
                esc(node)
            )
        }
    }
}

/// Seconds as `1:05` or `1:02:03`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Which page is open (the menu marks it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Leads,
    Calls,
    Deals,
    Pools,
    Outbox,
}

/// A whole page: head, menu, sign-out form, `body`.
pub fn layout(ctx: &Ctx, nav: Nav, body: &str) -> String {
    let t = ctx.t;
    let items = [
        (Nav::Overview, "/ui/", t.overview),
        (Nav::Leads, "/ui/leads", t.leads),
        (Nav::Calls, "/ui/calls", t.calls),
        (Nav::Deals, "/ui/deals", t.deals),
        (Nav::Pools, "/ui/pools", t.pools),
        (Nav::Outbox, "/ui/outbox", t.outbox),
    ];
    let title = items
        .iter()
        .find(|(n, _, _)| *n == nav)
        .map_or("", |(_, _, title)| *title);
    let mut menu = String::new();
    for (n, href, label) in items {
        let class = if n == nav { " class=\"on\"" } else { "" };
        let _ = write!(menu, "<a href=\"{href}\"{class}>{}</a>", esc(label));
    }
    format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title} · siptrack</title><link rel=\"stylesheet\" href=\"/ui/app.css\"></head>\
         <body><nav>{menu}<span class=\"who\">{user}</span>\
         <form method=\"post\" action=\"/ui/logout\" class=\"out\">{csrf}<button>{sign_out}</button></form></nav>\
         <main><h1>{title}</h1>{body}</main><footer>{times_in} UTC{tz}</footer>\
         <script src=\"/ui/app.js\"></script></body></html>",
        lang = t.lang,
        times_in = esc(t.times_in),
        tz = ctx.tz,
        title = esc(title),
        user = esc(ctx.user),
        csrf = ctx.csrf_field(),
        sign_out = esc(t.sign_out),
    )
}

/// A page context for the pages' unit tests: `t`'s texts, UTC+`tz_hours`,
/// `[phone]`'s defaults, fixed CSRF token and user.
#[cfg(test)]
pub(crate) fn test_ctx(
    t: &'static Texts,
    tz_hours: i32,
    phone_format: &'static str,
) -> Ctx<'static> {
    static RULES: std::sync::LazyLock<crate::phone::PhoneRules> =
        std::sync::LazyLock::new(crate::phone::PhoneRules::default);
    Ctx {
        t,
        tz: FixedOffset::east_opt(tz_hours * 3600).expect("tz"),
        phone_format,
        phone_rules: &RULES,
        csrf: "c",
        user: "u",
    }
}

/// Recording links for the pages' unit tests: key `k`, kept a day.
#[cfg(test)]
pub(crate) fn test_links() -> crate::recording::LinkSettings {
    crate::recording::LinkSettings {
        key: std::sync::Arc::from(&b"k"[..]),
        base_url: "https://calls.example".into(),
        retention_seconds: 86_400,
        record_calls: true,
        send_to_crm: false,
    }
}

/// A table's head row.
pub fn head(cols: &[&str]) -> String {
    let mut h = String::from("<thead><tr>");
    for c in cols {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr></thead>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_table() {
        for (raw, html) in [
            ("plain", "plain"),
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            ("a\"b'c", "a&quot;b&#39;c"),
            ("&amp;", "&amp;amp;"),
            ("line\nbreak\r", "line&#10;break&#13;"),
            ("Иван", "Иван"),
        ] {
            assert_eq!(esc(raw), html, "{raw}");
        }
        for (raw, url) in [
            ("google", "google"),
            ("a b&c=d", "a%20b%26c%3Dd"),
            ("\"><x", "%22%3E%3Cx"),
            ("кан", "%D0%BA%D0%B0%D0%BD"),
        ] {
            assert_eq!(url_value(raw), url, "{raw}");
        }
    }

    #[test]
    fn durations_dates_phones() {
        for (s, text) in [(0, "0:00"), (65, "1:05"), (3723, "1:02:03"), (-5, "0:00")] {
            assert_eq!(duration(s), text);
        }
        let ctx = Ctx {
            t: &texts::EN,
            tz: FixedOffset::east_opt(3 * 3600).expect("offset"),
            phone_format: "8 (XXX) XXX-XX-XX",
            phone_rules: &crate::phone::PhoneRules::default(),
            csrf: "c\"x",
            user: "u",
        };
        assert_eq!(ctx.date(0), "1970-01-01 03:00:00");
        assert_eq!(ctx.phone("74991234567"), "8 (499) 123-45-67");
        assert_eq!(ctx.phone("<b>"), "&lt;b&gt;");
        assert!(ctx.csrf_field().contains("value=\"c&quot;x\""));
    }

    /// The page frame escapes the user and marks the open page.
    #[test]
    fn layout_escapes_and_marks() {
        let ctx = Ctx {
            t: &texts::RU,
            tz: FixedOffset::east_opt(0).expect("offset"),
            phone_format: "",
            phone_rules: &crate::phone::PhoneRules::default(),
            csrf: "tok",
            user: "<i>x",
        };
        let page = layout(&ctx, Nav::Calls, "<p>body</p>");
        assert!(page.contains("&lt;i&gt;x"));
        assert!(page.contains("<a href=\"/ui/calls\" class=\"on\">Звонки</a>"));
        assert!(page.contains("<html lang=\"ru\">"));
        assert!(page.contains("name=\"csrf\" value=\"tok\""));
    }
}
