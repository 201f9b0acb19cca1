//! What the console asks of the lead log and the call records: a page of
//! rows by keyset (`id < before`, newest first; `id > after` for what is
//! new), narrowed by filters. One rule, two readings: `LeadQuery::matches`
//! for the memory store and the table test, `LeadQuery::sql` for SQLite
//! (`pg_sql` for PostgreSQL, the same terms); a table test runs the rule
//! and SQLite's reading on the same rows, the store contract tests all.

use rusqlite::types::Value as SqlValue;

use super::rows::LeadRow;

/// The channel a lead counts for on the overview: its call's marker, else
/// its call's source, else the lead's visit column (a static number's
/// marker, or a visit id). Grouped by the visit column alone, every pool
/// call made a channel of its own: 29 rows of one lead each for 25 forms
/// and a few calls (trial, 2026-12-02), where a manager wants `google_cpc`
/// and `yandex`. SQL over `leads l LEFT JOIN calls c`.
pub const CHANNEL_OF_LEAD: &str =
    "COALESCE(NULLIF(l.visit_channel, ''), NULLIF(c.marker, ''), NULLIF(c.source, ''), l.visit_id)";

/// [`CHANNEL_OF_LEAD`] over `leads l` alone (the call read by its unique
/// Call-ID): the lead page's column and channel filter, so that a channel
/// the overview counts 12 leads for lists those 12 (trial, 2026-12-02:
/// the filter compared the visit column, and found none of a pool's calls).
pub const CHANNEL_OF_LEAD_ROW: &str = "COALESCE(NULLIF(l.visit_channel, ''), \
     (SELECT COALESCE(NULLIF(c.marker, ''), NULLIF(c.source, '')) FROM calls c WHERE c.call_id = l.call_id), \
     l.visit_id)";

/// Which outcomes a lead filter keeps (SPEC L-7's words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    /// `deal N created` (also when appended to a duplicate).
    Created,
    /// `duplicate of lead N` / `duplicate of deal N`.
    Duplicate,
    /// `no deal: …`.
    NoDeal,
}

impl OutcomeKind {
    pub fn parse(s: &str) -> Option<OutcomeKind> {
        match s {
            "created" => Some(OutcomeKind::Created),
            "duplicate" => Some(OutcomeKind::Duplicate),
            "no_deal" => Some(OutcomeKind::NoDeal),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Created => "created",
            OutcomeKind::Duplicate => "duplicate",
            OutcomeKind::NoDeal => "no_deal",
        }
    }

    /// The SQL LIKE pattern of the decision text.
    fn pattern(self) -> &'static str {
        match self {
            OutcomeKind::Created => "deal % created%",
            OutcomeKind::Duplicate => "duplicate of %",
            OutcomeKind::NoDeal => "no deal%",
        }
    }

    fn matches(self, decision: &str) -> bool {
        match self {
            OutcomeKind::Created => decision.starts_with("deal ") && decision.contains(" created"),
            OutcomeKind::Duplicate => decision.starts_with("duplicate of "),
            OutcomeKind::NoDeal => decision.starts_with("no deal"),
        }
    }
}

/// A search: a normalised phone (exact, one index probe) or the start of
/// a name (any case: see [`name_key`]; an index range, never a scan of
/// the table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Search {
    Phone(String),
    NamePrefix(String),
}

/// A page of the lead log. Every filter is optional; all given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeadQuery {
    /// Leads with a smaller id (the next page).
    pub before: Option<i64>,
    /// Leads with a greater id (what arrived since).
    pub after: Option<i64>,
    /// Leads with an id above this: bounds how far back one page reads
    /// when its filters have no index.
    pub floor: Option<i64>,
    /// Created at or after (Unix seconds).
    pub from: Option<i64>,
    /// Created at or after, or its call ended at or after (Unix seconds):
    /// what the API's `?since=` asks, since a call's lead has the call's
    /// start as its date but is recorded when the call ends (trial,
    /// 2026-12-03: a poller missed every call under way at its poll).
    /// The SQL readings only: the memory store applies it with its calls.
    pub appeared_since: Option<i64>,
    /// Created before (Unix seconds).
    pub to: Option<i64>,
    /// `call` or `form`.
    pub kind: Option<String>,
    pub outcome: Option<OutcomeKind>,
    /// The lead's channel (as the overview counts it), or its visit
    /// column (a visit id, or a static number's channel marker).
    pub channel: Option<String>,
    pub search: Option<Search>,
    pub limit: i64,
}

/// A name as the name search compares it: in lower case (Unicode), so
/// "иван" finds "Иван" (a trial's sales manager found nobody). Stored
/// with each lead (`name_key`).
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// The end of the range of strings that start with `prefix`.
const MAX_CHAR: char = '\u{10FFFF}';

impl LeadQuery {
    /// The rule itself, for stores without SQL (all but
    /// `appeared_since`, which needs the lead's call).
    pub fn matches(&self, l: &LeadRow) -> bool {
        self.before.is_none_or(|b| l.id < b)
            && self.after.is_none_or(|a| l.id > a)
            && self.floor.is_none_or(|f| l.id > f)
            && self.from.is_none_or(|f| l.created_at >= f)
            && self.to.is_none_or(|t| l.created_at < t)
            && self.kind.as_ref().is_none_or(|k| &l.kind == k)
            && self.outcome.is_none_or(|o| o.matches(&l.decision))
            && self
                .channel
                .as_ref()
                .is_none_or(|c| &l.visit_id == c || &l.channel == c)
            && match &self.search {
                None => true,
                Some(Search::Phone(p)) => &l.phone == p,
                Some(Search::NamePrefix(n)) => name_key(&l.name).starts_with(&name_key(n)),
            }
    }

    /// The filters as SQL terms over `leads l`, each with the one value it
    /// binds (written `?`): the part both SQL readings share.
    fn terms(&self) -> Vec<(&'static str, Arg)> {
        let mut t = Vec::new();
        if let Some(b) = self.before {
            t.push(("l.id < ?", Arg::Int(b)));
        }
        if let Some(a) = self.after {
            t.push(("l.id > ?", Arg::Int(a)));
        }
        if let Some(f) = self.floor {
            t.push(("l.id > ?", Arg::Int(f)));
        }
        if let Some(f) = self.from {
            t.push(("l.created_at >= ?", Arg::Int(f)));
        }
        if let Some(to) = self.to {
            t.push(("l.created_at < ?", Arg::Int(to)));
        }
        if let Some(s) = self.appeared_since {
            // One value for both places; the calls' end is in ms. A union
            // of two index ranges: as an OR SQLite read the whole table
            // for a poll with nothing new (17 ms in 300,000 leads; this
            // way 0.1 ms).
            t.push((
                "l.id IN (SELECT id FROM leads WHERE created_at >= ? \
                 UNION SELECT l2.id FROM calls c JOIN leads l2 ON l2.call_id = c.call_id \
                 WHERE c.end_at >= ? * 1000)",
                Arg::Int(s),
            ));
        }
        if let Some(k) = &self.kind {
            t.push(("l.kind = ?", Arg::Text(k.clone())));
        }
        if let Some(o) = self.outcome {
            t.push(("l.outcome LIKE ?", Arg::Text(o.pattern().into())));
        }
        if let Some(c) = &self.channel {
            // One value for both places (`?N` and `$N` may repeat).
            t.push(("(l.visit_id = ? OR CHANNEL = ?)", Arg::Text(c.clone())));
        }
        match &self.search {
            None => {}
            Some(Search::Phone(p)) => t.push(("l.phone = ?", Arg::Text(p.clone()))),
            Some(Search::NamePrefix(n)) => {
                // NAME is `l.name_key` in a byte order: `starts_with` is
                // a range only where strings compare as bytes.
                let key = name_key(n);
                t.push(("NAME >= ?", Arg::Text(key.clone())));
                t.push(("NAME < ?", Arg::Text(format!("{key}{MAX_CHAR}"))));
            }
        }
        t
    }

    /// The WHERE clause for SQLite (`1` when nothing filters) and its
    /// parameters, numbered from ?1. Values are bound, never spliced.
    pub fn sql(&self) -> (String, Vec<SqlValue>) {
        // SQLite compares text as bytes unless told otherwise.
        let (clause, args) = self.numbered("l.name_key", |i| format!("?{i}"));
        let args = args
            .into_iter()
            .map(|a| match a {
                Arg::Int(i) => SqlValue::Integer(i),
                Arg::Text(s) => SqlValue::Text(s),
            })
            .collect();
        let clause = match (clause, self.partial_index_terms()) {
            (clause, None) => clause.unwrap_or_else(|| "1".into()),
            (Some(clause), Some(extra)) => format!("{clause} AND {extra}"),
            (None, Some(extra)) => extra,
        };
        (clause, args)
    }

    /// SQLite's name index leaves out the empty value
    /// (migrations/sqlite/0012): SQLite uses such a partial index only
    /// when the query repeats its WHERE term. A name prefix that is not
    /// empty implies the term, so it drops no row; an empty one keeps
    /// every row and reads without that index. (A channel is no index
    /// probe since it is the overview's channel, worked out per lead: its
    /// pages are bounded as the other unindexed filters', `ui::leads`.)
    fn partial_index_terms(&self) -> Option<String> {
        let mut t = Vec::new();
        if matches!(&self.search, Some(Search::NamePrefix(n)) if !n.is_empty()) {
            t.push("l.name_key <> ''");
        }
        (!t.is_empty()).then(|| t.join(" AND "))
    }

    /// The WHERE clause for PostgreSQL (`TRUE` when nothing filters) and
    /// its parameters, numbered from $1.
    pub fn pg_sql(&self) -> (String, Vec<Arg>) {
        // A database's collation may compare case or punctuation loosely;
        // "C" compares bytes, as `matches` does (and migrations/postgres/
        // 0004 indexes the name so).
        let (clause, args) = self.numbered("(l.name_key COLLATE \"C\")", |i| format!("${i}"));
        (clause.unwrap_or_else(|| "TRUE".into()), args)
    }

    fn numbered(
        &self,
        name: &str,
        placeholder: impl Fn(usize) -> String,
    ) -> (Option<String>, Vec<Arg>) {
        let mut terms = Vec::new();
        let mut args = Vec::new();
        for (term, arg) in self.terms() {
            args.push(arg);
            terms.push(
                term.replace("NAME", name)
                    .replace('?', &placeholder(args.len()))
                    .replace("CHANNEL", CHANNEL_OF_LEAD_ROW),
            );
        }
        if terms.is_empty() {
            (None, args)
        } else {
            (Some(terms.join(" AND ")), args)
        }
    }
}

/// A value a filter binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    Int(i64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(
        id: i64,
        at: i64,
        kind: &str,
        name: &str,
        phone: &str,
        visit: &str,
        decision: &str,
    ) -> LeadRow {
        LeadRow {
            id,
            created_at: at,
            kind: kind.into(),
            form: String::new(),
            dialed: String::new(),
            title: String::new(),
            name: name.into(),
            phone: phone.into(),
            email: String::new(),
            visit_id: visit.into(),
            // As CHANNEL_OF_LEAD makes it of a lead with no channel of
            // its own and no call: its visit column.
            channel: visit.into(),
            text: String::new(),
            decision: decision.into(),
            deal_id: None,
            pending: None,
        }
    }

    /// `l` counting for `channel` on the overview.
    fn in_channel(mut l: LeadRow, channel: &str) -> LeadRow {
        l.channel = channel.into();
        l
    }

    #[test]
    fn lead_filters_table() {
        let l = lead(
            10,
            1000,
            "form",
            "Ivanov",
            "74991234567",
            "google",
            "deal 3 created",
        );
        let q = |f: fn(&mut LeadQuery)| {
            let mut q = LeadQuery::default();
            f(&mut q);
            q
        };
        for (query, keeps) in [
            (q(|_| {}), true),
            (q(|q| q.before = Some(11)), true),
            (q(|q| q.before = Some(10)), false),
            (q(|q| q.after = Some(9)), true),
            (q(|q| q.after = Some(10)), false),
            (q(|q| q.floor = Some(9)), true),
            (q(|q| q.floor = Some(10)), false),
            (q(|q| q.from = Some(1000)), true),
            (q(|q| q.from = Some(1001)), false),
            (q(|q| q.to = Some(1001)), true),
            (q(|q| q.to = Some(1000)), false),
            (q(|q| q.kind = Some("form".into())), true),
            (q(|q| q.kind = Some("call".into())), false),
            (q(|q| q.outcome = Some(OutcomeKind::Created)), true),
            (q(|q| q.outcome = Some(OutcomeKind::Duplicate)), false),
            (q(|q| q.channel = Some("google".into())), true),
            (q(|q| q.channel = Some("goo".into())), false),
        ] {
            assert_eq!(query.matches(&l), keeps, "{query:?}");
        }
        // A pool call's lead: its visit column holds the visit, its
        // channel is its call's marker; either finds it.
        let pooled = in_channel(lead(11, 1000, "call", "", "", "v-77", ""), "google_cpc");
        for (query, keeps) in [
            (q(|q| q.channel = Some("google_cpc".into())), true),
            (q(|q| q.channel = Some("v-77".into())), true),
            (q(|q| q.channel = Some("google".into())), false),
        ] {
            assert_eq!(query.matches(&pooled), keeps, "{query:?}");
        }
        for (query, keeps) in [
            (
                q(|q| q.search = Some(Search::Phone("74991234567".into()))),
                true,
            ),
            (
                q(|q| q.search = Some(Search::Phone("7499123456".into()))),
                false,
            ),
            (
                q(|q| q.search = Some(Search::NamePrefix("Ivan".into()))),
                true,
            ),
            // Any case (a sales manager types in lower case).
            (
                q(|q| q.search = Some(Search::NamePrefix("ivan".into()))),
                true,
            ),
            (
                q(|q| q.search = Some(Search::NamePrefix("IVAN".into()))),
                true,
            ),
            (
                q(|q| q.search = Some(Search::NamePrefix("vanov".into()))),
                false,
            ),
        ] {
            assert_eq!(query.matches(&l), keeps, "{query:?}");
        }
        for (decision, kind) in [
            ("deal 3 created", Some(OutcomeKind::Created)),
            ("duplicate of lead 2", Some(OutcomeKind::Duplicate)),
            ("duplicate of deal 2", Some(OutcomeKind::Duplicate)),
            ("no deal: calls create no deals", Some(OutcomeKind::NoDeal)),
            ("comment added to deal 4", None),
        ] {
            for k in [
                OutcomeKind::Created,
                OutcomeKind::Duplicate,
                OutcomeKind::NoDeal,
            ] {
                assert_eq!(k.matches(decision), Some(k) == kind, "{decision} {k:?}");
            }
        }
    }

    /// The SQL reading gives the same answers as `matches` on a real
    /// SQLite table, for each filter and a combination.
    #[test]
    fn sql_and_rule_agree() {
        let c = rusqlite::Connection::open_in_memory().expect("db");
        c.execute_batch(
            "CREATE TABLE leads (id INTEGER PRIMARY KEY, created_at INT, kind TEXT, name TEXT,
                                 phone TEXT, visit_id TEXT, outcome TEXT, name_key TEXT,
                                 visit_channel TEXT NOT NULL DEFAULT '', call_id TEXT);
             CREATE TABLE calls (call_id TEXT NOT NULL UNIQUE, marker TEXT, source TEXT);
             CREATE INDEX leads_visit ON leads (visit_id) WHERE visit_id <> '';
             CREATE INDEX leads_name_key ON leads (name_key) WHERE name_key <> '';
             -- Lead 1's call came through google (a pool number's visit),
             -- lead 4's told no channel; lead 6 is a form whose visit did.
             INSERT INTO calls VALUES ('c1', 'google', 'g'), ('c4', '', NULL);",
        )
        .expect("table");
        let rows = [
            in_channel(
                lead(1, 100, "call", "", "74991234567", "v1", "deal 1 created"),
                "google",
            ),
            lead(
                2,
                200,
                "form",
                "Ivanov",
                "74991234567",
                "google",
                "duplicate of lead 1",
            ),
            lead(3, 300, "form", "Ivan", "", "google", "deal 2 created"),
            lead(
                4,
                400,
                "call",
                "Петров",
                "79161234567",
                "yandex",
                "no deal: calls create no deals",
            ),
            lead(5, 500, "form", "<script>", "", "", "duplicate of deal 2"),
            in_channel(
                lead(6, 600, "form", "", "", "v6", "deal 3 created"),
                "google",
            ),
        ];
        for l in &rows {
            let (visit_channel, call_id) = match l.id {
                1 => ("", Some("c1")),
                4 => ("", Some("c4")),
                6 => ("google", None),
                _ => ("", None),
            };
            c.execute(
                "INSERT INTO leads VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                rusqlite::params![
                    l.id,
                    l.created_at,
                    l.kind,
                    l.name,
                    l.phone,
                    l.visit_id,
                    l.decision,
                    name_key(&l.name),
                    visit_channel,
                    call_id
                ],
            )
            .expect("insert");
        }
        let queries = [
            LeadQuery::default(),
            LeadQuery {
                before: Some(4),
                after: Some(1),
                ..Default::default()
            },
            LeadQuery {
                from: Some(200),
                to: Some(400),
                ..Default::default()
            },
            LeadQuery {
                kind: Some("call".into()),
                ..Default::default()
            },
            LeadQuery {
                outcome: Some(OutcomeKind::Duplicate),
                ..Default::default()
            },
            LeadQuery {
                outcome: Some(OutcomeKind::Created),
                ..Default::default()
            },
            LeadQuery {
                channel: Some("google".into()),
                ..Default::default()
            },
            LeadQuery {
                channel: Some("v1".into()),
                ..Default::default()
            },
            LeadQuery {
                channel: Some("yandex".into()),
                ..Default::default()
            },
            LeadQuery {
                search: Some(Search::Phone("74991234567".into())),
                ..Default::default()
            },
            LeadQuery {
                search: Some(Search::NamePrefix("Ivan".into())),
                ..Default::default()
            },
            LeadQuery {
                search: Some(Search::NamePrefix("Пет".into())),
                ..Default::default()
            },
            LeadQuery {
                search: Some(Search::NamePrefix("пЕТ".into())),
                ..Default::default()
            },
            LeadQuery {
                search: Some(Search::NamePrefix("iVAN".into())),
                ..Default::default()
            },
            // Empty values keep the rows the partial indexes leave out.
            LeadQuery {
                channel: Some(String::new()),
                ..Default::default()
            },
            LeadQuery {
                search: Some(Search::NamePrefix(String::new())),
                ..Default::default()
            },
            LeadQuery {
                channel: Some("google".into()),
                search: Some(Search::NamePrefix("Iv".into())),
                ..Default::default()
            },
            LeadQuery {
                channel: Some("google".into()),
                outcome: Some(OutcomeKind::Created),
                kind: Some("form".into()),
                ..Default::default()
            },
        ];
        for q in queries {
            let (clause, args) = q.sql();
            let mut st = c
                .prepare(&format!(
                    "SELECT id FROM leads l WHERE {clause} ORDER BY id"
                ))
                .expect("prepare");
            let got: Vec<i64> = st
                .query_map(rusqlite::params_from_iter(args), |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            let want: Vec<i64> = rows.iter().filter(|l| q.matches(l)).map(|l| l.id).collect();
            assert_eq!(got, want, "{q:?}");
        }
        // The overview's google counts leads 1, 2, 3 and 6: the filter
        // lists the same four.
        let (clause, args) = LeadQuery {
            channel: Some("google".into()),
            ..Default::default()
        }
        .sql();
        let google: Vec<i64> = c
            .prepare(&format!(
                "SELECT id FROM leads l WHERE {clause} ORDER BY id"
            ))
            .expect("prepare")
            .query_map(rusqlite::params_from_iter(args), |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(google, [1, 2, 3, 6]);
        // A name prefix is read through its partial index.
        let q = LeadQuery {
            search: Some(Search::NamePrefix("Iv".into())),
            ..Default::default()
        };
        let (clause, args) = q.sql();
        let plan: Vec<String> = c
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT id FROM leads l WHERE {clause} ORDER BY id"
            ))
            .expect("prepare")
            .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(plan.join(" ").contains("leads_name"), "{q:?}: {plan:?}");
    }
}
