//! Typed configuration: TOML in, validated settings out. Every error names
//! the key (and line) it is about, so `siptrack check-config` can list them
//! all at once.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use std::collections::{BTreeMap, HashMap};

use crate::crm::amocrm::AmoSettings;
use crate::crm::bitrix24::{webhook_user, BitrixSettings, Entity as BitrixEntity};
use crate::crm::outbox::{Plan as CrmPlan, Retry as CrmRetry};
use crate::crm::payload::{parse_timezone, Format as CrmFormat};
use crate::crm::status_hook::{
    amo_default_map, bitrix_default_map, AmoHook, BitrixHook, StatusHooks,
};
use crate::leads::dedup::{Action, ClientCheck, Group, Settings as DedupSettings};
use crate::phone::{normalize, Normalized, PhoneRules};
use crate::proxy::Transport;
use crate::rewrite::{template, RewriteSettings, Template};
use crate::tracking::pools::PoolConfig;
pub use crate::transport::tcp::TcpLimits;

mod keys;
mod media;
pub mod paths;
mod ui;

pub use media::MediaConfig;
pub use ui::{check_password_hash, Language, UiConfig, UiUser};

/// A config file's text, or the one error saying why it cannot be read.
fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            key: String::new(),
            line: None,
            message: format!("cannot read: {e}"),
        }])
    })
}

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
            // The file as a whole (it cannot be read): its path is what
            // every error is printed after.
            None if self.key.is_empty() => write!(f, "{}", self.message),
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
    /// `[rewrite]`, with `tracking.normalize_caller`,
    /// `tracking.send_sip_address_instead_of_dialed_number` and `[phone]`.
    pub rewrite: RewriteSettings,
    pub shutdown: ShutdownConfig,
    pub http: HttpConfig,
    pub storage: StorageConfig,
    pub leads: LeadsConfig,
    pub crm: CrmDelivery,
    /// `[media]` and the recording switches of `[tracking]` (SPEC M-1, M-2).
    pub media: MediaConfig,
    /// `[ui]`: the web console.
    pub ui: UiConfig,
}

/// How CRM requests are delivered (SPEC C-1, C-5): `crm.url`,
/// `crm.call_start_url`, `crm.call_end_url`, `crm.secret`,
/// `crm.timeout_ms`, `crm.max_connections`, `[crm.retry]`.
#[derive(Debug, Clone, Default)]
pub struct CrmDelivery {
    pub url: Option<String>,
    pub call_start_url: Option<String>,
    pub call_end_url: Option<String>,
    pub secret: String,
    pub timeout_ms: u64,
    pub max_connections: usize,
    pub retry: CrmRetry,
    /// `crm.kind = "amocrm"`: `[crm.amocrm]`.
    pub amocrm: Option<AmoSettings>,
    /// `crm.kind = "bitrix24"`: `[crm.bitrix24]`.
    pub bitrix24: Option<BitrixSettings>,
    /// The CRM's status webhooks that are switched on (a token set).
    pub status_hooks: StatusHooks,
}

/// `[dedup]`, `[dedup.client]`, `[status_groups]`, the call switches of
/// `[tracking]` and `crm.new_deal_status` (SPEC L-1 … L-5).
#[derive(Debug, Clone)]
pub struct LeadsConfig {
    pub dedup: DedupSettings,
    /// CRM status name → group; the group names themselves always map.
    pub status_groups: HashMap<String, Group>,
    pub new_deal_status: String,
    pub max_call_seconds: u64,
    /// Which CRM requests a decision or a call queues, and their format
    /// (`crm.kind`, the call URLs, `crm.phone_format`, `crm.timezone`,
    /// `crm.allow_html`: SPEC C-1 … C-4).
    pub crm: CrmPlan,
}

impl LeadsConfig {
    /// The group of a status, None when the status is unknown.
    pub fn group_of(&self, status: &str) -> Option<Group> {
        self.status_groups
            .get(status)
            .copied()
            .or_else(|| Group::parse(status))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// What out-of-dialog requests from outside `sip.trusted_sources` get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Untrusted {
    /// One small stateless 403, rate-limited per source.
    #[default]
    Reject,
    /// Nothing (scanners learn nothing).
    Drop,
}

#[derive(Debug, Clone)]
pub struct SipConfig {
    pub listen: Vec<ListenAddr>,
    pub trusted_sources: Vec<IpNet>,
    pub max_message_bytes: usize,
    pub udp_recv_buffer_bytes: usize,
    pub route_secret: Option<String>,
    pub advertised_host: Option<String>,
    pub untrusted: Untrusted,
    pub timers: Timers,
    /// `sip.tcp_*`: connection caps, timeouts, write queue bound.
    pub tcp: TcpLimits,
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
    /// `[[tracking.numbers]]`, numbers normalised.
    pub numbers: Vec<StaticNumber>,
    /// `[[tracking.pools]]`, numbers normalised, segments parsed.
    pub pools: Vec<PoolConfig>,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `sqlite:<path>` (relative to the working directory) or
    /// `postgres://…`.
    pub url: String,
    /// Where calls wait when the database does not take them (default:
    /// `siptrack-calls.journal` next to the SQLite file; with PostgreSQL
    /// `data/siptrack-calls.journal`).
    pub journal: Option<String>,
    /// PostgreSQL: connections per node, and the longest a statement may
    /// run (`storage.pool_size`, `storage.statement_timeout_ms`).
    pub postgres: crate::store::postgres::PgOptions,
    /// This node among those sharing the database (`storage.node_name`);
    /// None: the host's name (`node_name`).
    pub node_name: Option<String>,
}

impl StorageConfig {
    /// The journal file: `storage.journal`, else next to the database.
    pub fn journal_path(&self) -> std::path::PathBuf {
        if let Some(j) = &self.journal {
            return std::path::PathBuf::from(j);
        }
        let db = self
            .sqlite_path()
            .unwrap_or_else(|| std::path::PathBuf::from("data/siptrack.db"));
        db.with_file_name("siptrack-calls.journal")
    }

    /// This node's name: `storage.node_name`, else the host's name,
    /// which stays the same across restarts (and a changed listen port)
    /// and differs between nodes on different hosts.
    pub fn node_name(&self, hostname: &str) -> String {
        match &self.node_name {
            Some(n) => n.clone(),
            None if hostname.is_empty() => "siptrack".into(),
            None => hostname.chars().filter(|c| *c != '/').take(64).collect(),
        }
    }

    /// The database as messages name it: the SQLite file's absolute
    /// path, or the PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match self.sqlite_path() {
            Some(p) => p.display().to_string(),
            None => crate::store::postgres::redact(&self.url),
        }
    }

    /// The database file, resolved against the working directory (what
    /// `check-config` and the read-only commands name).
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        let path = std::path::Path::new(crate::store::sqlite::file_of(&self.url)?);
        Some(if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        })
    }
}

/// A static tracking number (SPEC T-1): one channel, one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNumber {
    /// Normalised (T-5).
    pub number: String,
    pub destination: Destination,
    /// The destination was given as a phone number: the PBX is asked to
    /// call that number (`destination.user`) rather than the dialed one.
    pub phone_destination: bool,
    pub marker: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    pub drain_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer token of the API (SPEC C-6); None: the API refuses every
    /// authenticated call.
    pub token: Option<String>,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// A request's header section must arrive within this time, and an idle
    /// keep-alive connection is closed after it.
    pub header_timeout_seconds: u64,
    /// `http.public_url`: where browsers and CRMs reach this API (the base
    /// of recording links), without a trailing slash; None: `http://` and
    /// the listen address.
    pub public_url: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    sip: RawSip,
    #[serde(default)]
    tracking: RawTracking,
    #[serde(default)]
    rewrite: RawRewrite,
    #[serde(default)]
    phone: RawPhone,
    #[serde(default)]
    shutdown: RawShutdown,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    dedup: RawDedup,
    #[serde(default)]
    status_groups: toml::Table,
    #[serde(default)]
    crm: RawCrm,
    #[serde(default)]
    media: media::RawMedia,
    #[serde(default)]
    ui: ui::RawUi,
}

#[derive(Deserialize, Default)]
struct RawDedup {
    check_in_progress: Option<bool>,
    append_to_duplicates: Option<bool>,
    client: Option<RawClientCheck>,
}

#[derive(Deserialize)]
struct RawClientCheck {
    enabled: Option<bool>,
    by_phone: Option<bool>,
    by_email: Option<bool>,
    period_days: Option<Spanned<i64>>,
    action: Option<Spanned<String>>,
    groups: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
struct RawCrm {
    kind: Option<Spanned<String>>,
    new_deal_status: Option<String>,
    phone_format: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    allow_html: Option<bool>,
    url: Option<Spanned<String>>,
    secret: Option<Spanned<String>>,
    call_start_url: Option<Spanned<String>>,
    call_end_url: Option<Spanned<String>>,
    timeout_ms: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    amocrm: RawAmo,
    #[serde(default)]
    bitrix24: RawBitrix,
}

#[derive(Deserialize, Default)]
struct RawBitrix {
    webhook_url: Option<Spanned<String>>,
    entity: Option<Spanned<String>>,
    responsible_user_id: Option<Spanned<i64>>,
    category_id: Option<Spanned<i64>>,
    task_minutes: Option<Spanned<i64>>,
    burst: Option<Spanned<i64>>,
    requests_per_second: Option<Spanned<i64>>,
    application_token: Option<Spanned<String>>,
    stage_map: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
struct RawAmo {
    base_url: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    pipeline_id: Option<Spanned<i64>>,
    status_id: Option<Spanned<i64>>,
    responsible_user_id: Option<Spanned<i64>>,
    phone_field_id: Option<Spanned<i64>>,
    email_field_id: Option<Spanned<i64>>,
    marker_field_id: Option<Spanned<i64>>,
    lead_fields: Option<Spanned<toml::Value>>,
    task_minutes: Option<Spanned<i64>>,
    requests_per_second: Option<Spanned<i64>>,
    webhook_token: Option<Spanned<String>>,
    status_map: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
struct RawRetry {
    initial_ms: Option<Spanned<i64>>,
    max_ms: Option<Spanned<i64>>,
    max_age_hours: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
struct RawStorage {
    url: Option<Spanned<String>>,
    journal: Option<Spanned<String>>,
    pool_size: Option<Spanned<i64>>,
    statement_timeout_ms: Option<Spanned<i64>>,
    node_name: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
struct RawSip {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    trusted_sources: Option<Vec<Spanned<String>>>,
    max_message_bytes: Option<Spanned<i64>>,
    udp_recv_buffer_bytes: Option<Spanned<i64>>,
    route_secret: Option<String>,
    advertised_host: Option<String>,
    untrusted: Option<Spanned<String>>,
    tcp_max_connections: Option<Spanned<i64>>,
    tcp_max_connections_per_source: Option<Spanned<i64>>,
    tcp_idle_seconds: Option<Spanned<i64>>,
    tcp_message_timeout_seconds: Option<Spanned<i64>>,
    tcp_write_queue_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    timers: RawTimers,
}

#[derive(Deserialize, Default)]
struct RawTimers {
    t1_ms: Option<Spanned<i64>>,
    t2_ms: Option<Spanned<i64>>,
    t4_ms: Option<Spanned<i64>>,
    timer_c_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
struct RawTracking {
    default_destination: Option<Spanned<String>>,
    #[serde(default)]
    numbers: Vec<RawNumber>,
    #[serde(default)]
    pools: Vec<RawPool>,
    normalize_caller: Option<bool>,
    send_sip_address_instead_of_dialed_number: Option<bool>,
    max_call_seconds: Option<Spanned<i64>>,
    create_deals_from_calls: Option<bool>,
    create_deal_even_if_client_exists: Option<bool>,
    create_deal_even_if_in_progress: Option<bool>,
    record_calls: Option<bool>,
    send_recording_to_crm: Option<bool>,
    recording_links_require_auth: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
struct RawNumber {
    number: Spanned<String>,
    destination: Spanned<String>,
    marker: Option<String>,
    source: Option<String>,
}

#[derive(Deserialize)]
struct RawPool {
    name: Spanned<String>,
    numbers: Spanned<Vec<Spanned<String>>>,
    destination: Spanned<String>,
    hold_seconds: Option<Spanned<i64>>,
    segment: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
struct RawRewrite {
    phone_header: Option<Spanned<String>>,
    marker_header: Option<Spanned<String>>,
    visit_header: Option<Spanned<String>>,
    extra_headers: Option<Spanned<toml::Value>>,
    number_substitution: Option<Spanned<toml::Value>>,
    sip_login_map: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
struct RawPhone {
    country_code: Option<Spanned<String>>,
    trunk_prefix: Option<Spanned<String>>,
    national_length: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
struct RawShutdown {
    drain_seconds: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
struct RawHttp {
    listen: Option<Spanned<String>>,
    token: Option<String>,
    max_connections: Option<Spanned<i64>>,
    header_timeout_seconds: Option<Spanned<i64>>,
    public_url: Option<Spanned<String>>,
}

/// Collects errors with the line numbers of their spans.
struct Checker<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    /// The errors in file order (those without a line last).
    fn into_errors(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        ConfigErrors(self.errors)
    }
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
    /// A map given as a TOML table or as the compact string
    /// `"a=b, c=d"` (SPEC T-3, T-4), in the order written.
    fn pairs(&mut self, key: &str, v: &Option<Spanned<toml::Value>>) -> Vec<(String, String)> {
        let Some(v) = v else { return Vec::new() };
        let span = v.span();
        let mut out = Vec::new();
        match v.get_ref() {
            toml::Value::Table(t) => {
                for (k, val) in t {
                    match val {
                        toml::Value::String(s) => out.push((k.clone(), s.clone())),
                        toml::Value::Integer(n) => out.push((k.clone(), n.to_string())),
                        _ => self.err(format!("{key}.{k}"), Some(span.clone()), "must be a string"),
                    }
                }
            }
            toml::Value::String(s) => {
                for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    match item.split_once('=') {
                        Some((k, val)) if !k.trim().is_empty() => {
                            out.push((k.trim().to_string(), val.trim().to_string()))
                        }
                        _ => self.err(
                            key,
                            Some(span.clone()),
                            format!("\"{item}\" is not name=value"),
                        ),
                    }
                }
            }
            _ => self.err(
                key,
                Some(span),
                "must be a table or a string like \"a=b, c=d\"",
            ),
        }
        out
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

/// Wrong values listed at most in one run.
const MAX_TYPE_ERRORS: usize = 50;

/// Makes the line holding `offset` a comment of the same length, if it
/// is one `key = value` line (its value complete on it: brackets and
/// braces balanced); None when it is not.
fn blank_line_of(text: &mut String, offset: usize) -> Option<()> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let end = text
        .get(offset..)?
        .find('\n')
        .map_or(text.len(), |i| offset + i);
    let line = text.get(start..end)?;
    let trimmed = line.trim_start();
    let balanced =
        |open: char, close: char| line.matches(open).count() == line.matches(close).count();
    if trimmed.starts_with('[') || !line.contains('=') || !balanced('[', ']') || !balanced('{', '}')
    {
        return None;
    }
    let blank: String = std::iter::once('#')
        .chain(std::iter::repeat_n(' ', line.len().saturating_sub(1)))
        .collect();
    text.replace_range(start..end, &blank);
    Some(())
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::parse(&read(path)?)
    }

    /// [`Config::load`] for `check-config`: also whether the recordings
    /// directory and the journal can be written (a probe file made and
    /// removed), each at its key's line beside the file's other errors.
    pub fn load_checked(path: &Path) -> Result<Config, ConfigErrors> {
        Config::parse_with(&read(path)?, true)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_with(text, false)
    }

    fn parse_with(text: &str, probe_paths: bool) -> Result<Config, ConfigErrors> {
        let mut c = Checker {
            text,
            errors: Vec::new(),
        };
        // Every unknown key first, all of them (serde would stop at one);
        // then the values, so one run reports everything.
        for u in keys::unknown_keys(text, &keys::shape_of::<RawConfig>()) {
            c.err(u.key, u.span, u.message);
        }
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(first) => {
                // Not TOML, or a value of the wrong type: the checks below
                // need the typed values, so this is as far as they go. But
                // every wrong value is listed, not only the first: each one
                // found is blanked out (its line made a comment of the same
                // length, so later spans still point into `text`) and the
                // text read again (trial, 2026-12-02: an operator fixed
                // three typos in three runs).
                let mut blanked = text.to_string();
                let mut e = first;
                for _ in 0..MAX_TYPE_ERRORS {
                    let key = e
                        .span()
                        .and_then(|s| keys::key_at(&blanked, s.start))
                        .unwrap_or_else(|| "toml".into());
                    // serde names Rust types; an operator wants TOML words.
                    let message = e
                        .message()
                        .replace("expected i64", "expected an integer")
                        .replace("expected a boolean", "expected true or false");
                    c.err(key, e.span(), message);
                    let Some(next) = e
                        .span()
                        .and_then(|s| blank_line_of(&mut blanked, s.start))
                        .and_then(|()| toml::from_str::<RawConfig>(&blanked).err())
                    else {
                        break;
                    };
                    // A key blanked out that had to be there is no error
                    // of `text`.
                    if next.span().is_none() || next.message().contains("missing field") {
                        break;
                    }
                    e = next;
                }
                return Err(c.into_errors());
            }
        };

        let mut listen = Vec::new();
        // Each parsed address's index in `sip.listen`, for messages.
        let mut listen_index = Vec::new();
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
                        // The second bind of one socket fails at start
                        // with "Address already in use", as if another
                        // program held it (trial, 2026-12-02).
                        Ok(l) => match list.get_ref()[..i].iter().enumerate().find_map(|(j, e)| {
                            let earlier = parse_listen(e.get_ref()).ok()?;
                            binds_clash(&earlier, &l).then_some((j, earlier == l))
                        }) {
                            Some((first, true)) => c.err(
                                format!("sip.listen[{i}]"),
                                Some(item.span()),
                                format!(
                                    "repeats sip.listen[{first}] (\"{}\"): remove one",
                                    item.get_ref()
                                ),
                            ),
                            Some((first, false)) => c.err(
                                format!("sip.listen[{i}]"),
                                Some(item.span()),
                                format!(
                                    "\"{}\" takes the port of sip.listen[{first}] (a wildcard and an address of the same family): both cannot be bound",
                                    item.get_ref()
                                ),
                            ),
                            None => {
                                listen.push(l);
                                listen_index.push(i);
                            }
                        },
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
        let advertised_host = raw.sip.advertised_host.clone().filter(|s| !s.is_empty());
        if advertised_host.is_none() {
            let items = raw.sip.listen.iter().flat_map(|v| v.get_ref());
            for (i, item) in items.enumerate() {
                let Ok(l) = parse_listen(item.get_ref()) else {
                    continue;
                };
                if l.addr.ip().is_unspecified() {
                    c.err(
                        format!("sip.listen[{i}]"),
                        Some(item.span()),
                        format!(
                            "{} is not an address peers can reach; it would be written into Via and Record-Route: set sip.advertised_host",
                            l.addr.ip()
                        ),
                    );
                }
            }
        }
        let untrusted = match &raw.sip.untrusted {
            None => Untrusted::Reject,
            Some(v) => match v.get_ref().as_str() {
                "reject" => Untrusted::Reject,
                "drop" => Untrusted::Drop,
                other => {
                    c.err(
                        "sip.untrusted",
                        Some(v.span()),
                        format!("\"{other}\" is neither \"reject\" nor \"drop\""),
                    );
                    Untrusted::Reject
                }
            },
        };
        let tcp = tcp_limits(&mut c, &raw.sip, max_message_bytes);
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
        let rewrite = rewrite_settings(&mut c, &raw);
        let numbers = static_numbers(
            &mut c,
            &raw.tracking,
            default_destination.as_ref(),
            &rewrite,
        );
        let pools = pools(
            &mut c,
            &raw.tracking,
            default_destination.as_ref(),
            &rewrite,
            &numbers,
        );
        let leads = leads_config(&mut c, &raw, &rewrite.phone);
        let crm = crm_delivery(&mut c, &raw.crm, &leads);
        let media = media::media_config(&mut c, &raw);
        let ui = ui::ui_config(&mut c, &raw);
        let storage_url = match &raw.storage.url {
            None => "sqlite:data/siptrack.db".to_string(),
            Some(s) if s.get_ref().starts_with("sqlite:") => s.get_ref().clone(),
            Some(s) if crate::store::postgres::is_postgres_url(s.get_ref()) => {
                if let Err(e) = s.get_ref().parse::<postgres::Config>() {
                    c.err(
                        "storage.url",
                        Some(s.span()),
                        format!(
                            "\"{}\" is not a PostgreSQL URL like postgres://user:password@host:5432/siptrack ({e})",
                            crate::store::postgres::redact(s.get_ref())
                        ),
                    );
                }
                s.get_ref().clone()
            }
            Some(s) => {
                c.err(
                    "storage.url",
                    Some(s.span()),
                    format!(
                        "\"{}\": expected sqlite:<path> or postgres://user:password@host:port/database",
                        crate::store::postgres::redact(s.get_ref())
                    ),
                );
                String::new()
            }
        };
        let pool_size = c.int("storage.pool_size", &raw.storage.pool_size, 8, 1..257) as usize;
        let node_name = raw.storage.node_name.as_ref().map(|n| {
            let name = n.get_ref();
            if let Some(why) = node_name_problem(name) {
                c.err("storage.node_name", Some(n.span()), why);
            }
            name.clone()
        });
        let statement_timeout_ms = c.int(
            "storage.statement_timeout_ms",
            &raw.storage.statement_timeout_ms,
            5_000,
            100..600_001,
        );
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
        // HTTP is TCP: a SIP TCP socket on the same port (the same
        // address, or either a wildcard) cannot both be bound.
        if let Some((i, _)) = listen.iter().enumerate().find(|(_, l)| {
            l.transport != Transport::Udp
                && ports_clash(l.addr.port(), http_listen.port())
                && (l.addr.ip() == http_listen.ip()
                    || l.addr.ip().is_unspecified()
                    || http_listen.ip().is_unspecified())
        }) {
            c.err(
                "http.listen",
                raw.http.listen.as_ref().map(|s| s.span()),
                format!(
                    "{http_listen} takes the TCP port of sip.listen[{}] ({}): give HTTP another port",
                    listen_index.get(i).copied().unwrap_or(i),
                    listen[i].addr
                ),
            );
        }
        let http_max_connections = c.int(
            "http.max_connections",
            &raw.http.max_connections,
            256,
            1..65_536,
        ) as usize;
        let http_header_timeout_seconds = c.int(
            "http.header_timeout_seconds",
            &raw.http.header_timeout_seconds,
            10,
            1..3601,
        );
        let public_url = public_url(&mut c, &raw.http.public_url);
        let storage = StorageConfig {
            url: storage_url,
            journal: raw.storage.journal.as_ref().map(|j| j.get_ref().clone()),
            postgres: crate::store::postgres::PgOptions {
                pool_size,
                statement_timeout_ms,
            },
            node_name,
        };
        if probe_paths {
            media::probe_recordings_dir(&mut c, &raw, &media);
            if let Some(p) = paths::journal_problem(&storage.journal_path()) {
                // The default journal sits next to the database file.
                let span = raw.storage.journal.as_ref().or(raw.storage.url.as_ref());
                let (key, what) = match raw.storage.journal {
                    Some(_) => ("storage.journal", ""),
                    None => ("storage.url", "the journal next to the database: "),
                };
                c.err(
                    key,
                    span.map(Spanned::span),
                    format!("{what}{p} (calls the database refuses would be held in memory only; set storage.journal)"),
                );
            }
        }

        if !c.errors.is_empty() {
            return Err(c.into_errors());
        }
        Ok(Config {
            sip: SipConfig {
                listen,
                trusted_sources,
                max_message_bytes,
                udp_recv_buffer_bytes,
                route_secret: raw.sip.route_secret.filter(|s| !s.is_empty()),
                advertised_host,
                untrusted,
                timers,
                tcp,
            },
            tracking: TrackingConfig {
                default_destination,
                numbers,
                pools,
            },
            storage,
            leads,
            crm,
            media,
            ui,
            rewrite,
            shutdown: ShutdownConfig { drain_seconds },
            http: HttpConfig {
                listen: http_listen,
                token: raw.http.token.filter(|t| !t.is_empty()),
                max_connections: http_max_connections,
                header_timeout_seconds: http_header_timeout_seconds,
                public_url,
            },
        })
    }
}

/// `http.public_url`: an absolute http(s) URL with a host, no query.
fn public_url(c: &mut Checker, v: &Option<Spanned<String>>) -> Option<String> {
    let v = v.as_ref()?;
    let u = v.get_ref().trim();
    if u.is_empty() {
        return None;
    }
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !u.contains(['?', '#', ' ']) => {
            Some(u.trim_end_matches('/').to_string())
        }
        _ => {
            c.err(
                "http.public_url",
                Some(v.span()),
                format!("\"{u}\" is not a URL like https://calls.example.com (no query)"),
            );
            None
        }
    }
}

/// Why `name` cannot name a node, if it cannot: it prefixes the node's
/// run ids (`<node>/<run>`), so no `/`; printable, at most 64 bytes.
fn node_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 64 {
        return Some("must be 1 to 64 bytes long".into());
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Some(format!(
            "\"{}\": '/' and control characters are not allowed",
            name.escape_debug()
        ));
    }
    // "east-1 " and "east-1" would be two nodes that read as one in the
    // logs and `/metrics`; all spaces reads as no name at all.
    if name.trim() != name {
        return Some(format!(
            "\"{}\": spaces at the start or the end are not allowed",
            name.escape_debug()
        ));
    }
    None
}

/// SIP headers the forwarded INVITE carries from the proxy (its Via,
/// Record-Route, Max-Forwards, the rewritten Request-URI's To) or from the
/// caller unchanged: an extra header of one of these names (long or
/// compact form) would make a second, contradicting copy.
const SIP_HEADERS_WRITTEN: &[&str] = &[
    "Via",
    "v",
    "From",
    "f",
    "To",
    "t",
    "Call-ID",
    "i",
    "CSeq",
    "Contact",
    "m",
    "Route",
    "Record-Route",
    "Max-Forwards",
    "Content-Length",
    "l",
];

fn tcp_limits(c: &mut Checker, raw: &RawSip, max_message_bytes: usize) -> TcpLimits {
    let d = TcpLimits::default();
    let mut l = TcpLimits {
        max_connections: c.int(
            "sip.tcp_max_connections",
            &raw.tcp_max_connections,
            d.max_connections as u64,
            1..1_000_001,
        ) as usize,
        max_per_source: c.int(
            "sip.tcp_max_connections_per_source",
            &raw.tcp_max_connections_per_source,
            d.max_per_source as u64,
            1..1_000_001,
        ) as usize,
        idle_seconds: c.int(
            "sip.tcp_idle_seconds",
            &raw.tcp_idle_seconds,
            d.idle_seconds,
            1..86_401,
        ),
        message_timeout_seconds: c.int(
            "sip.tcp_message_timeout_seconds",
            &raw.tcp_message_timeout_seconds,
            d.message_timeout_seconds,
            1..3601,
        ),
        write_queue_bytes: d.write_queue_bytes,
    };
    if let Some(v) = &raw.tcp_write_queue_bytes {
        let n = *v.get_ref();
        if n < max_message_bytes as i64 || n >= 1 << 31 {
            c.err(
                "sip.tcp_write_queue_bytes",
                Some(v.span()),
                format!(
                    "must be between sip.max_message_bytes ({max_message_bytes}: the queue must hold one message) and {}",
                    (1u64 << 31) - 1
                ),
            );
        } else {
            l.write_queue_bytes = n as usize;
        }
    }
    l
}

fn rewrite_settings(c: &mut Checker, raw: &RawConfig) -> RewriteSettings {
    let d = RewriteSettings::default();
    let p = &raw.phone;
    let mut phone = PhoneRules::default();
    if p.country_code.is_some() || p.trunk_prefix.is_some() {
        let digits = |c: &mut Checker, key: &str, v: &Option<Spanned<String>>, dflt: &str| match v {
            None => dflt.to_string(),
            Some(s) => {
                let t = s.get_ref().trim();
                if t.bytes().all(|b| b.is_ascii_digit()) && t.len() <= 4 {
                    t.to_string()
                } else {
                    c.err(
                        key,
                        Some(s.span()),
                        format!("\"{t}\" must be up to 4 digits"),
                    );
                    dflt.to_string()
                }
            }
        };
        let cc = digits(
            c,
            "phone.country_code",
            &p.country_code,
            &phone.country_code,
        );
        let trunk = digits(c, "phone.trunk_prefix", &p.trunk_prefix, "");
        phone = PhoneRules::new(&cc, &trunk);
    }
    if p.national_length.is_some() {
        phone.national_length =
            c.int("phone.national_length", &p.national_length, 10, 0..16) as usize;
    }

    let r = &raw.rewrite;
    let mut name = |key: &str, v: &Option<Spanned<String>>, dflt: &str| match v {
        None => dflt.to_string(),
        // Empty: that header is not sent.
        Some(s) if s.get_ref().is_empty() => String::new(),
        Some(s) => match template::check_header_name(s.get_ref()) {
            Ok(())
                if SIP_HEADERS_WRITTEN
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(s.get_ref())) =>
            {
                c.err(
                    key,
                    Some(s.span()),
                    "siptrack writes this header itself (a SIP header of the forwarded INVITE); pick another name",
                );
                dflt.to_string()
            }
            Ok(()) => s.get_ref().clone(),
            Err(m) => {
                c.err(key, Some(s.span()), m);
                dflt.to_string()
            }
        },
    };
    let phone_header = name("rewrite.phone_header", &r.phone_header, &d.phone_header);
    let marker_header = name("rewrite.marker_header", &r.marker_header, &d.marker_header);
    let visit_header = name("rewrite.visit_header", &r.visit_header, &d.visit_header);

    let span = |v: &Option<Spanned<toml::Value>>| v.as_ref().map(|s| s.span());
    let mut extra_headers: Vec<(String, Template)> = Vec::new();
    for (k, v) in c.pairs("rewrite.extra_headers", &r.extra_headers) {
        let key = format!("rewrite.extra_headers.{k}");
        if let Err(m) = template::check_header_name(&k) {
            c.err(&key, span(&r.extra_headers), m);
            continue;
        }
        // A header siptrack writes itself would reach the PBX twice.
        let tracking = [
            ("rewrite.phone_header", &phone_header),
            ("rewrite.marker_header", &marker_header),
            ("rewrite.visit_header", &visit_header),
        ];
        if let Some((which, _)) = tracking
            .iter()
            .find(|(_, n)| !n.is_empty() && n.eq_ignore_ascii_case(&k))
        {
            c.err(
                &key,
                span(&r.extra_headers),
                format!("siptrack writes this header itself ({which}); pick another name"),
            );
            continue;
        }
        if SIP_HEADERS_WRITTEN
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&k))
        {
            c.err(
                &key,
                span(&r.extra_headers),
                "siptrack writes this header itself (a SIP header of the forwarded INVITE); pick another name",
            );
            continue;
        }
        if extra_headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(&k))
        {
            c.err(&key, span(&r.extra_headers), "header given twice");
            continue;
        }
        match Template::parse(&v) {
            Ok(t) => extra_headers.push((k, t)),
            Err(m) => c.err(&key, span(&r.extra_headers), m),
        }
    }
    let mut number_substitution = HashMap::new();
    for (k, v) in c.pairs("rewrite.number_substitution", &r.number_substitution) {
        let key = format!("rewrite.number_substitution.{k}");
        match (normalize(&k, &phone), normalize(&v, &phone)) {
            (Normalized::Number(from), Normalized::Number(to)) => {
                if number_substitution.insert(from, to).is_some() {
                    c.err(&key, span(&r.number_substitution), "number given twice");
                }
            }
            _ => c.err(
                &key,
                span(&r.number_substitution),
                format!("\"{k}={v}\": both sides must be phone numbers"),
            ),
        }
    }
    let mut sip_login_map = HashMap::new();
    for (k, v) in c.pairs("rewrite.sip_login_map", &r.sip_login_map) {
        let ok = |s: &str| !s.is_empty() && crate::sip::chars::is_user_str(s.as_bytes());
        if ok(&k) && ok(&v) {
            sip_login_map.insert(k, v);
        } else {
            c.err(
                format!("rewrite.sip_login_map.{k}"),
                span(&r.sip_login_map),
                format!("\"{k}={v}\": both sides must be SIP user parts"),
            );
        }
    }
    RewriteSettings {
        phone_header,
        marker_header,
        visit_header,
        extra_headers,
        number_substitution,
        sip_login_map,
        send_sip_address: raw
            .tracking
            .send_sip_address_instead_of_dialed_number
            .unwrap_or(false),
        normalize_caller: raw.tracking.normalize_caller.unwrap_or(true),
        phone,
    }
}

fn static_numbers(
    c: &mut Checker,
    raw: &RawTracking,
    default_destination: Option<&Destination>,
    rewrite: &RewriteSettings,
) -> Vec<StaticNumber> {
    let mut out: Vec<StaticNumber> = Vec::new();
    for (i, n) in raw.numbers.iter().enumerate() {
        let key = |f: &str| format!("tracking.numbers[{i}].{f}");
        let number = match normalize(n.number.get_ref(), &rewrite.phone) {
            Normalized::Number(d) => d,
            Normalized::NotANumber(_) => {
                c.err(
                    key("number"),
                    Some(n.number.span()),
                    format!("\"{}\" is not a phone number", n.number.get_ref()),
                );
                continue;
            }
        };
        if out.iter().any(|o| o.number == number) {
            c.err(
                key("number"),
                Some(n.number.span()),
                format!("{number} is listed twice"),
            );
            continue;
        }
        let Some((destination, phone_destination)) = number_destination(
            c,
            &key("destination"),
            &n.destination,
            default_destination,
            rewrite,
        ) else {
            continue;
        };
        out.push(StaticNumber {
            number,
            destination,
            phone_destination,
            marker: n.marker.clone().filter(|m| !m.is_empty()),
            source: n.source.clone().filter(|m| !m.is_empty()),
        });
    }
    out
}

fn leads_config(c: &mut Checker, raw: &RawConfig, phone: &PhoneRules) -> LeadsConfig {
    let d = DedupSettings::default();
    let mut client = ClientCheck::default();
    if let Some(rc) = &raw.dedup.client {
        client.enabled = rc.enabled.unwrap_or(true);
        client.by_phone = rc.by_phone.unwrap_or(true);
        client.by_email = rc.by_email.unwrap_or(true);
        client.period_days = c.int("dedup.client.period_days", &rc.period_days, 0, 0..3651) as i64;
        if let Some(a) = &rc.action {
            client.action = match a.get_ref().as_str() {
                "task" => Action::Task,
                "comment" => Action::Comment,
                other => {
                    c.err(
                        "dedup.client.action",
                        Some(a.span()),
                        format!("\"{other}\" is not task or comment"),
                    );
                    Action::Comment
                }
            };
        }
        if let Some(groups) = &rc.groups {
            client.groups.clear();
            for (i, g) in groups.iter().enumerate() {
                match Group::parse(g.get_ref()) {
                    Some(g) => client.groups.push(g),
                    None => c.err(
                        format!("dedup.client.groups[{i}]"),
                        Some(g.span()),
                        format!(
                            "\"{}\" is not a status group (not_counted, in_progress, paid, cancelled)",
                            g.get_ref()
                        ),
                    ),
                }
            }
        }
        if !client.by_phone && !client.by_email && client.enabled {
            c.err(
                "dedup.client",
                None,
                "by_phone and by_email are both off: nothing to match on",
            );
        }
    }
    let t = &raw.tracking;
    let dedup = DedupSettings {
        check_in_progress: raw.dedup.check_in_progress.unwrap_or(d.check_in_progress),
        append_to_duplicates: raw
            .dedup
            .append_to_duplicates
            .unwrap_or(d.append_to_duplicates),
        client,
        create_deals_from_calls: t
            .create_deals_from_calls
            .unwrap_or(d.create_deals_from_calls),
        create_deal_even_if_client_exists: t
            .create_deal_even_if_client_exists
            .unwrap_or(d.create_deal_even_if_client_exists),
        create_deal_even_if_in_progress: t
            .create_deal_even_if_in_progress
            .unwrap_or(d.create_deal_even_if_in_progress),
    };
    let mut status_groups = HashMap::new();
    for (status, g) in &raw.status_groups {
        match g.as_str().and_then(Group::parse) {
            Some(g) => {
                status_groups.insert(status.clone(), g);
            }
            None => c.err(
                format!("status_groups.{status}"),
                None,
                format!("{g} is not a status group (not_counted, in_progress, paid, cancelled)"),
            ),
        }
    }
    // (lead requests, a CRM adapter that records calls itself)
    let (lead_hooks, adapter) = match &raw.crm.kind {
        None => (false, false),
        Some(k) => match k.get_ref().as_str() {
            "local" => (false, false),
            "webhook" => (true, false),
            "amocrm" | "bitrix24" => (true, true),
            other => {
                c.err(
                    "crm.kind",
                    Some(k.span()),
                    format!("\"{other}\": must be local, webhook, amocrm or bitrix24"),
                );
                (false, false)
            }
        },
    };
    let d = CrmFormat::default();
    let phone_format = match &raw.crm.phone_format {
        None => d.phone_format.clone(),
        Some(f) if !f.get_ref().is_empty() && !f.get_ref().contains('X') => {
            c.err(
                "crm.phone_format",
                Some(f.span()),
                format!(
                    "\"{}\" has no X for the digits (e.g. \"8 (XXX) XXX-XX-XX\", \"+7XXXXXXXXXX\")",
                    f.get_ref()
                ),
            );
            d.phone_format.clone()
        }
        Some(f) => {
            // C-3 fills the Xs with the last digits: fewer Xs than a
            // national number has would send every CRM a cut number.
            let xs = f.get_ref().chars().filter(|&c| c == 'X').count();
            let national = phone.national_length;
            if !f.get_ref().is_empty() && national > 0 && xs < national {
                c.err(
                    "crm.phone_format",
                    Some(f.span()),
                    format!(
                        "\"{}\" has {xs} Xs, fewer than the {national} digits of a national number ([phone]): every phone would reach the CRM cut short",
                        f.get_ref()
                    ),
                );
            }
            f.get_ref().clone()
        }
    };
    let timezone = match &raw.crm.timezone {
        None => d.timezone,
        Some(t) => parse_timezone(t.get_ref()).unwrap_or_else(|m| {
            c.err("crm.timezone", Some(t.span()), m);
            d.timezone
        }),
    };
    let format = CrmFormat {
        phone_format,
        phone_rules: phone.clone(),
        timezone,
        allow_html: raw.crm.allow_html.unwrap_or(false),
    };
    let crm = CrmPlan {
        lead_hooks,
        // amoCRM and Bitrix24 record each call once it is over.
        call_start: raw.crm.call_start_url.is_some() && !adapter,
        call_end: raw.crm.call_end_url.is_some() || adapter,
        // Both adapters file a call with its client, which the lead's
        // create makes: amoCRM drops a call whose phone no contact has
        // yet, Bitrix24 binds it to the deal. So the call waits for that
        // create, even when the create is retried.
        calls_on_deals: adapter,
        format,
        // Known once the HTTP listener is bound (`server::run`).
        recording_base: String::new(),
    };
    LeadsConfig {
        crm,
        dedup,
        status_groups,
        new_deal_status: raw
            .crm
            .new_deal_status
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "new".into()),
        max_call_seconds: c.int(
            "tracking.max_call_seconds",
            &t.max_call_seconds,
            14_400,
            1..604_801,
        ),
    }
}

/// An http(s) URL of the CRM, or an error naming the key.
fn crm_url(c: &mut Checker, key: &str, v: &Option<Spanned<String>>) -> Option<String> {
    let v = v.as_ref()?;
    let url = v.get_ref().trim();
    match reqwest::Url::parse(url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
            Some(url.to_string())
        }
        _ => {
            c.err(
                key,
                Some(v.span()),
                format!("\"{url}\" is not an http:// or https:// URL"),
            );
            None
        }
    }
}

fn crm_delivery(c: &mut Checker, raw: &RawCrm, leads: &LeadsConfig) -> CrmDelivery {
    let plan = &leads.crm;
    let kind = raw.kind.as_ref().map(|k| k.get_ref().as_str());
    let is_amocrm = kind == Some("amocrm");
    let is_bitrix24 = kind == Some("bitrix24");
    let amocrm = is_amocrm.then(|| amo_settings(c, raw, plan));
    let bitrix24 = is_bitrix24.then(|| bitrix_settings(c, raw, plan));
    let status_hooks = StatusHooks {
        amocrm: amocrm
            .as_ref()
            .and_then(|_| amo_hook(c, &raw.amocrm, leads)),
        bitrix24: bitrix24
            .as_ref()
            .and_then(|s| bitrix_hook(c, &raw.bitrix24, s, leads)),
    };
    let is_amocrm = is_amocrm || is_bitrix24;
    if is_amocrm {
        let (kind, to) = if is_bitrix24 {
            ("bitrix24", "crm.bitrix24.webhook_url")
        } else {
            ("amocrm", "crm.amocrm.base_url")
        };
        for (key, v) in [
            ("crm.url", &raw.url),
            ("crm.call_start_url", &raw.call_start_url),
            ("crm.call_end_url", &raw.call_end_url),
        ] {
            if let Some(v) = v {
                c.err(
                    key,
                    Some(v.span()),
                    format!("not used with crm.kind = \"{kind}\" (deals and calls go to {to}): remove it"),
                );
            }
        }
    }
    let url = crm_url(c, "crm.url", &raw.url);
    if plan.lead_hooks && !is_amocrm && raw.url.is_none() {
        c.err(
            "crm.url",
            raw.kind.as_ref().map(|k| k.span()),
            "required with crm.kind = \"webhook\": where deals, tasks and comments are posted",
        );
    }
    let secret = raw
        .secret
        .as_ref()
        .map(|s| s.get_ref().clone())
        .unwrap_or_default();
    if plan.sends_anything() && !is_amocrm && secret.is_empty() {
        let span = raw
            .secret
            .as_ref()
            .map(|s| s.span())
            .or_else(|| raw.kind.as_ref().map(|k| k.span()));
        c.err(
            "crm.secret",
            span,
            "required (non-empty) when siptrack posts to a CRM: it signs every request (X-Siptrack-Signature)",
        );
    }
    let d = CrmRetry::default();
    let r = &raw.retry;
    let initial_ms = c.int(
        "crm.retry.initial_ms",
        &r.initial_ms,
        d.initial_ms,
        1..3_600_001,
    );
    let max_ms = c.int("crm.retry.max_ms", &r.max_ms, d.max_ms, 1..86_400_001);
    if let Some(m) = &r.max_ms {
        if (*m.get_ref() as u64) < initial_ms {
            c.err(
                "crm.retry.max_ms",
                Some(m.span()),
                format!("must be at least crm.retry.initial_ms ({initial_ms})"),
            );
        }
    }
    CrmDelivery {
        url,
        call_start_url: crm_url(c, "crm.call_start_url", &raw.call_start_url),
        call_end_url: crm_url(c, "crm.call_end_url", &raw.call_end_url),
        secret,
        timeout_ms: c.int("crm.timeout_ms", &raw.timeout_ms, 10_000, 1..600_001),
        max_connections: c.int("crm.max_connections", &raw.max_connections, 16, 1..1025) as usize,
        retry: CrmRetry {
            initial_ms,
            max_ms,
            max_age_hours: c.int(
                "crm.retry.max_age_hours",
                &r.max_age_hours,
                d.max_age_hours,
                1..8_761,
            ),
        },
        amocrm,
        bitrix24,
        status_hooks,
    }
}

/// A webhook's secret: one line, no spaces; None when unset.
fn hook_token(c: &mut Checker, key: &str, v: &Option<Spanned<String>>) -> Option<String> {
    let v = v.as_ref()?;
    let t = v.get_ref().trim();
    if t.len() < 16 || t.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        c.err(
            key,
            Some(v.span()),
            "must be at least 16 characters, one line, no spaces (anyone who has it can change deal statuses)",
        );
        return None;
    }
    Some(t.to_string())
}

/// A table of CRM status id = siptrack status, over `defaults`; each
/// status a group name or a `[status_groups]` key.
fn status_map(
    c: &mut Checker,
    key: &str,
    v: &Option<Spanned<toml::Value>>,
    defaults: BTreeMap<String, String>,
    leads: &LeadsConfig,
    id_ok: fn(&str) -> bool,
) -> BTreeMap<String, String> {
    let mut map = defaults;
    let Some(v) = v else { return map };
    let toml::Value::Table(t) = v.get_ref() else {
        c.err(
            key,
            Some(v.span()),
            "must be a table of the CRM's status id = a siptrack status, e.g. { \"142\" = \"paid\" }",
        );
        return map;
    };
    for (id, status) in t {
        if !id_ok(id) {
            c.err(
                format!("{key}.{id}"),
                Some(v.span()),
                format!("\"{id}\" is not a status id of this CRM"),
            );
            continue;
        }
        match status.as_str() {
            Some(st) if leads.group_of(st).is_some() => {
                map.insert(id.clone(), st.to_string());
            }
            _ => c.err(
                format!("{key}.{id}"),
                Some(v.span()),
                format!(
                    "{status} is not a status: a group (not_counted, in_progress, paid, cancelled) or a [status_groups] key"
                ),
            ),
        }
    }
    map
}

fn amo_hook(c: &mut Checker, a: &RawAmo, leads: &LeadsConfig) -> Option<AmoHook> {
    let map = status_map(
        c,
        "crm.amocrm.status_map",
        &a.status_map,
        amo_default_map(),
        leads,
        // amoCRM's status ids are numbers.
        |id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
    );
    Some(AmoHook {
        token: hook_token(c, "crm.amocrm.webhook_token", &a.webhook_token)?,
        status_map: map,
    })
}

fn bitrix_hook(
    c: &mut Checker,
    b: &RawBitrix,
    settings: &BitrixSettings,
    leads: &LeadsConfig,
) -> Option<BitrixHook> {
    let map = status_map(
        c,
        "crm.bitrix24.stage_map",
        &b.stage_map,
        bitrix_default_map(),
        leads,
        // Bitrix24's stage ids: NEW, C2:WON, UC_X1Y2Z3.
        |id| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        },
    );
    Some(BitrixHook {
        application_token: hook_token(c, "crm.bitrix24.application_token", &b.application_token)?,
        stage_map: map,
        settings: settings.clone(),
    })
}

/// `[crm.bitrix24]`, required with `crm.kind = "bitrix24"`.
fn bitrix_settings(c: &mut Checker, raw: &RawCrm, plan: &CrmPlan) -> BitrixSettings {
    let b = &raw.bitrix24;
    let kind_span = raw.kind.as_ref().map(|k| k.span());
    let d = BitrixSettings::default();
    let (webhook_url, hook_user) = match &b.webhook_url {
        None => {
            c.err(
                "crm.bitrix24.webhook_url",
                kind_span,
                "required with crm.kind = \"bitrix24\": your incoming webhook, e.g. https://mycompany.bitrix24.ru/rest/1/abcdef0123456789/",
            );
            (String::new(), None)
        }
        Some(v) => match crm_url(c, "crm.bitrix24.webhook_url", &b.webhook_url) {
            None => (String::new(), None),
            Some(u) => match webhook_user(&u) {
                Some(user) => (format!("{}/", u.trim_end_matches('/')), Some(user)),
                None => {
                    c.err(
                        "crm.bitrix24.webhook_url",
                        Some(v.span()),
                        format!("\"{u}\" is not an incoming webhook URL (https://<portal>/rest/<user id>/<secret>/)"),
                    );
                    (String::new(), None)
                }
            },
        },
    };
    let entity = match &b.entity {
        None => BitrixEntity::Deal,
        Some(e) => BitrixEntity::parse(e.get_ref()).unwrap_or_else(|| {
            c.err(
                "crm.bitrix24.entity",
                Some(e.span()),
                format!("\"{}\": must be deal or lead", e.get_ref()),
            );
            BitrixEntity::Deal
        }),
    };
    let id = |c: &mut Checker, key: &str, v: &Option<Spanned<i64>>| -> Option<u64> {
        v.as_ref()?;
        Some(c.int(key, v, 0, 1..i64::MAX as u64))
    };
    let responsible = id(
        c,
        "crm.bitrix24.responsible_user_id",
        &b.responsible_user_id,
    );
    let category_id = match (&b.category_id, entity) {
        (Some(v), BitrixEntity::Lead) => {
            c.err(
                "crm.bitrix24.category_id",
                Some(v.span()),
                "leads have no pipeline (CATEGORY_ID): remove it, or set entity = \"deal\"",
            );
            None
        }
        // 0 is the general pipeline.
        (Some(_), BitrixEntity::Deal) => Some(c.int(
            "crm.bitrix24.category_id",
            &b.category_id,
            0,
            0..i64::MAX as u64,
        )),
        (None, _) => None,
    };
    BitrixSettings {
        webhook_url,
        entity,
        user_id: responsible.or(hook_user).unwrap_or(d.user_id),
        assigned_by_id: responsible,
        category_id,
        task_minutes: c.int("crm.bitrix24.task_minutes", &b.task_minutes, 60, 1..525_601),
        burst: c.int("crm.bitrix24.burst", &b.burst, 50, 1..10_001) as u32,
        per_second: c.int(
            "crm.bitrix24.requests_per_second",
            &b.requests_per_second,
            2,
            1..101,
        ) as u32,
        timezone: plan.format.timezone,
        allow_html: plan.format.allow_html,
    }
}

/// `[crm.amocrm]`, required with `crm.kind = "amocrm"`.
fn amo_settings(c: &mut Checker, raw: &RawCrm, plan: &CrmPlan) -> AmoSettings {
    let a = &raw.amocrm;
    let kind_span = raw.kind.as_ref().map(|k| k.span());
    let base_url = match &a.base_url {
        None => {
            c.err(
                "crm.amocrm.base_url",
                kind_span.clone(),
                "required with crm.kind = \"amocrm\": your account's address, e.g. https://mycompany.amocrm.ru",
            );
            String::new()
        }
        Some(v) => match crm_url(c, "crm.amocrm.base_url", &a.base_url) {
            // siptrack adds `/api/v4/…` itself: an address copied with
            // the API's path made every request `/api/v4/api/v4/…`, a 404
            // that named nothing of the config (trial, 2026-12-03).
            Some(u) if reqwest::Url::parse(&u).is_ok_and(|p| p.path() != "/") => {
                c.err(
                    "crm.amocrm.base_url",
                    Some(v.span()),
                    format!("\"{u}\" has a path: give the account's address alone, e.g. https://mycompany.amocrm.ru (siptrack adds /api/v4/…)"),
                );
                String::new()
            }
            Some(u) => u.trim_end_matches('/').to_string(),
            None => String::new(),
        },
    };
    let token = a
        .token
        .as_ref()
        .map(|t| t.get_ref().trim().to_string())
        .unwrap_or_default();
    if token.is_empty()
        || token
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.err(
            "crm.amocrm.token",
            a.token.as_ref().map(|t| t.span()).or(kind_span.clone()),
            "required: the long-lived token of an amoCRM integration (one line, no spaces)",
        );
    }
    let id = |c: &mut Checker, key: &str, v: &Option<Spanned<i64>>| -> Option<u64> {
        v.as_ref()?;
        Some(c.int(key, v, 0, 1..i64::MAX as u64))
    };
    let required = |c: &mut Checker, key: &str, v: &Option<Spanned<i64>>, what: &str| -> u64 {
        if v.is_none() {
            c.err(
                key,
                kind_span.clone(),
                format!("required with crm.kind = \"amocrm\": {what}"),
            );
        }
        c.int(key, v, 0, 1..i64::MAX as u64)
    };
    let phone_field_id = required(
        c,
        "crm.amocrm.phone_field_id",
        &a.phone_field_id,
        "the id of the contacts' Phone field",
    );
    let marker_field_id = required(
        c,
        "crm.amocrm.marker_field_id",
        &a.marker_field_id,
        "the id of a text field of leads where siptrack writes its key (a retried create finds its lead by it)",
    );
    let mut lead_fields = std::collections::BTreeMap::new();
    if let Some(v) = &a.lead_fields {
        match v.get_ref() {
            toml::Value::Table(t) => {
                for (name, id) in t {
                    let key = format!("crm.amocrm.lead_fields.{name}");
                    if !crate::tracking::VISIT_FIELDS.contains(&name.as_str()) {
                        c.err(
                            key,
                            Some(v.span()),
                            format!(
                                "\"{name}\" is not a visit field ({})",
                                crate::tracking::VISIT_FIELDS.join(", ")
                            ),
                        );
                        continue;
                    }
                    match id.as_integer() {
                        Some(n) if n > 0 => {
                            lead_fields.insert(name.clone(), n as u64);
                        }
                        _ => c.err(
                            key,
                            Some(v.span()),
                            "must be a custom field id (a positive integer)",
                        ),
                    }
                }
            }
            _ => c.err(
                "crm.amocrm.lead_fields",
                Some(v.span()),
                "must be a table of visit field = custom field id, e.g. { utm_source = 123456 }",
            ),
        }
    }
    AmoSettings {
        base_url,
        token,
        pipeline_id: id(c, "crm.amocrm.pipeline_id", &a.pipeline_id),
        status_id: id(c, "crm.amocrm.status_id", &a.status_id),
        responsible_user_id: id(c, "crm.amocrm.responsible_user_id", &a.responsible_user_id),
        phone_field_id,
        email_field_id: id(c, "crm.amocrm.email_field_id", &a.email_field_id),
        marker_field_id,
        lead_fields,
        task_minutes: c.int("crm.amocrm.task_minutes", &a.task_minutes, 60, 1..525_601),
        requests_per_second: c.int(
            "crm.amocrm.requests_per_second",
            &a.requests_per_second,
            7,
            1..101,
        ) as u32,
        utc_offset_seconds: plan.format.timezone.local_minus_utc(),
        phone_rules: plan.format.phone_rules.clone(),
        allow_html: plan.format.allow_html,
    }
}

/// A destination written as a SIP URI or as a phone number (called
/// through the default destination, the PBX).
fn number_destination(
    c: &mut Checker,
    key: &str,
    v: &Spanned<String>,
    default_destination: Option<&Destination>,
    rewrite: &RewriteSettings,
) -> Option<(Destination, bool)> {
    let text = v.get_ref().trim();
    if crate::sip::uri::scheme_of(text.as_bytes()).is_some() {
        return match parse_destination(text) {
            Ok(d) => Some((d, false)),
            Err(m) => {
                c.err(key, Some(v.span()), m);
                None
            }
        };
    }
    match (normalize(text, &rewrite.phone), default_destination) {
        (Normalized::Number(phone), Some(pbx)) => {
            let mut d = pbx.clone();
            d.user = Some(phone);
            Some((d, true))
        }
        (Normalized::Number(_), None) => {
            c.err(
                key,
                Some(v.span()),
                "a phone number destination is called through tracking.default_destination, which is not set",
            );
            None
        }
        (Normalized::NotANumber(_), _) => {
            c.err(
                key,
                Some(v.span()),
                format!("\"{text}\" is neither a SIP URI nor a phone number"),
            );
            None
        }
    }
}

fn pools(
    c: &mut Checker,
    raw: &RawTracking,
    default_destination: Option<&Destination>,
    rewrite: &RewriteSettings,
    statics: &[StaticNumber],
) -> Vec<PoolConfig> {
    let mut out: Vec<PoolConfig> = Vec::new();
    let mut seen: HashMap<String, String> = statics
        .iter()
        .map(|n| (n.number.clone(), "a static number".to_string()))
        .collect();
    for (i, p) in raw.pools.iter().enumerate() {
        let name = p.name.get_ref().trim().to_string();
        let key = |f: &str| format!("tracking.pools[{i}].{f}");
        if name.is_empty() || out.iter().any(|o| o.name == name) {
            c.err(
                key("name"),
                Some(p.name.span()),
                format!("\"{name}\": pool names must be non-empty and unique"),
            );
            continue;
        }
        let mut numbers = Vec::new();
        for (j, n) in p.numbers.get_ref().iter().enumerate() {
            match normalize(n.get_ref(), &rewrite.phone) {
                Normalized::Number(d) => {
                    if let Some(owner) = seen.insert(d.clone(), format!("pool \"{name}\"")) {
                        c.err(
                            format!("tracking.pools[{i}].numbers[{j}]"),
                            Some(n.span()),
                            format!("{d} is already {owner}"),
                        );
                    } else {
                        numbers.push(d);
                    }
                }
                Normalized::NotANumber(_) => c.err(
                    format!("tracking.pools[{i}].numbers[{j}]"),
                    Some(n.span()),
                    format!("\"{}\" is not a phone number", n.get_ref()),
                ),
            }
        }
        if p.numbers.get_ref().is_empty() {
            c.err(
                key("numbers"),
                Some(p.numbers.span()),
                "needs at least one number",
            );
        }
        let hold_seconds = c.int(&key("hold_seconds"), &p.hold_seconds, 150, 1..86_401);
        let segment = match &p.segment {
            None => None,
            Some(v) => {
                let parsed = match v.get_ref() {
                    toml::Value::String(s) => crate::tracking::filter::parse(s),
                    other => serde_json::to_value(other)
                        .map_err(|e| crate::tracking::filter::FilterError::Json(e.to_string()))
                        .and_then(|j| crate::tracking::filter::from_value(&j)),
                };
                // Segments read visit fields; any other name is empty on
                // every visit, and the pool would silently serve nobody
                // (or everybody, under a negation).
                let parsed = parsed.map_err(|e| e.to_string()).and_then(|f| {
                    match f
                        .fields()
                        .into_iter()
                        .find(|n| !crate::tracking::VISIT_FIELDS.contains(n))
                    {
                        Some(n) => Err(format!(
                            "\"{n}\" is not a visit field ({})",
                            crate::tracking::VISIT_FIELDS.join(", ")
                        )),
                        None => Ok(f),
                    }
                });
                match parsed {
                    Ok(f) => Some(f),
                    Err(e) => {
                        c.err(
                            key("segment"),
                            Some(v.span()),
                            format!("pool \"{name}\": {e}"),
                        );
                        None
                    }
                }
            }
        };
        let Some((destination, phone_destination)) = number_destination(
            c,
            &key("destination"),
            &p.destination,
            default_destination,
            rewrite,
        ) else {
            continue;
        };
        out.push(PoolConfig {
            name,
            numbers,
            destination,
            phone_destination,
            hold_ms: hold_seconds * 1000,
            segment,
        });
    }
    out
}

/// `udp:127.0.0.1:5060`, `tcp:[::1]:5060`.
/// Whether two listen sockets cannot both be bound: the same transport
/// and port, on the same address or (same family) with either a wildcard.
fn binds_clash(a: &ListenAddr, b: &ListenAddr) -> bool {
    let (x, y) = (a.addr.ip(), b.addr.ip());
    a.transport == b.transport
        && ports_clash(a.addr.port(), b.addr.port())
        && (x == y || ((x.is_unspecified() || y.is_unspecified()) && x.is_ipv4() == y.is_ipv4()))
}

/// Two binds of these ports take the same one: port 0 is a free port
/// the kernel picks at each bind, so it clashes with nothing.
fn ports_clash(a: u16, b: u16) -> bool {
    a == b && a != 0
}

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

    /// The path is printed before each error (`main`): a file that cannot
    /// be read said it twice (`a.toml: a.toml: cannot read`).
    #[test]
    fn a_missing_file_is_named_once() {
        let errors = Config::load(Path::new("/nonexistent/siptrack.toml")).expect_err("missing");
        let shown = errors.to_string();
        assert!(shown.starts_with("cannot read: "), "{shown}");
        assert!(!shown.contains("siptrack.toml"), "{shown}");
    }

    #[test]
    fn postgres_storage_with_its_pool() {
        let c = Config::parse(
            "[storage]\nurl = \"postgres://siptrack:pw@db.internal:5432/siptrack\"\n\
             pool_size = 16\nstatement_timeout_ms = 2000\n",
        )
        .expect("valid");
        assert_eq!(
            c.storage.url,
            "postgres://siptrack:pw@db.internal:5432/siptrack"
        );
        assert_eq!(
            c.storage.postgres,
            crate::store::postgres::PgOptions {
                pool_size: 16,
                statement_timeout_ms: 2000
            }
        );
        // What check-config and the start line print: no password.
        assert_eq!(
            c.storage.describe(),
            "postgres://siptrack:***@db.internal:5432/siptrack"
        );
        let d = Config::parse("").expect("defaults");
        assert_eq!(
            d.storage.postgres,
            crate::store::postgres::PgOptions::default()
        );
        // A node's name: configured, else the host's.
        assert_eq!(d.storage.node_name("pbx1"), "pbx1");
        assert_eq!(d.storage.node_name(""), "siptrack");
        let named = Config::parse("[storage]\nnode_name = \"east-1\"\n").expect("named");
        assert_eq!(named.storage.node_name("pbx1"), "east-1");
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match Config::parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    /// `[ui]`: defaults, the accepted values, and errors that name key
    /// and line.
    #[test]
    fn ui_keys() {
        let c = Config::parse("").expect("empty config");
        assert_eq!(c.ui, UiConfig::default());
        assert_eq!(c.ui.session_minutes, 480);
        let hash = crate::ui::login::hash_password("pw", b"0123456789abcdef").expect("hash");
        let c = Config::parse(&format!(
            "[ui]\nlanguage = \"ru\"\nsession_minutes = 30\nsip_trace_minutes = 15\nsip_trace_max_mb = 8\n[[ui.users]]\nname = \"anna\"\npassword_hash = \"{hash}\"\n"
        ))
        .expect("valid ui");
        assert_eq!(c.ui.language, Language::Ru);
        assert_eq!(c.ui.session_minutes, 30);
        assert_eq!((c.ui.sip_trace_minutes, c.ui.sip_trace_max_mb), (15, 8));
        assert_eq!(
            c.ui.users,
            [UiUser {
                name: "anna".into(),
                password_hash: hash.clone()
            }]
        );
        for (text, key, line, needle) in [
            ("[ui]\nlanguage = \"de\"\n", "ui.language", 2, "\"de\" is not \"en\" or \"ru\""),
            ("[ui]\nsession_minutes = 0\n", "ui.session_minutes", 2, "between 1 and"),
            ("[ui]\nsip_trace_minutes = -1\n", "ui.sip_trace_minutes", 2, "between 0 and 10080"),
            ("[ui]\nsip_trace_max_mb = 0\n", "ui.sip_trace_max_mb", 2, "between 1 and 4096"),
            (
                "[ui]\n[[ui.users]]\nname = \"a\"\npassword_hash = \"secret\"\n",
                "ui.users[0].password_hash",
                4,
                "is not a PHC password hash",
            ),
            (
                "[[ui.users]]\nname = \"a\"\npassword_hash = \"$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"\n",
                "ui.users[0].password_hash",
                3,
                "only argon2",
            ),
            ("[[ui.users]]\nname = \"a\"\n", "ui.users[0].password_hash", 2, "required"),
            ("[[ui.users]]\nname = \"\"\n", "ui.users[0].name", 2, "1 to 100"),
            ("[ui]\nlanguge = \"ru\"\n", "ui.languge", 2, "did you mean ui.language"),
        ] {
            let e = errors(text);
            assert!(
                e.iter().any(|e| e.key == key && e.line == Some(line) && e.message.contains(needle)),
                "{text}: {e:?}"
            );
        }
        let dup = errors(&format!(
            "[[ui.users]]\nname = \"a\"\npassword_hash = \"{hash}\"\n[[ui.users]]\nname = \"a\"\npassword_hash = \"{hash}\"\n"
        ));
        assert!(
            dup.iter()
                .any(|e| e.key == "ui.users[1].name" && e.line == Some(5)),
            "{dup:?}"
        );
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../config/siptrack.toml");
        let c = Config::parse(text).expect("shipped config parses");
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.sip.timers, Timers::default());
        // The file documents the defaults: both agree.
        assert_eq!(c.sip.tcp, TcpLimits::default());
        assert_eq!(
            (c.http.max_connections, c.http.header_timeout_seconds),
            (256, 10)
        );
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

    /// Issue 3, item 4: each category of tracking/rewrite error names its
    /// key, with a message that says what is wrong.
    #[test]
    fn tracking_and_rewrite_errors_name_their_keys() {
        for (text, key, needle) in [
            (
                "[rewrite]\nextra_headers = \"X-City={town}\"\n",
                "rewrite.extra_headers.X-City",
                "unknown placeholder {town}",
            ),
            (
                "[rewrite]\nextra_headers = \"X-City {city}\"\n",
                "rewrite.extra_headers",
                "is not name=value",
            ),
            (
                "[rewrite]\nextra_headers = { \"X City\" = \"{city}\" }\n",
                "rewrite.extra_headers.X City",
                "is not a header name",
            ),
            (
                "[rewrite]\nextra_headers = { X-City = 5.5 }\n",
                "rewrite.extra_headers.X-City",
                "must be a string",
            ),
            (
                "[rewrite]\nextra_headers = 7\n",
                "rewrite.extra_headers",
                "must be a table or a string",
            ),
            (
                "[rewrite]\nphone_header = \"X-Phone:\"\n",
                "rewrite.phone_header",
                "is not a header name",
            ),
            (
                "[rewrite]\nnumber_substitution = \"74951111111=office\"\n",
                "rewrite.number_substitution.74951111111",
                "must be phone numbers",
            ),
            (
                "[rewrite]\nnumber_substitution = \"74951111111\"\n",
                "rewrite.number_substitution",
                "is not name=value",
            ),
            (
                "[rewrite]\nsip_login_map = \"roistat 1=1231\"\n",
                "rewrite.sip_login_map.roistat 1",
                "must be SIP user parts",
            ),
            (
                "[phone]\ncountry_code = \"+7\"\n",
                "phone.country_code",
                "must be up to 4 digits",
            ),
            (
                "[[tracking.numbers]]\nnumber = \"call-me\"\ndestination = \"sip:127.0.0.1\"\n",
                "tracking.numbers[0].number",
                "is not a phone number",
            ),
            (
                "[[tracking.numbers]]\nnumber = \"84951111111\"\ndestination = \"office\"\n",
                "tracking.numbers[0].destination",
                "neither a SIP URI nor a phone number",
            ),
            (
                "[[tracking.numbers]]\nnumber = \"84951111111\"\ndestination = \"89161234567\"\n",
                "tracking.numbers[0].destination",
                "tracking.default_destination, which is not set",
            ),
            (
                "[[tracking.numbers]]\nnumber = \"84951111111\"\ndestination = \"sip:127.0.0.1\"\n\
                 [[tracking.numbers]]\nnumber = \"+7 495 111-11-11\"\ndestination = \"sip:127.0.0.1\"\n",
                "tracking.numbers[1].number",
                "74951111111 is listed twice",
            ),
            (
                "[[tracking.pools]]\nname = \"ads\"\nnumbers = [\"74951000001\"]\ndestination = \"sip:127.0.0.1\"\nsegment = [[\"source\", \"~\", \"x\"]]\n",
                "tracking.pools[0].segment",
                "pool \"ads\": [0]: unknown operator \"~\"",
            ),
            (
                "[[tracking.pools]]\nname = \"ads\"\nnumbers = [\"74951000001\"]\ndestination = \"sip:127.0.0.1\"\nsegment = '{\"and\": ['\n",
                "tracking.pools[0].segment",
                "pool \"ads\": not JSON",
            ),
            (
                "[[tracking.numbers]]\nnumber = \"84951000001\"\ndestination = \"sip:127.0.0.1\"\n\
                 [[tracking.pools]]\nname = \"ads\"\nnumbers = [\"74951000001\"]\ndestination = \"sip:127.0.0.1\"\n",
                "tracking.pools[0].numbers[0]",
                "74951000001 is already a static number",
            ),
            (
                "[[tracking.pools]]\nname = \"a\"\nnumbers = [\"74951000001\"]\ndestination = \"sip:127.0.0.1\"\n\
                 [[tracking.pools]]\nname = \"b\"\nnumbers = [\"8 495 100 00 01\"]\ndestination = \"sip:127.0.0.1\"\n",
                "tracking.pools[1].numbers[0]",
                "74951000001 is already pool \"a\"",
            ),
            (
                "[[tracking.pools]]\nname = \"a\"\nnumbers = []\ndestination = \"sip:127.0.0.1\"\n",
                "tracking.pools[0].numbers",
                "needs at least one number",
            ),
            (
                "[[tracking.pools]]\nname = \"a\"\nnumbers = [\"1\"]\ndestination = \"sip:127.0.0.1\"\nhold_seconds = 0\n",
                "tracking.pools[0].hold_seconds",
                "must be between 1 and 86400",
            ),
            (
                "[[tracking.pools]]\nname = \"a\"\nnumbers = [\"1\"]\ndestination = \"sip:127.0.0.1\"\n\
                 [[tracking.pools]]\nname = \"a\"\nnumbers = [\"2\"]\ndestination = \"sip:127.0.0.1\"\n",
                "tracking.pools[1].name",
                "must be non-empty and unique",
            ),
            // Issue 11, item 10: what cannot work is refused.
            (
                "[[tracking.pools]]\nname = \"ads\"\nnumbers = [\"74951000001\"]\ndestination = \"sip:127.0.0.1\"\nsegment = [[\"colour\", \"=\", \"red\"]]\n",
                "tracking.pools[0].segment",
                "pool \"ads\": \"colour\" is not a visit field (marker, source, city",
            ),
            (
                "[rewrite]\nextra_headers = \"X-City={city}, X-Roistat-Phone={caller}\"\n",
                "rewrite.extra_headers.X-Roistat-Phone",
                "siptrack writes this header itself",
            ),
            (
                "[rewrite]\nphone_header = \"X-Track\"\nextra_headers = { x-track = \"{dialed}\" }\n",
                "rewrite.extra_headers.x-track",
                "siptrack writes this header itself (rewrite.phone_header)",
            ),
            (
                "[rewrite]\nextra_headers = { via = \"{city}\" }\n",
                "rewrite.extra_headers.via",
                "siptrack writes this header itself",
            ),
            (
                "[rewrite]\nmarker_header = \"from\"\n",
                "rewrite.marker_header",
                "siptrack writes this header itself",
            ),
            (
                "[rewrite]\nextra_headers = { Max-Forwards = \"1\" }\n",
                "rewrite.extra_headers.Max-Forwards",
                "siptrack writes this header itself",
            ),
            (
                "[rewrite]\nextra_headers = { l = \"0\" }\n",
                "rewrite.extra_headers.l",
                "siptrack writes this header itself",
            ),
            (
                "[rewrite]\nextra_headers = \"X-A={city}, x-a={domain}\"\n",
                "rewrite.extra_headers.x-a",
                "given twice",
            ),
            (
                "[crm]\nphone_format = \"8 (XXX) XXX-XX\"\n",
                "crm.phone_format",
                "has 8 Xs, fewer than the 10 digits of a national number ([phone])",
            ),
            (
                "[phone]\ncountry_code = \"45\"\ntrunk_prefix = \"\"\n[crm]\nphone_format = \"+45 XX XX XX X\"\n",
                "crm.phone_format",
                "has 7 Xs, fewer than the 8 digits",
            ),
            (
                "[crm]\ntimezone = \"Moscow\"\n",
                "crm.timezone",
                "is not a UTC offset like UTC+3",
            ),
            (
                "[crm]\nphone_format = \"8 (xxx) xxx\"\n",
                "crm.phone_format",
                "has no X for the digits",
            ),
            (
                "[crm]\nkind = \"bitrix\"\n",
                "crm.kind",
                "must be local, webhook, amocrm or bitrix24",
            ),
            (
                "[crm]\nkind = \"bitrix24\"\n",
                "crm.bitrix24.webhook_url",
                "required with crm.kind = \"bitrix24\"",
            ),
            (
                "[crm]\nkind = \"bitrix24\"\n[crm.bitrix24]\nwebhook_url = \"https://a.bitrix24.ru/rest/api/x/\"\n",
                "crm.bitrix24.webhook_url",
                "is not an incoming webhook URL",
            ),
            (
                "[crm]\nkind = \"bitrix24\"\n[crm.bitrix24]\nentity = \"contact\"\n",
                "crm.bitrix24.entity",
                "must be deal or lead",
            ),
            (
                "[crm]\nkind = \"bitrix24\"\ncall_end_url = \"http://127.0.0.1/e\"\n",
                "crm.call_end_url",
                "not used with crm.kind = \"bitrix24\"",
            ),
            (
                "[crm]\nkind = \"bitrix24\"\n[crm.bitrix24]\nentity = \"lead\"\ncategory_id = 2\n",
                "crm.bitrix24.category_id",
                "leads have no pipeline",
            ),
            (
                "[crm]\nkind = \"bitrix24\"\n[crm.bitrix24]\nrequests_per_second = 0\n",
                "crm.bitrix24.requests_per_second",
                "must be between 1 and 100",
            ),
            (
                "[crm]\nkind = \"bitrix24\"\n[crm.bitrix24]\napplication_token = \"short\"\n",
                "crm.bitrix24.application_token",
                "at least 16 characters",
            ),
            (
                "[crm]\nkind = \"bitrix24\"\n[crm.bitrix24]\napplication_token = \"0123456789abcdef\"\n[crm.bitrix24.stage_map]\n\"C2:PAID\" = \"payed\"\n",
                "crm.bitrix24.stage_map.C2:PAID",
                "\"payed\" is not a status",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n[crm.amocrm]\nwebhook_token = \"0123456789abcdef\"\nstatus_map = { \"5551\" = \"won\" }\n",
                "crm.amocrm.status_map.5551",
                "is not a status",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n[crm.amocrm]\nwebhook_token = \"0123456789abcdef\"\nstatus_map = { Won = \"paid\" }\n",
                "crm.amocrm.status_map.Won",
                "is not a status id of this CRM",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n",
                "crm.amocrm.base_url",
                "required with crm.kind = \"amocrm\"",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n",
                "crm.amocrm.token",
                "required",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n",
                "crm.amocrm.phone_field_id",
                "the id of the contacts' Phone field",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n",
                "crm.amocrm.marker_field_id",
                "a retried create finds its lead by it",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n[crm.amocrm]\nbase_url = \"acme.amocrm.ru\"\n",
                "crm.amocrm.base_url",
                "is not an http:// or https:// URL",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n[crm.amocrm]\nbase_url = \"https://acme.amocrm.ru/api/v4/\"\n",
                "crm.amocrm.base_url",
                "has a path: give the account's address alone",
            ),
            (
                "[crm]\nkind = \"amocrm\"\nurl = \"http://127.0.0.1/hook\"\n",
                "crm.url",
                "not used with crm.kind = \"amocrm\"",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n[crm.amocrm]\ntoken = \"a b\"\n",
                "crm.amocrm.token",
                "one line, no spaces",
            ),
            (
                "[crm.amocrm]\nrequests_per_second = 0\n[crm]\nkind = \"amocrm\"\n",
                "crm.amocrm.requests_per_second",
                "must be between 1 and 100",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n[crm.amocrm]\npipeline_id = -4\n",
                "crm.amocrm.pipeline_id",
                "must be between 1 and",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n[crm.amocrm.lead_fields]\nutm_sorce = 12\n",
                "crm.amocrm.lead_fields.utm_sorce",
                "is not a visit field",
            ),
            (
                "[crm]\nkind = \"amocrm\"\n[crm.amocrm.lead_fields]\nsource = \"x\"\n",
                "crm.amocrm.lead_fields.source",
                "must be a custom field id",
            ),
            (
                "[crm]\nkind = \"webhook\"\nsecret = \"s\"\n",
                "crm.url",
                "required with crm.kind = \"webhook\"",
            ),
            (
                "[crm]\nkind = \"webhook\"\nurl = \"ftp://crm/hook\"\nsecret = \"s\"\n",
                "crm.url",
                "is not an http:// or https:// URL",
            ),
            (
                "[crm]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n",
                "crm.secret",
                "required (non-empty)",
            ),
            (
                "[crm]\ncall_end_url = \"http://127.0.0.1:9/end\"\nsecret = \"\"\n",
                "crm.secret",
                "required (non-empty)",
            ),
            (
                "[crm.retry]\ninitial_ms = 0\n",
                "crm.retry.initial_ms",
                "must be between 1 and",
            ),
            (
                "[crm.retry]\ninitial_ms = 5000\nmax_ms = 1000\n",
                "crm.retry.max_ms",
                "must be at least crm.retry.initial_ms (5000)",
            ),
            (
                "[crm]\nmax_connections = 0\n",
                "crm.max_connections",
                "must be between 1 and 1024",
            ),
            (
                "[storage]\nurl = \"mysql://db/siptrack\"\n",
                "storage.url",
                "expected sqlite:<path> or postgres://",
            ),
            (
                "[storage]\nurl = \"postgres://u:pw@db:notaport/x\"\n",
                "storage.url",
                "is not a PostgreSQL URL",
            ),
            (
                "[storage]\nnode_name = \"a/b\"\n",
                "storage.node_name",
                "'/' and control characters are not allowed",
            ),
            (
                "[storage]\nnode_name = \"\"\n",
                "storage.node_name",
                "must be 1 to 64 bytes long",
            ),
            (
                "[storage]\nnode_name = \"   \"\n",
                "storage.node_name",
                "spaces at the start or the end are not allowed",
            ),
            (
                "[storage]\nnode_name = \"east-1 \"\n",
                "storage.node_name",
                "spaces at the start or the end are not allowed",
            ),
            (
                "[storage]\npool_size = 0\n",
                "storage.pool_size",
                "must be between 1 and 256",
            ),
            (
                "[storage]\nstatement_timeout_ms = 10\n",
                "storage.statement_timeout_ms",
                "must be between 100 and 600000",
            ),
            (
                "[sip]\ntrusted_sources = [\"192.0.2.0/24\", \"10.0.0.300/8\"]\n",
                "sip.trusted_sources[1]",
                "is not a CIDR network",
            ),
        ] {
            let e = errors(text);
            assert!(
                e.iter().any(|e| e.key == key && e.message.contains(needle) && e.line.is_some()),
                "{text}\nwanted {key}: …{needle}…, got {e:?}"
            );
        }
    }

    #[test]
    fn what_can_work_is_accepted() {
        for text in [
            "[crm]\nphone_format = \"+7XXXXXXXXXX\"\n",
            "[crm]\nphone_format = \"XXXXXXXXXXXXX\"\n",
            "[phone]\ncountry_code = \"49\"\ntrunk_prefix = \"0\"\n[crm]\nphone_format = \"+XX\"\n",
            "[phone]\ncountry_code = \"45\"\ntrunk_prefix = \"\"\n[crm]\nphone_format = \"+45 XX XX XX XX\"\n",
            "[rewrite]\nphone_header = \"\"\nextra_headers = { X-Roistat-Phone = \"{dialed}\", X-Via = \"{city}\" }\n",
            "[[tracking.pools]]\nname = \"a\"\nnumbers = [\"74951000001\"]\ndestination = \"sip:127.0.0.1\"\n\
             segment = { or = [[\"utm_source\", \"=\", \"g\"], [\"marker\", \"null\", 1], [\"page\", \"like\", \"x\"]] }\n",
        ] {
            assert_eq!(errors(text), Vec::new(), "{text}");
        }
    }

    #[test]
    fn crm_format_keys() {
        let c = Config::parse(
            "[crm]\nphone_format = \"8 (XXX) XXX-XX-XX\"\ntimezone = \"UTC+3\"\nallow_html = true\n",
        )
        .expect("valid");
        let f = &c.leads.crm.format;
        assert_eq!(f.phone_format, "8 (XXX) XXX-XX-XX");
        assert_eq!(f.timezone.local_minus_utc(), 3 * 3600);
        assert!(f.allow_html);
        let d = Config::parse("").expect("empty config is valid");
        assert_eq!(d.leads.crm.format, CrmFormat::default());
    }

    #[test]
    fn crm_delivery_keys() {
        let c = Config::parse(
            "[crm]\nkind = \"webhook\"\nurl = \"https://crm.example/hook\"\nsecret = \"k\"\n\
             call_end_url = \"http://127.0.0.1:8081/end\"\ntimeout_ms = 2500\nmax_connections = 4\n\
             [crm.retry]\ninitial_ms = 200\nmax_ms = 60000\nmax_age_hours = 2\n",
        )
        .expect("valid");
        assert!(c.leads.crm.lead_hooks && c.leads.crm.call_end && !c.leads.crm.call_start);
        assert_eq!(c.crm.url.as_deref(), Some("https://crm.example/hook"));
        assert_eq!(
            c.crm.call_end_url.as_deref(),
            Some("http://127.0.0.1:8081/end")
        );
        assert_eq!((c.crm.timeout_ms, c.crm.max_connections), (2500, 4));
        assert_eq!(
            c.crm.retry,
            CrmRetry {
                initial_ms: 200,
                max_ms: 60_000,
                max_age_hours: 2
            }
        );
        let d = Config::parse("").expect("empty config is valid");
        assert!(!d.leads.crm.sends_anything());
        assert_eq!(d.crm.retry, CrmRetry::default());
        assert_eq!(d.crm.amocrm, None);
    }

    #[test]
    fn amocrm_keys() {
        let c = Config::parse(
            "[crm]\nkind = \"amocrm\"\n[crm.amocrm]\nbase_url = \"https://acme.amocrm.ru/\"\n\
             token = \"long.lived\"\npipeline_id = 11\nstatus_id = 22\nresponsible_user_id = 33\n\
             phone_field_id = 101\nemail_field_id = 102\nmarker_field_id = 201\ntask_minutes = 30\n\
             lead_fields = { source = 202, utm_source = 203 }\n",
        )
        .expect("valid");
        let plan = &c.leads.crm;
        assert!(plan.lead_hooks && plan.call_end && !plan.call_start && plan.calls_on_deals);
        assert_eq!(
            c.crm.amocrm,
            Some(AmoSettings {
                base_url: "https://acme.amocrm.ru".into(),
                token: "long.lived".into(),
                pipeline_id: Some(11),
                status_id: Some(22),
                responsible_user_id: Some(33),
                phone_field_id: 101,
                email_field_id: Some(102),
                marker_field_id: 201,
                lead_fields: [("source".to_string(), 202), ("utm_source".to_string(), 203)]
                    .into_iter()
                    .collect(),
                task_minutes: 30,
                requests_per_second: 7,
                utc_offset_seconds: 0,
                phone_rules: crate::phone::PhoneRules::default(),
                allow_html: false,
            })
        );
        // No secret needed: amoCRM authenticates siptrack by the token.
        assert!(c.crm.secret.is_empty());
    }

    #[test]
    fn bitrix24_keys_and_status_maps() {
        let c = Config::parse(
            "[crm]\nkind = \"bitrix24\"\ntimezone = \"UTC+3\"\n[crm.bitrix24]\n\
             webhook_url = \"https://acme.bitrix24.ru/rest/7/s3cr3t\"\ncategory_id = 0\n\
             task_minutes = 15\nburst = 250\nrequests_per_second = 5\n\
             application_token = \"0123456789abcdef\"\n\
             stage_map = { \"C2:PREPAID\" = \"in_progress\", LOSE = \"not_counted\" }\n",
        )
        .expect("valid");
        let plan = &c.leads.crm;
        assert!(plan.lead_hooks && plan.call_end && !plan.call_start && plan.calls_on_deals);
        let s = c.crm.bitrix24.clone().expect("bitrix24");
        assert_eq!(
            s,
            BitrixSettings {
                webhook_url: "https://acme.bitrix24.ru/rest/7/s3cr3t/".into(),
                entity: BitrixEntity::Deal,
                user_id: 7,
                assigned_by_id: None,
                category_id: Some(0),
                task_minutes: 15,
                burst: 250,
                per_second: 5,
                timezone: chrono::FixedOffset::east_opt(3 * 3600).expect("+3"),
                allow_html: false,
            }
        );
        let hook = c
            .crm
            .status_hooks
            .bitrix24
            .expect("the status webhook is on");
        assert_eq!(hook.application_token, "0123456789abcdef");
        let map: Vec<(&str, &str)> = hook
            .stage_map
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            map,
            [
                ("C2:PREPAID", "in_progress"),
                ("CONVERTED", "paid"),
                ("JUNK", "cancelled"),
                ("LOSE", "not_counted"),
                ("WON", "paid")
            ]
        );
        assert!(c.crm.status_hooks.amocrm.is_none());
        // Without a token the status webhook is off; amoCRM's maps its
        // won/lost ids by default.
        let amo = Config::parse(
            "[status_groups]\nwon = \"paid\"\n[crm]\nkind = \"amocrm\"\n[crm.amocrm]\n\
             base_url = \"https://acme.amocrm.ru\"\ntoken = \"t\"\nphone_field_id = 1\nmarker_field_id = 2\n\
             webhook_token = \"0123456789abcdef\"\nstatus_map = { \"5551\" = \"won\" }\n",
        )
        .expect("valid");
        let hook = amo.crm.status_hooks.amocrm.expect("on");
        assert_eq!(hook.status_map.get("5551").map(String::as_str), Some("won"));
        assert_eq!(hook.status_map.get("142").map(String::as_str), Some("paid"));
        let off = Config::parse(
            "[crm]\nkind = \"bitrix24\"\n[crm.bitrix24]\nwebhook_url = \"https://a.bitrix24.ru/rest/1/x/\"\n",
        )
        .expect("valid");
        assert!(off.crm.status_hooks.bitrix24.is_none());
        assert_eq!(off.crm.bitrix24.expect("on").user_id, 1);
    }

    #[test]
    fn tracking_config_in_both_forms() {
        let table = Config::parse(
            "[tracking]\ndefault_destination = \"sip:127.0.0.1:5070\"\n\
             [[tracking.numbers]]\nnumber = \"8 (495) 111-11-11\"\ndestination = \"+7 916 000 11 22\"\nmarker = \"tv\"\n\
             [rewrite]\nextra_headers = { X-Site = \"{domain}\", X-City = \"{city}\" }\n\
             number_substitution = { 84951111111 = \"84992222222\" }\n",
        )
        .expect("valid");
        let compact = Config::parse(
            "[tracking]\ndefault_destination = \"sip:127.0.0.1:5070\"\n\
             [[tracking.numbers]]\nnumber = \"74951111111\"\ndestination = \"79160001122\"\nmarker = \"tv\"\n\
             [rewrite]\nextra_headers = \"X-Site={domain}, X-City={city}\"\n\
             number_substitution = \"74951111111=74992222222\"\n",
        )
        .expect("valid");
        for c in [&table, &compact] {
            let n = &c.tracking.numbers[0];
            assert_eq!(n.number, "74951111111");
            assert!(n.phone_destination);
            assert_eq!(n.destination.user.as_deref(), Some("79160001122"));
            assert_eq!(n.marker.as_deref(), Some("tv"));
            let names: Vec<&str> = c
                .rewrite
                .extra_headers
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            assert_eq!(names, vec!["X-Site", "X-City"], "in the order written");
            assert_eq!(
                c.rewrite
                    .number_substitution
                    .get("74951111111")
                    .map(String::as_str),
                Some("74992222222")
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_reported_with_lines() {
        let e = errors("[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\ntrusted_source = []\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(3));
        assert_eq!(
            e[0].to_string(),
            "line 3: sip.trusted_source: unknown key (did you mean sip.trusted_sources?)"
        );
        // Issue 11, item 9: unknown keys do not hide the other errors.
        let e = errors(
            "[sip]\ntrusted_source = []\ntrusted_sources = [\"10.0.0.0/33\"]\n[crm]\nkind = \"webhok\"\nurll = \"x\"\n",
        );
        let keys: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("sip.trusted_source", Some(2)),
                ("sip.trusted_sources[0]", Some(3)),
                ("crm.kind", Some(5)),
                ("crm.urll", Some(6)),
            ]
        );
        // A wrong type is named by its key, with the unknown keys.
        let e = errors("[sip]\nmax_message_bytes = \"big\"\nlistn = []\n");
        let got: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                "line 2: sip.max_message_bytes: invalid type: string \"big\", expected an integer",
                "line 3: sip.listn: unknown key (did you mean sip.listen?)",
            ]
        );
        let e = errors("[sip\nlisten = 1\n");
        assert_eq!(e[0].line, Some(1));
        // Every wrong value in one run, not only the first (trial,
        // 2026-12-02); a value over several lines ends the list there.
        let e = errors(
            "[sip]\nmax_message_bytes = \"big\"\n\n[tracking]\nnormalize_caller = \"yes\"\nmax_call_seconds = 1.5\n\n[http]\nmax_connections = \"many\"\n",
        );
        let got: Vec<(String, Option<usize>)> = e.iter().map(|e| (e.key.clone(), e.line)).collect();
        assert_eq!(
            got,
            vec![
                ("sip.max_message_bytes".into(), Some(2)),
                ("tracking.normalize_caller".into(), Some(5)),
                ("tracking.max_call_seconds".into(), Some(6)),
                ("http.max_connections".into(), Some(9)),
            ],
            "{e:?}"
        );
        assert!(e[1].message.contains("expected true or false"), "{e:?}");
        let e = errors("[sip]\nmax_message_bytes = \"big\"\nlisten = [\n  1,\n]\ntimers = 3\n");
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["sip.max_message_bytes", "sip.listen[0]"], "{e:?}");
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

    /// A repeated listen entry, or HTTP on a SIP TCP port, would fail at
    /// start with "Address already in use", as if another program held
    /// the port (trial, 2026-12-02: check-config said ok).
    #[test]
    fn listen_addresses_that_clash_are_refused_table() {
        for (text, want) in [
            (
                "[sip]\nlisten = [\"udp:127.0.0.1:5600\", \"tcp:127.0.0.1:5600\",\n \"udp:127.0.0.1:5600\"]\n",
                Some(("sip.listen[2]", "repeats sip.listen[0]")),
            ),
            (
                "[sip]\nlisten = [\"udp:127.0.0.1:5600\", \"tcp:127.0.0.1:5600\"]\n[http]\nlisten = \"127.0.0.1:5600\"\n",
                Some(("http.listen", "TCP port of sip.listen[1]")),
            ),
            // An address and a wildcard of its family on one port (QA).
            (
                "[sip]\nadvertised_host = \"127.0.0.1\"\nlisten = [\"udp:127.0.0.1:5600\", \"udp:0.0.0.0:5600\"]\n",
                Some(("sip.listen[1]", "takes the port of sip.listen[0]")),
            ),
            (
                "[sip]\nadvertised_host = \"127.0.0.1\"\nlisten = [\"udp:0.0.0.0:5600\", \"udp:[::1]:5600\"]\n",
                None,
            ),
            (
                "[sip]\nlisten = [\"tcp:127.0.0.2:5600\"]\n[http]\nlisten = \"0.0.0.0:5600\"\n",
                Some(("http.listen", "TCP port of sip.listen[0]")),
            ),
            // UDP and TCP share a port number; HTTP beside SIP over UDP,
            // and on another address, is fine.
            (
                "[sip]\nlisten = [\"udp:127.0.0.1:5600\", \"tcp:127.0.0.1:5600\"]\n",
                None,
            ),
            (
                "[sip]\nlisten = [\"udp:127.0.0.1:5600\"]\n[http]\nlisten = \"127.0.0.1:5600\"\n",
                None,
            ),
            (
                "[sip]\nlisten = [\"tcp:127.0.0.2:5600\"]\n[http]\nlisten = \"127.0.0.1:5600\"\n",
                None,
            ),
            // Port 0 is a free port the kernel picks at each bind: no two
            // clash (scripts/idle-cpu moves every address there, and a
            // node so configured was refused at start).
            (
                "[sip]\nadvertised_host = \"127.0.0.1\"\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\", \"tcp:0.0.0.0:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n",
                None,
            ),
        ] {
            let e = errors(text);
            match want {
                Some((key, says)) => {
                    assert_eq!(e.len(), 1, "{text}: {e:?}");
                    assert_eq!(e[0].key, key, "{text}");
                    assert!(e[0].message.contains(says), "{text}: {}", e[0].message);
                }
                None => assert!(e.is_empty(), "{text}: {e:?}"),
            }
        }
    }

    /// Issue 12: a wildcard listen address without `sip.advertised_host`
    /// would put 0.0.0.0 into Via and Record-Route; `sip.untrusted` is
    /// "reject" or "drop".
    #[test]
    fn wildcard_listen_needs_an_advertised_host_and_untrusted_is_checked() {
        let e = errors("[sip]\nlisten = [\"udp:127.0.0.1:5060\",\n  \"tcp:0.0.0.0:5060\"]\n");
        let keys: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(keys, vec![("sip.listen[1]", Some(3))]);
        assert!(e[0].message.contains("advertised_host"), "{}", e[0].message);
        let e = errors("[sip]\nlisten = [\"udp:[::]:5060\"]\n");
        assert_eq!(e.len(), 1, "{e:?}");
        // A name is fine for SIP; SDP (recording) needs an IP.
        assert!(errors(
            "[sip]\nlisten = [\"udp:0.0.0.0:5060\"]\nadvertised_host = \"sip.example.com\"\n[media]\nadvertised_ip = \"192.0.2.1\"\n"
        )
        .is_empty());

        let e = errors("[sip]\n\nuntrusted = \"ignore\"\n");
        let keys: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(keys, vec![("sip.untrusted", Some(3))]);
        let parsed = |t: &str| Config::parse(t).map(|c| c.sip.untrusted).ok();
        assert_eq!(
            parsed("[sip]\nuntrusted = \"drop\"\n"),
            Some(Untrusted::Drop)
        );
        assert_eq!(parsed("[sip]\n"), Some(Untrusted::Reject));
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

    /// Issue 12, item 2: the TCP and HTTP limits, with defaults an
    /// operator expects and errors naming key and line.
    #[test]
    fn connection_limits() {
        let d = Config::parse("").expect("empty config is valid");
        assert_eq!(
            d.sip.tcp,
            TcpLimits {
                max_connections: 4096,
                max_per_source: 32,
                idle_seconds: 120,
                message_timeout_seconds: 10,
                write_queue_bytes: 1 << 20,
            }
        );
        assert_eq!(
            (d.http.max_connections, d.http.header_timeout_seconds),
            (256, 10)
        );
        let c = Config::parse(
            "[sip]\ntcp_max_connections = 100\ntcp_max_connections_per_source = 5\n\
             tcp_idle_seconds = 2\ntcp_message_timeout_seconds = 1\ntcp_write_queue_bytes = 200000\n\
             [http]\nmax_connections = 8\nheader_timeout_seconds = 3\n",
        )
        .expect("valid");
        assert_eq!(
            c.sip.tcp,
            TcpLimits {
                max_connections: 100,
                max_per_source: 5,
                idle_seconds: 2,
                message_timeout_seconds: 1,
                write_queue_bytes: 200_000,
            }
        );
        assert_eq!(
            (c.http.max_connections, c.http.header_timeout_seconds),
            (8, 3)
        );
        let e = errors(
            "[sip]\ntcp_max_connections = 0\ntcp_max_connections_per_source = -1\n\
             tcp_idle_seconds = 0\ntcp_message_timeout_seconds = 0\ntcp_write_queue_bytes = 1000\n\
             [http]\nmax_connections = 0\nheader_timeout_seconds = 0\n",
        );
        let keys: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("sip.tcp_max_connections", Some(2)),
                ("sip.tcp_max_connections_per_source", Some(3)),
                ("sip.tcp_idle_seconds", Some(4)),
                ("sip.tcp_message_timeout_seconds", Some(5)),
                ("sip.tcp_write_queue_bytes", Some(6)),
                ("http.max_connections", Some(8)),
                ("http.header_timeout_seconds", Some(9)),
            ]
        );
        // A queue smaller than one message would close every connection
        // that carries a large one.
        let e = errors("[sip]\nmax_message_bytes = 65535\ntcp_write_queue_bytes = 65534\n");
        assert_eq!(
            (e[0].key.as_str(), e[0].line),
            ("sip.tcp_write_queue_bytes", Some(3))
        );
        assert!(
            e[0].message.contains("max_message_bytes"),
            "{}",
            e[0].message
        );
    }
}
