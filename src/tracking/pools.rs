//! Dynamic number pools (SPEC T-1): a visit gets a number from the first
//! pool whose segment it matches, keeps it while it keeps touching it and
//! for `hold_seconds` after; a call to that number meanwhile belongs to the
//! visit. When a pool has no free number, the least recently touched one
//! is taken over.
//!
//! Pure state over an injected clock (Unix milliseconds, since holds
//! survive restarts); every change returns the [`AssignmentRow`] the
//! caller must persist, and [`Pools::restore`] takes them back.

use std::collections::{HashMap, VecDeque};

use crate::config::Destination;

use super::fields::VisitFields;
use super::filter::Filter;

#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub name: String,
    /// Normalised.
    pub numbers: Vec<String>,
    pub destination: Destination,
    pub phone_destination: bool,
    pub hold_ms: u64,
    pub segment: Option<Filter>,
}

/// What a site tells about a visit (`POST /api/v1/visits`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visit {
    pub id: String,
    /// marker, source, city, domain, page, utm_*: only non-empty values.
    /// Shared with the calls to the visit's number (no copy per call).
    pub fields: VisitFields,
}

/// A page view of a visit siptrack knows: what it sends replaces what the
/// visit had, and what it leaves out is kept. Sites send the landing
/// page's UTM tags, city and source once and later page views only to
/// keep the number (SPEC T-1); replacing the whole visit lost the
/// attribution of every call after the second page (trial, 2026-12-01).
/// The same holds for a visit that lost its number meanwhile (its hold
/// ran out, or a busy pool handed the number on): see `Pools::departed`.
fn keep_unsent_fields(sent: &mut VisitFields, held: &VisitFields) {
    for (k, v) in held {
        if !sent.contains_key(k) {
            sent.insert(k.clone(), v.clone());
        }
    }
}

/// One number's state, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignmentRow {
    pub pool: String,
    pub number: String,
    pub visit: Option<Visit>,
    pub touched_at: u64,
    /// Increases with every change, so that a late write of an older state
    /// cannot overwrite a newer one in the store.
    pub version: u64,
}

#[derive(Clone, Debug, Default)]
struct Slot {
    visit: Option<Visit>,
    touched_at: u64,
    version: u64,
}

/// The answer to a visit: its number and the pool it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub number: String,
    pub pool: String,
    pub hold_seconds: u64,
    pub row: AssignmentRow,
    /// The number was taken from another visit: the pool ran out. Nodes
    /// sharing PostgreSQL decide on a copy of the pools in the database
    /// and hand this to their own (`remember_exhaustion`).
    pub exhausted: Option<Exhaustion>,
}

/// A number as the console shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberState {
    pub pool: String,
    pub number: String,
    /// The visit holding it (None: free, or its hold ran out).
    pub visit: Option<Visit>,
    /// When the holding visit last touched it (Unix ms).
    pub touched_at: u64,
}

/// A visit wanted a number while every number of its pool was held, so
/// the longest idle one was taken from its visit: the sign a pool is too
/// small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhaustion {
    pub pool: String,
    pub number: String,
    /// The visit that lost the number.
    pub taken_from: String,
    pub at: u64,
}

/// Exhaustion events kept (the newest).
/// The maps keyed by configured numbers (pool and static numbers): every
/// INVITE looks its dialed number up in them, and std's SipHash took ~200
/// instructions a look-up (issue 15). ahash is the core's keyed hash
/// already (see Cargo.toml); keyed, so a dialed number cannot be chosen to
/// collide.
pub type NumberMap<V> = HashMap<String, V, ahash::RandomState>;

const EXHAUSTIONS_KEPT: usize = 100;

/// Visits that lost their number whose fields are kept for their next
/// page view (the oldest forgotten first): about 0.5 KB each, so at most
/// a few MB, whatever the site sends.
const DEPARTED_KEPT: usize = 4096;

pub struct Pools {
    configs: Vec<PoolConfig>,
    exhaustions: VecDeque<Exhaustion>,
    /// Per pool (config order): numbers taken from a held visit so far.
    taken_over: Vec<u64>,
    slots: Vec<Vec<Slot>>,
    /// Configured numbers only (see [`NumberMap`]).
    by_number: NumberMap<(usize, usize)>,
    by_visit: HashMap<String, (usize, usize)>,
    /// The fields of visits whose number another visit took, by visit id,
    /// and their order of leaving (bounded by `DEPARTED_KEPT`): a visitor
    /// still reading the site comes back with a page view that sends only
    /// `page`, and its call must still carry the landing page's
    /// attribution (trial, 2026-12-01: the channel and UTM tags were gone).
    departed: HashMap<String, (u64, VisitFields)>,
    /// (when it left, as `version`; the visit): an entry whose time no
    /// longer matches the map's is one that came back since.
    departed_order: VecDeque<(u64, String)>,
    /// Grants the store did not take (nodes sharing PostgreSQL, with the
    /// database down), by number, the newest of each: written when the
    /// database is back, so that every node ends up with one visit per
    /// number (trial, 2026-12-01: two nodes kept attributing one number's
    /// calls to two visits after the outage). At most one per number.
    unsaved: HashMap<String, AssignmentRow>,
    version: u64,
}

impl Pools {
    pub fn new(configs: Vec<PoolConfig>) -> Pools {
        let mut by_number = NumberMap::default();
        let slots = configs
            .iter()
            .enumerate()
            .map(|(p, c)| {
                for (i, n) in c.numbers.iter().enumerate() {
                    by_number.insert(n.clone(), (p, i));
                }
                vec![Slot::default(); c.numbers.len()]
            })
            .collect();
        Pools {
            taken_over: vec![0; configs.len()],
            configs,
            exhaustions: VecDeque::new(),
            slots,
            by_number,
            by_visit: HashMap::new(),
            departed: HashMap::new(),
            departed_order: VecDeque::new(),
            unsaved: HashMap::new(),
            version: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// The pools as configured.
    pub fn configs(&self) -> &[PoolConfig] {
        &self.configs
    }

    /// Takes back stored rows (at start, and on a node sharing PostgreSQL
    /// with others, every grant made anywhere as it is read back); rows
    /// of numbers no longer in a pool (the config changed) and rows older
    /// than the number's state here are ignored.
    pub fn restore(&mut self, rows: impl IntoIterator<Item = AssignmentRow>) {
        for row in rows {
            self.version = self.version.max(row.version);
            let Some(&(p, i)) = self.by_number.get(&row.number) else {
                continue;
            };
            if self.configs[p].name != row.pool || row.version < self.slots[p][i].version {
                continue;
            }
            if let Some(v) = &row.visit {
                self.by_visit.insert(v.id.clone(), (p, i));
            }
            // Another node handed the number on: its visit departed.
            if let Some(old) = self.slots[p][i].visit.take() {
                if row.visit.as_ref().is_none_or(|v| v.id != old.id) {
                    if self.by_visit.get(&old.id) == Some(&(p, i)) {
                        self.by_visit.remove(&old.id);
                    }
                    self.remember_departed(old);
                }
            }
            self.slots[p][i] = Slot {
                visit: row.visit,
                touched_at: row.touched_at,
                version: row.version,
            };
        }
    }

    fn held(&self, p: usize, slot: &Slot, now: u64) -> bool {
        slot.visit.is_some() && now.saturating_sub(slot.touched_at) <= self.configs[p].hold_ms
    }

    fn row(&self, p: usize, i: usize) -> AssignmentRow {
        let s = &self.slots[p][i];
        AssignmentRow {
            pool: self.configs[p].name.clone(),
            number: self.configs[p].numbers[i].clone(),
            visit: s.visit.clone(),
            touched_at: s.touched_at,
            version: s.version,
        }
    }

    /// A page view of `visit` at `now`: the number it keeps or gets, or
    /// What is known of a visit that got a number (its slot may have
    /// been handed on since; then it is forgotten).
    /// What this node knows of a visit's fields: its number's, or those
    /// kept when it lost its number or no pool took it (the newest
    /// `DEPARTED_KEPT` of those).
    pub fn visit_fields(&self, id: &str) -> Option<&VisitFields> {
        self.visit(id)
            .map(|v| &v.fields)
            .or_else(|| self.departed.get(id).map(|(_, f)| f))
    }

    pub fn visit(&self, id: &str) -> Option<&Visit> {
        let &(p, i) = self.by_visit.get(id)?;
        self.slots[p][i].visit.as_ref().filter(|v| v.id == id)
    }

    /// None when no pool's segment matches it.
    pub fn touch(&mut self, mut visit: Visit, now: u64) -> Option<Granted> {
        let mut exhausted = None;
        // The visit's own number while it still has it: held, or past its
        // hold but handed to nobody (a visitor back after a pause keeps
        // the number it may have noted, when its pool still takes it).
        let own = self.by_visit.get(&visit.id).copied().filter(|&(p, i)| {
            self.slots[p][i]
                .visit
                .as_ref()
                .is_some_and(|v| v.id == visit.id)
        });
        match own {
            Some((p, i)) => {
                if let Some(held) = &self.slots[p][i].visit {
                    keep_unsent_fields(&mut visit.fields, &held.fields);
                }
            }
            // Forgotten only once the visit has a number again (below): a
            // page view no pool takes keeps them for the next.
            None => {
                if let Some((_, fields)) = self.departed.get(&visit.id) {
                    keep_unsent_fields(&mut visit.fields, fields);
                }
            }
        }
        let mut place = own.filter(|&(p, i)| {
            self.held(p, &self.slots[p][i], now)
                || self.configs[p]
                    .segment
                    .as_ref()
                    .is_none_or(|f| f.matches(&visit.fields))
        });
        if place.is_none() {
            let Some(p) = self
                .configs
                .iter()
                .position(|c| c.segment.as_ref().is_none_or(|f| f.matches(&visit.fields)))
            else {
                // No pool takes it: its fields are still what a form lead
                // of this visit came through (QA, 2026-12-02: such a
                // lead counted under its visit id, not its marker).
                self.remember_departed(visit);
                return None;
            };
            let slots = &self.slots[p];
            // A free number if there is one, else the one touched longest
            // ago; among free ones also the longest idle, so a number just
            // released is not handed out while late callers may still dial
            // it for the previous visit.
            let free = (0..slots.len())
                .filter(|&i| !self.held(p, &slots[i], now))
                .min_by_key(|&i| (slots[i].visit.is_some(), slots[i].touched_at));
            let i = match free {
                Some(i) => i,
                None => {
                    let i = (0..slots.len()).min_by_key(|&i| slots[i].touched_at)?;
                    let e = Exhaustion {
                        pool: self.configs[p].name.clone(),
                        number: self.configs[p].numbers[i].clone(),
                        taken_from: slots[i]
                            .visit
                            .as_ref()
                            .map(|v| v.id.clone())
                            .unwrap_or_default(),
                        at: now,
                    };
                    self.remember_exhaustion(e.clone());
                    exhausted = Some(e);
                    i
                }
            };
            if let Some(old) = self.slots[p][i].visit.take() {
                if self.by_visit.get(&old.id) == Some(&(p, i)) {
                    self.by_visit.remove(&old.id);
                }
                if old.id != visit.id {
                    self.remember_departed(old);
                }
            }
            place = Some((p, i));
        }
        let (p, i) = place?;
        self.departed.remove(&visit.id);
        self.version += 1;
        self.by_visit.insert(visit.id.clone(), (p, i));
        self.slots[p][i] = Slot {
            visit: Some(visit),
            touched_at: now,
            version: self.version,
        };
        let c = &self.configs[p];
        Some(Granted {
            number: c.numbers[i].clone(),
            pool: c.name.clone(),
            hold_seconds: c.hold_ms / 1000,
            row: self.row(p, i),
            exhausted,
        })
    }

    /// Fills in the fields `visit` leaves out from what this node knows of
    /// it (its number's slot, or its fields kept when it lost the
    /// number): nodes sharing PostgreSQL decide on a fresh copy of the
    /// pools that knows only the numbers' current visits.
    pub fn fill_unsent_fields(&self, visit: &mut Visit) {
        let own = self
            .by_visit
            .get(&visit.id)
            .and_then(|&(p, i)| self.slots[p][i].visit.as_ref())
            .filter(|v| v.id == visit.id)
            .map(|v| &v.fields);
        if let Some(known) = own.or_else(|| self.departed.get(&visit.id).map(|(_, f)| f)) {
            keep_unsent_fields(&mut visit.fields, known);
        }
    }

    /// A grant the store did not take, kept to be written later (the
    /// newest per number).
    pub fn remember_unsaved(&mut self, row: AssignmentRow) {
        match self.unsaved.get(&row.number) {
            Some(kept) if kept.version >= row.version => {}
            _ => {
                self.unsaved.insert(row.number.clone(), row);
            }
        }
    }

    /// The grants still to be written, oldest change first.
    pub fn take_unsaved(&mut self) -> Vec<AssignmentRow> {
        let mut rows: Vec<AssignmentRow> = self.unsaved.drain().map(|(_, r)| r).collect();
        rows.sort_by_key(|r| r.version);
        rows
    }

    /// Keeps the fields of a visit that lost its number (the newest
    /// `DEPARTED_KEPT`).
    fn remember_departed(&mut self, visit: Visit) {
        let left = self.version;
        self.departed.insert(visit.id.clone(), (left, visit.fields));
        self.departed_order.push_back((left, visit.id));
        // The queue also holds visits that came back since (stale
        // entries): bounded at twice the map, it cannot grow without end.
        while self.departed.len() > DEPARTED_KEPT || self.departed_order.len() > 2 * DEPARTED_KEPT {
            let Some((when, id)) = self.departed_order.pop_front() else {
                break;
            };
            if self.departed.get(&id).is_some_and(|(t, _)| *t == when) {
                self.departed.remove(&id);
            }
        }
    }

    /// Keeps an exhaustion event for the console (the newest
    /// `EXHAUSTIONS_KEPT`).
    pub fn remember_exhaustion(&mut self, e: Exhaustion) {
        if let Some(p) = self.configs.iter().position(|c| c.name == e.pool) {
            self.taken_over[p] += 1;
        }
        if self.exhaustions.len() == EXHAUSTIONS_KEPT {
            self.exhaustions.pop_front();
        }
        self.exhaustions.push_back(e);
    }

    /// Prometheus text: per pool, the numbers a visit holds at `now` and
    /// the free ones, and the numbers taken from a held visit so far (an
    /// operator's sign that a pool is too small and attribution is being
    /// lost; trial, 2026-12-02: nothing showed it).
    pub fn render_metrics(&self, now: u64) -> String {
        use std::fmt::Write as _;
        let mut out = String::from(
            "# HELP siptrack_pool_numbers Numbers of each pool, by whether a visit holds them\n\
             # TYPE siptrack_pool_numbers gauge\n",
        );
        let label = |name: &str| name.replace('\\', "\\\\").replace('"', "\\\"");
        for (p, c) in self.configs.iter().enumerate() {
            let held = self.slots[p]
                .iter()
                .filter(|s| self.held(p, s, now))
                .count();
            let free = c.numbers.len() - held;
            let pool = label(&c.name);
            let _ = writeln!(
                out,
                "siptrack_pool_numbers{{pool=\"{pool}\",state=\"held\"}} {held}"
            );
            let _ = writeln!(
                out,
                "siptrack_pool_numbers{{pool=\"{pool}\",state=\"free\"}} {free}"
            );
        }
        out.push_str(
            "# HELP siptrack_pool_numbers_taken_over_total Numbers taken from a held visit for a new one (the pool was full)\n\
             # TYPE siptrack_pool_numbers_taken_over_total counter\n",
        );
        for (c, n) in self.configs.iter().zip(&self.taken_over) {
            let _ = writeln!(
                out,
                "siptrack_pool_numbers_taken_over_total{{pool=\"{}\"}} {n}",
                label(&c.name)
            );
        }
        out
    }

    /// Every number of every pool, in config order, with the visit
    /// holding it at `now`.
    pub fn numbers(&self, now: u64) -> Vec<NumberState> {
        let mut out = Vec::new();
        for (p, c) in self.configs.iter().enumerate() {
            for (i, number) in c.numbers.iter().enumerate() {
                let s = &self.slots[p][i];
                out.push(NumberState {
                    pool: c.name.clone(),
                    number: number.clone(),
                    visit: if self.held(p, s, now) {
                        s.visit.clone()
                    } else {
                        None
                    },
                    touched_at: s.touched_at,
                });
            }
        }
        out
    }

    /// The latest exhaustion events, newest first.
    pub fn exhaustions(&self) -> impl Iterator<Item = &Exhaustion> {
        self.exhaustions.iter().rev()
    }

    /// A call to `number` at `now`: its pool and the visit holding it, if
    /// the number is a pool number.
    pub fn at_call(&self, number: &str, now: u64) -> Option<(&PoolConfig, Option<&Visit>)> {
        self.at_call_pool(number, now).map(|(_, c, v)| (c, v))
    }

    /// [`Pools::at_call`] with the pool as its index in [`Pools::configs`]
    /// (which never changes after [`Pools::new`]): the router keeps its
    /// own copy of each pool's destination and borrows it per call
    /// instead of cloning three strings out of the lock.
    pub fn at_call_pool(
        &self,
        number: &str,
        now: u64,
    ) -> Option<(usize, &PoolConfig, Option<&Visit>)> {
        let &(p, i) = self.by_number.get(number)?;
        let s = &self.slots[p][i];
        let visit = if self.held(p, s, now) {
            s.visit.as_ref()
        } else {
            None
        };
        Some((p, &self.configs[p], visit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_destination;
    use crate::tracking::filter;

    fn pool(name: &str, numbers: &[&str], segment: Option<&str>) -> PoolConfig {
        PoolConfig {
            name: name.into(),
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
            destination: parse_destination("sip:pbx@127.0.0.1:5070").expect("dest"),
            phone_destination: false,
            hold_ms: 150_000,
            segment: segment.map(|s| filter::parse(s).expect("filter")),
        }
    }

    fn visit(id: &str, fields: &[(&str, &str)]) -> Visit {
        Visit {
            id: id.into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn number(p: &mut Pools, v: Visit, now: u64) -> Option<String> {
        p.touch(v, now).map(|g| g.number)
    }

    /// The console's view: who holds what, and each time a held number
    /// had to be taken (never when a free one was there), newest first,
    /// bounded.
    #[test]
    fn numbers_and_exhaustion_events() {
        let mut p = Pools::new(vec![pool("site", &["1", "2"], None)]);
        number(&mut p, visit("a", &[]), 0);
        number(&mut p, visit("b", &[]), 10);
        assert_eq!(p.exhaustions().count(), 0, "free numbers were there");
        let shown = p.numbers(20);
        assert_eq!(
            shown
                .iter()
                .map(|n| (
                    n.number.as_str(),
                    n.visit.as_ref().map(|v| v.id.as_str()),
                    n.touched_at
                ))
                .collect::<Vec<_>>(),
            [("1", Some("a"), 0), ("2", Some("b"), 10)]
        );
        let granted = p.touch(visit("c", &[]), 20).expect("a number");
        let event = Exhaustion {
            pool: "site".into(),
            number: "1".into(),
            taken_from: "a".into(),
            at: 20,
        };
        let e: Vec<&Exhaustion> = p.exhaustions().collect();
        assert_eq!(e, [&event]);
        // The grant says so too: a node sharing PostgreSQL decides on a
        // copy and tells its own pools.
        assert_eq!(granted.exhausted.as_ref(), Some(&event));
        let mut here = Pools::new(vec![pool("site", &["1", "2"], None)]);
        here.remember_exhaustion(event.clone());
        assert_eq!(here.exhaustions().collect::<Vec<_>>(), [&event]);
        // On /metrics: both numbers held, one taken over, on either node.
        for pools in [&p, &here] {
            assert!(pools
                .render_metrics(20)
                .contains("siptrack_pool_numbers_taken_over_total{pool=\"site\"} 1\n"));
        }
        let m = p.render_metrics(20);
        assert!(
            m.contains("siptrack_pool_numbers{pool=\"site\",state=\"held\"} 2\n"),
            "{m}"
        );
        assert!(
            m.contains("siptrack_pool_numbers{pool=\"site\",state=\"free\"} 0\n"),
            "{m}"
        );
        // Prometheus text: every line starts at its first column (the
        // TYPE lines began with 13 spaces; trial, 2026-12-02).
        assert!(
            m.lines().all(|l| !l.starts_with(char::is_whitespace)),
            "{m}"
        );
        assert!(m.contains("\n# TYPE siptrack_pool_numbers gauge\n"), "{m}");
        // After the hold nobody holds the numbers, and a new visit takes a
        // free one: no event.
        assert!(p.numbers(1_000_000).iter().all(|n| n.visit.is_none()));
        number(&mut p, visit("d", &[]), 1_000_000);
        assert_eq!(p.exhaustions().count(), 1);
        for t in 0..(EXHAUSTIONS_KEPT as u64 + 5) {
            number(&mut p, visit(&format!("x{t}"), &[]), 1_000_001 + t);
        }
        assert_eq!(p.exhaustions().count(), EXHAUSTIONS_KEPT);
        assert_eq!(
            p.exhaustions().next().map(|e| e.at),
            Some(1_000_001 + EXHAUSTIONS_KEPT as u64 + 4)
        );
    }

    /// SPEC T-1's repeat POST on each page view keeps the number and the
    /// attribution: a later page view that sends only `page` (or a new
    /// value of one field) leaves the landing page's UTM tags, city and
    /// source in place. Another visit on the number starts afresh.
    #[test]
    fn a_page_view_keeps_the_fields_it_does_not_send() {
        let mut p = Pools::new(vec![pool("site", &["1", "2"], None)]);
        let landing = [
            ("utm_source", "google"),
            ("source", "ads"),
            ("city", "Kazan"),
            ("page", "/"),
        ];
        let n = number(&mut p, visit("v7", &landing), 0).expect("a number");
        let second = [("page", "/second"), ("city", "Moscow")];
        assert_eq!(number(&mut p, visit("v7", &second), 1_000), Some(n.clone()));
        let (_, v) = p.at_call(&n, 2_000).expect("pool number");
        let fields = v.expect("held by v7").fields.to_map();
        let want: std::collections::BTreeMap<String, String> = [
            ("utm_source", "google"),
            ("source", "ads"),
            ("city", "Moscow"),
            ("page", "/second"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(fields, want);
        // The number taken by another visit after its hold: nothing of v7.
        let m = number(&mut p, visit("w", &[("page", "/w")]), 10_000_000).expect("a number");
        let (_, v) = p.at_call(&m, 10_000_001).expect("pool number");
        let fields = v.expect("held by w").fields.to_map();
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["page"]);
    }

    /// A visit that lost its number (its hold ran out, or a busy pool
    /// handed it on) and comes back with a page view keeps its
    /// attribution, and gets its own number again when nobody took it.
    #[test]
    fn a_visit_back_after_losing_its_number_keeps_its_fields() {
        let mut p = Pools::new(vec![pool("site", &["1", "2"], None)]);
        let landing = [("marker", "vk_ads"), ("utm_source", "vk")];
        let fields_at = |p: &Pools, n: &str, now| {
            let (_, v) = p.at_call(n, now).expect("pool number");
            v.expect("held").fields.to_map()
        };
        let a = number(&mut p, visit("v1", &landing), 0).expect("a number");
        number(&mut p, visit("v2", &[("source", "organic")]), 1_000).expect("a number");
        // Both numbers held: v3 takes v1's, the longest idle.
        let taken = number(&mut p, visit("v3", &[("city", "Omsk")]), 2_000);
        assert_eq!(taken, Some(a.clone()));
        let back = number(&mut p, visit("v1", &[("page", "/x")]), 3_000).expect("a number");
        let f = fields_at(&p, &back, 3_001);
        assert_eq!(f.get("marker").map(String::as_str), Some("vk_ads"), "{f:?}");
        assert_eq!(f.get("utm_source").map(String::as_str), Some("vk"));
        assert_eq!(f.get("page").map(String::as_str), Some("/x"));
        // The visit that lost its number now (v2) kept its own fields too.
        let v2 = number(&mut p, visit("v2", &[("page", "/y")]), 4_000).expect("a number");
        assert_eq!(
            fields_at(&p, &v2, 4_001).get("source").map(String::as_str),
            Some("organic")
        );

        // Past its hold, with nobody on its number: the same number back.
        let mut p = Pools::new(vec![pool("site", &["1", "2"], None)]);
        let a = number(&mut p, visit("v1", &landing), 0).expect("a number");
        assert_eq!(
            number(&mut p, visit("v1", &[("page", "/later")]), 1_000_000),
            Some(a.clone())
        );
        let f = fields_at(&p, &a, 1_000_001);
        assert_eq!(f.get("marker").map(String::as_str), Some("vk_ads"), "{f:?}");
    }

    /// Nodes sharing PostgreSQL: the database's copy of the pools knows
    /// only each number's current visit; the node that learnt, through
    /// `restore`, that its visit's number went to another fills the
    /// visit's next page view in before asking.
    #[test]
    fn a_node_fills_in_a_departed_visits_fields() {
        let mut p = Pools::new(vec![pool("site", &["1"], None)]);
        let g = p
            .touch(visit("v1", &[("marker", "vk_ads")]), 0)
            .expect("a number");
        let mut elsewhere = g.row.clone();
        elsewhere.visit = Some(visit("v2", &[("source", "organic")]));
        elsewhere.version += 5;
        p.restore([elsewhere]);
        let mut page_view = visit("v1", &[("page", "/x")]);
        p.fill_unsent_fields(&mut page_view);
        let f = page_view.fields.to_map();
        assert_eq!(f.get("marker").map(String::as_str), Some("vk_ads"), "{f:?}");
        assert_eq!(f.get("page").map(String::as_str), Some("/x"));
        // A visit this node never saw is left as it came.
        let mut other = visit("v9", &[("page", "/y")]);
        p.fill_unsent_fields(&mut other);
        assert_eq!(other.fields.to_map().len(), 1);
    }

    /// Grants the store did not take: the newest per number, oldest change
    /// first, taken once.
    #[test]
    fn unsaved_grants_keep_the_newest_per_number() {
        let mut p = Pools::new(vec![pool("site", &["1", "2"], None)]);
        let a = p.touch(visit("a", &[]), 0).expect("a number").row;
        let b = p.touch(visit("b", &[]), 1).expect("a number").row;
        let a2 = p
            .touch(visit("a", &[("page", "/2")]), 2)
            .expect("a number")
            .row;
        for row in [a2.clone(), a, b.clone()] {
            p.remember_unsaved(row);
        }
        assert_eq!(p.take_unsaved(), [b, a2]);
        assert!(p.take_unsaved().is_empty());
    }

    /// A page view no pool takes (its segment no longer matches) does not
    /// spend what was kept of the visit: the next one still has it.
    #[test]
    fn a_page_view_no_pool_takes_keeps_the_departed_fields() {
        let mut p = Pools::new(vec![pool(
            "moscow",
            &["1"],
            Some(r#"["city", "=", "Moscow"]"#),
        )]);
        let moscow = [("city", "Moscow"), ("marker", "vk_ads")];
        number(&mut p, visit("v1", &moscow), 0).expect("a number");
        number(&mut p, visit("v2", &[("city", "Moscow")]), 1_000).expect("taken over");
        assert_eq!(
            number(&mut p, visit("v1", &[("city", "Kazan")]), 2_000),
            None
        );
        let back = number(&mut p, visit("v1", &[("city", "Moscow")]), 3_000).expect("a number");
        let (_, v) = p.at_call(&back, 3_001).expect("pool number");
        let f = v.expect("held by v1").fields.to_map();
        assert_eq!(f.get("marker").map(String::as_str), Some("vk_ads"), "{f:?}");
        assert!(
            !p.departed.contains_key("v1"),
            "forgotten once it has a number"
        );
    }

    /// A visit's fields stay known when it loses its number and when no
    /// pool takes it: a form lead of that visit is counted under its
    /// marker (QA, 2026-12-02: under its visit id).
    #[test]
    fn a_visits_fields_are_known_without_a_number() {
        let mut p = Pools::new(vec![pool(
            "site",
            &["1"],
            Some(r#"["source", "!=", "test"]"#),
        )]);
        number(&mut p, visit("a", &[("marker", "m_a")]), 0).expect("a number");
        let field = |p: &Pools, id: &str| {
            p.visit_fields(id)
                .and_then(|f| f.to_map().get("marker").cloned())
        };
        assert_eq!(field(&p, "a").as_deref(), Some("m_a"));
        // b takes a's number; a is still known.
        number(&mut p, visit("b", &[("marker", "m_b")]), 1_000_000).expect("a number");
        assert_eq!(field(&p, "a").as_deref(), Some("m_a"));
        assert_eq!(field(&p, "b").as_deref(), Some("m_b"));
        // No pool takes c: known all the same.
        assert!(number(
            &mut p,
            visit("c", &[("marker", "m_c"), ("source", "test")]),
            2
        )
        .is_none());
        assert_eq!(field(&p, "c").as_deref(), Some("m_c"));
        assert_eq!(field(&p, "nobody"), None);
    }

    #[test]
    fn departed_visits_are_remembered_within_a_bound() {
        let mut p = Pools::new(vec![pool("site", &["1"], None)]);
        for k in 0..(3 * DEPARTED_KEPT) {
            number(
                &mut p,
                visit(&format!("v{k}"), &[("marker", "m")]),
                k as u64,
            )
            .expect("a number");
            // Every fourth time the visit that just lost the number comes
            // back for it (leaving a stale entry in the queue).
            if k % 4 == 0 && k > 0 {
                number(&mut p, visit(&format!("v{}", k - 1), &[]), k as u64).expect("a number");
            }
        }
        assert!(p.departed.len() <= DEPARTED_KEPT, "{}", p.departed.len());
        assert!(p.departed_order.len() <= 2 * DEPARTED_KEPT);
        // The newest departed visit is still known; the first is not.
        let last = format!("v{}", 3 * DEPARTED_KEPT - 2);
        assert!(p.departed.contains_key(&last));
        assert!(!p.departed.contains_key("v1"));
    }

    #[test]
    fn a_visit_keeps_its_number_while_it_touches_it() {
        let mut p = Pools::new(vec![pool("site", &["1", "2"], None)]);
        let n = number(&mut p, visit("a", &[]), 0).expect("a number");
        assert_eq!(number(&mut p, visit("a", &[]), 100_000), Some(n.clone()));
        // 150 s after the last touch: still held.
        assert_eq!(number(&mut p, visit("a", &[]), 250_000), Some(n.clone()));
        let (_, v) = p.at_call(&n, 400_000).expect("pool number");
        assert_eq!(v.map(|v| v.id.as_str()), Some("a"));
        // Past the hold: a call no longer belongs to the visit.
        let (c, v) = p.at_call(&n, 400_001).expect("pool number");
        assert!(v.is_none());
        assert_eq!(c.name, "site");
    }

    #[test]
    fn different_visits_get_different_numbers_then_reuse_the_least_recently_touched() {
        let mut p = Pools::new(vec![pool("site", &["1", "2", "3"], None)]);
        let a = number(&mut p, visit("a", &[]), 0).expect("a");
        let b = number(&mut p, visit("b", &[]), 10).expect("b");
        let c = number(&mut p, visit("c", &[]), 20).expect("c");
        assert_eq!([&a, &b, &c].map(String::as_str).len(), 3);
        assert!(a != b && b != c && a != c);
        // a touches again: b is now the least recently touched.
        assert_eq!(number(&mut p, visit("a", &[]), 30), Some(a.clone()));
        let d = number(&mut p, visit("d", &[]), 40).expect("d");
        assert_eq!(
            d, b,
            "exhausted: the least recently touched number is reused"
        );
        assert_eq!(
            p.at_call(&b, 50).and_then(|(_, v)| v).map(|v| v.id.clone()),
            Some("d".into())
        );
        // b's next page view gets another number (c's, the oldest now).
        assert_eq!(number(&mut p, visit("b", &[]), 60), Some(c));
    }

    #[test]
    fn a_released_number_is_not_handed_out_first() {
        let mut p = Pools::new(vec![pool("site", &["1", "2"], None)]);
        let a = number(&mut p, visit("a", &[]), 0).expect("a");
        // a's hold ends at 150 000; the never-used number goes first.
        let b = number(&mut p, visit("b", &[]), 200_000).expect("b");
        assert_ne!(a, b);
    }

    #[test]
    fn segments_choose_the_pool_and_unmatched_visits_get_none() {
        let mut p = Pools::new(vec![
            pool(
                "organic",
                &["1"],
                Some(r#"[["source", "like%", "organic"]]"#),
            ),
            pool(
                "ads",
                &["2"],
                Some(r#"["utm_medium", "in", ["cpc", "cpm"]]"#),
            ),
        ]);
        let g = p
            .touch(visit("a", &[("source", "organic google")]), 0)
            .expect("organic");
        assert_eq!(
            (g.number.as_str(), g.pool.as_str(), g.hold_seconds),
            ("1", "organic", 150)
        );
        let g = p
            .touch(visit("b", &[("utm_medium", "cpc")]), 0)
            .expect("ads");
        assert_eq!(g.pool, "ads");
        assert!(p.touch(visit("c", &[("source", "direct")]), 0).is_none());
    }

    #[test]
    fn rows_restore_the_same_state() {
        let mut p = Pools::new(vec![pool("site", &["1", "2"], None)]);
        let g1 = p
            .touch(visit("a", &[("city", "Moscow")]), 1_000)
            .expect("a");
        let g2 = p.touch(visit("b", &[]), 2_000).expect("b");
        assert!(g2.row.version > g1.row.version);
        let mut q = Pools::new(vec![pool("site", &["1", "2"], None)]);
        q.restore([g1.row.clone(), g2.row.clone()]);
        let (_, v) = q.at_call(&g1.number, 3_000).expect("pool number");
        assert_eq!(v, g1.row.visit.as_ref());
        assert_eq!(
            number(&mut q, visit("a", &[]), 4_000),
            Some(g1.number.clone())
        );
        assert!(q.touch(visit("c", &[]), 5_000).expect("c").row.version > g2.row.version);
        // An older state read back late does not undo a newer one.
        let mut late = g2.row.clone();
        late.version = 0;
        late.visit = None;
        q.restore([late]);
        assert!(q.at_call(&g2.number, 5_000).expect("pool").1.is_some());
        // A row for a number the config no longer has is ignored.
        let mut r = Pools::new(vec![pool("site", &["9"], None)]);
        r.restore([g1.row]);
        assert!(r.at_call("1", 3_000).is_none());
    }
}
