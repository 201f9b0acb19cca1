//! `[ui]`: the web console (SPEC U-1): its language, how long a sign-in
//! lasts, and the people who may sign in besides the API token.

use serde::Deserialize;
use toml::Spanned;

use super::{Checker, RawConfig};

/// The console's language: every text exists in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    #[default]
    En,
    Ru,
}

/// Someone who signs in with a name and a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiUser {
    pub name: String,
    /// An argon2 PHC string (`$argon2id$v=19$…`), from `siptrack hash-password`.
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiConfig {
    /// `ui.language` = "en" | "ru" (default "en").
    pub language: Language,
    /// `ui.session_minutes` (default 480): a sign-in lasts this long.
    pub session_minutes: u64,
    /// `[[ui.users]]`: name + argon2 password hash. The API token signs in
    /// too (as `token`).
    pub users: Vec<UiUser>,
    /// `ui.sip_trace_minutes` (default 0: off): how long a call's SIP
    /// messages are kept for its ladder after its last message.
    pub sip_trace_minutes: u64,
    /// `ui.sip_trace_max_mb` (default 32): the ladders' memory in total.
    pub sip_trace_max_mb: u64,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            language: Language::En,
            session_minutes: 480,
            users: Vec::new(),
            sip_trace_minutes: 0,
            sip_trace_max_mb: 32,
        }
    }
}

#[derive(Deserialize, Default)]
pub(super) struct RawUi {
    language: Option<Spanned<String>>,
    session_minutes: Option<Spanned<i64>>,
    sip_trace_minutes: Option<Spanned<i64>>,
    sip_trace_max_mb: Option<Spanned<i64>>,
    #[serde(default)]
    users: Vec<RawUser>,
}

#[derive(Deserialize)]
struct RawUser {
    name: Option<Spanned<String>>,
    password_hash: Option<Spanned<String>>,
}

/// Whether `s` is an argon2 PHC string a password can be checked against.
pub fn check_password_hash(s: &str) -> Result<(), String> {
    let parsed = argon2::PasswordHash::new(s).map_err(|e| {
        format!("is not a PHC password hash ({e}); make one with siptrack hash-password")
    })?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        other => Err(format!(
            "is a {other} hash; only argon2 (siptrack hash-password) is accepted"
        )),
    }
}

pub(super) fn ui_config(c: &mut Checker, raw: &RawConfig) -> UiConfig {
    let u = &raw.ui;
    let language = match &u.language {
        None => Language::En,
        Some(s) => match s.get_ref().as_str() {
            "en" => Language::En,
            "ru" => Language::Ru,
            other => {
                c.err(
                    "ui.language",
                    Some(s.span()),
                    format!("\"{other}\" is not \"en\" or \"ru\""),
                );
                Language::En
            }
        },
    };
    let session_minutes = c.int("ui.session_minutes", &u.session_minutes, 480, 1..44_641);
    let mut users: Vec<UiUser> = Vec::new();
    for (i, raw_user) in u.users.iter().enumerate() {
        let key = |k: &str| format!("ui.users[{i}].{k}");
        let name = match &raw_user.name {
            Some(n) if !n.get_ref().trim().is_empty() && n.get_ref().len() <= 100 => {
                if users.iter().any(|x| x.name == n.get_ref().trim()) {
                    c.err(key("name"), Some(n.span()), "names another user already");
                }
                n.get_ref().trim().to_string()
            }
            Some(n) => {
                c.err(key("name"), Some(n.span()), "must be 1 to 100 characters");
                continue;
            }
            None => {
                let span = raw_user.password_hash.as_ref().map(|h| h.span());
                c.err(key("name"), span, "required");
                continue;
            }
        };
        let password_hash = match &raw_user.password_hash {
            Some(h) => match check_password_hash(h.get_ref()) {
                Ok(()) => h.get_ref().clone(),
                Err(m) => {
                    c.err(key("password_hash"), Some(h.span()), m);
                    continue;
                }
            },
            None => {
                let span = raw_user.name.as_ref().map(|n| n.span());
                c.err(
                    key("password_hash"),
                    span,
                    "required (siptrack hash-password)",
                );
                continue;
            }
        };
        users.push(UiUser {
            name,
            password_hash,
        });
    }
    UiConfig {
        language,
        session_minutes,
        users,
        sip_trace_minutes: c.int("ui.sip_trace_minutes", &u.sip_trace_minutes, 0, 0..10_081),
        sip_trace_max_mb: c.int("ui.sip_trace_max_mb", &u.sip_trace_max_mb, 32, 1..4097),
    }
}
