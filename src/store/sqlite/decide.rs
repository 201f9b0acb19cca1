//! Lead decisions on a thread of their own (SPEC L-3 … L-6, C-5). One
//! synchronous SQLite connection (rusqlite, cached statements) takes each
//! batch of leads, calls and CRM requests and decides and records them in
//! one IMMEDIATE transaction. Async callers send a batch and await one
//! answer: one thread hop per batch, where a statement-by-statement async
//! driver made two per statement and the SIP thread paid for the context
//! switches. The thread also serialises decisions within the process; the
//! IMMEDIATE transaction extends that to processes sharing the file.

use std::sync::mpsc;

use rusqlite::{params, Connection, OptionalExtension, PrepFlags, Row, Statement, Transaction};
use tokio::sync::oneshot;

use crate::calls::CallRecord;
use crate::clock::Clock;
use crate::crm::local::DealBook;
use crate::crm::outbox::{CallStart, Item, Plan};
use crate::leads::dedup::{
    same_lead_deals_needed, Action, Deal, Group, Identity, Lead, LeadKind, PriorLead, Settings,
};
use crate::store::leads::{Job, NewDealStatus, NewLead, Recorded};
use crate::store::record::{record_batch, Context, KnownCall, Ledger};
use crate::store::StoreError;

/// What the decision thread is asked to do.
pub(super) enum Work {
    Decide(Batch),
    /// Give back the page cache's unused pages (after a burst: see
    /// [`release_cache`]).
    ReleaseMemory,
    /// The database file (or its WAL) was deleted while this connection
    /// kept it open (see `SqliteStore::check_file`). In the thread's
    /// order, so no batch is committed to the deleted file after the copy.
    Restore(Restore),
}

/// The steps of a restore, each answered: the thread copies everything
/// its connection sees into `copy` and closes that connection (`copied`);
/// the store closes its own, puts the copy in place and says which file
/// to open (`go`); the thread opens it, checks it is this database, and
/// answers which it opened (`opened`): the file sent, or else `copy`.
pub(super) struct Restore {
    pub copy: std::path::PathBuf,
    pub copied: oneshot::Sender<Result<(), String>>,
    pub go: mpsc::Receiver<std::path::PathBuf>,
    pub opened: oneshot::Sender<Result<std::path::PathBuf, String>>,
}

/// `PRAGMA shrink_memory` (sqlite3_db_release_memory): frees the pages
/// the connection's page cache holds but no statement uses. Under load
/// the decision connection's cache fills to its 2 MB `cache_size`
/// default and keeps it: in the harness (1,000 calls/s for 30 s) that was
/// most of what the process held a minute after the load above its idle
/// figure (its thread's malloc arena: 2.4 MB). The pages come back from
/// the OS page cache on the next decision. Best effort: a failure frees
/// nothing and costs nothing else.
pub(super) fn release_cache(conn: &Connection) {
    if let Err(e) = conn.execute_batch("PRAGMA shrink_memory") {
        tracing::debug!(error = %e, "SQLite shrink_memory failed");
    }
}

pub(super) struct Batch {
    pub jobs: std::sync::Arc<Vec<Job>>,
    pub settings: Settings,
    pub status: NewDealStatus,
    pub plan: Plan,
    /// One `Recorded` per `Job::Lead`, in order.
    pub reply: oneshot::Sender<Result<Vec<Recorded>, StoreError>>,
}

/// Starts the decision thread on its own connection.
pub(super) fn start(
    conn: Connection,
    install_id: String,
    run_id: String,
    earlier_run_id: String,
    clock: Clock,
) -> Result<mpsc::Sender<Work>, StoreError> {
    let (tx, rx) = mpsc::channel::<Work>();
    std::thread::Builder::new()
        .name("siptrack-decide".into())
        .spawn(move || {
            let d = Decider {
                install_id,
                run_id,
                earlier_run_id,
                clock,
            };
            let mut conn = conn;
            while let Some(r) = d.serve(&conn, &rx) {
                conn = d.restore(conn, r);
            }
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    Ok(tx)
}

/// Copies what `conn` sees (its file or WAL may be deleted; it still
/// reads them) into a new file at `path`, user_version included.
fn write_back(conn: &Connection, path: &std::path::Path) -> rusqlite::Result<()> {
    let _ = std::fs::remove_file(path);
    conn.execute("VACUUM INTO ?1", [path.to_string_lossy()])
        .map(drop)
}

struct Decider {
    install_id: String,
    /// This process's run: its open calls are not interrupted ones.
    run_id: String,
    earlier_run_id: String,
    clock: Clock,
}

/// The decision thread's statements, each prepared on first use and kept
/// for the thread's life (issue 15). `prepare_cached` hashed each
/// statement's text (hundreds of bytes) twice per use, to find it and to
/// put it back, about a tenth of a call's decision; here a statement is
/// an index. SQLite re-prepares a kept statement itself should the schema
/// change. rusqlite resets a statement after `execute` and when its rows
/// are dropped, so none holds a read transaction between uses.
///
/// As rusqlite's cache does, statements are prepared PERSISTENT and a
/// statement's bindings are cleared once it is done: otherwise the kept
/// statements and their bound copies fill the connection's lookaside
/// memory, and SQLite's every other small allocation goes to malloc
/// under a mutex (callgrind: more instructions per call than with the
/// cache).
struct Statements<'c> {
    conn: &'c Connection,
    prepared: [Option<Statement<'c>>; SQL.len()],
    /// The statement handed out last, whose bindings are cleared when
    /// the next is asked for (it is done by then: `get` borrows `self`).
    last: Option<usize>,
}

/// The statements of `Statements`, by their index in `SQL`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sql {
    OpenCall,
    OpenAnsweredCall,
    AnswerCall,
    ForgetCall,
    RecordedCall,
    HistoryByPhone,
    HistoryByEmail,
    HistoryByTime,
    SameLeadDeals,
    InsertLead,
    SetLeadDeal,
    InsertCall,
    InsertDeal,
    AddComment,
    AddTask,
    Queue,
}

const SQL: [&str; 16] = [
    // OpenCall
    "INSERT OR IGNORE INTO open_calls (call_id, run_id, invite_at, info)
     SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM calls WHERE call_id = ?1)",
    // OpenAnsweredCall: OpenCall, then AnswerCall, in one statement. A row
    // written already (an earlier batch's, replayed) takes the answer, as
    // the UPDATE would give it.
    "INSERT INTO open_calls (call_id, run_id, invite_at, info, answer_at, dialog)
     SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS (SELECT 1 FROM calls WHERE call_id = ?1)
     ON CONFLICT (call_id) DO UPDATE SET answer_at = excluded.answer_at, dialog = excluded.dialog",
    // AnswerCall
    "UPDATE open_calls SET answer_at = ?2, dialog = ?3 WHERE call_id = ?1",
    // ForgetCall
    "DELETE FROM open_calls WHERE call_id = ?1",
    // RecordedCall
    "SELECT l.id, l.deal_id, l.outcome, c.invite_at FROM calls c JOIN leads l ON l.id = c.lead_id
      WHERE c.call_id = ?1",
    HISTORY_BY_PHONE,
    HISTORY_BY_EMAIL,
    HISTORY_BY_TIME,
    SAME_LEAD_DEALS,
    // InsertLead
    "INSERT INTO leads (created_at, kind, title, name, phone, email, visit_id, form, dialed,
                        text, fields, call_id, accepted, deal_id, outcome, visit_channel,
                        name_key)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    // SetLeadDeal
    "UPDATE leads SET deal_id = ?1, outcome = ?2 WHERE id = ?3",
    // InsertCall
    "INSERT INTO calls (call_id, caller_raw, caller, callee, destination, visit_id, marker,
                        source, visit, invite_at, answer_at, end_at, duration, status,
                        hangup, lead_id, recording, recording_reason, dtmf, recording_base)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
             ?17, ?18, ?19, ?20)",
    // InsertDeal
    "INSERT INTO deals (created_at, title, name, phone, email, visit_id, status, grp, lead_id)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    // AddComment
    "INSERT INTO comments (deal_id, created_at, text, call_id) VALUES (?1, ?2, ?3, ?4)",
    // AddTask
    "INSERT INTO tasks (deal_id, created_at, text, call_id) VALUES (?1, ?2, ?3, ?4)",
    // Queue. OR IGNORE: a call recorded again after a lost COMMIT answer
    // must not queue its webhook twice.
    "INSERT OR IGNORE INTO outbox (created_at, target, idempotency_key, order_key, event,
                                   lead_id, deal_ref, body, next_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?1)",
];

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> Self {
        Statements {
            conn,
            prepared: std::array::from_fn(|_| None),
            last: None,
        }
    }

    fn get(&mut self, sql: Sql) -> rusqlite::Result<&mut Statement<'c>> {
        let conn = self.conn;
        let i = sql as usize;
        if let Some(last) = self.last.replace(i) {
            if let Some(s) = &mut self.prepared[last] {
                s.clear_bindings();
            }
        }
        let slot = &mut self.prepared[i];
        if slot.is_none() {
            *slot = Some(conn.prepare_with_flags(SQL[i], PrepFlags::SQLITE_PREPARE_PERSISTENT)?);
        }
        // Set just above; an error rather than a panic all the same.
        slot.as_mut().ok_or(rusqlite::Error::InvalidQuery)
    }
}

fn group_of(s: &str) -> Group {
    Group::parse(s).unwrap_or(Group::NotCounted)
}

fn kind_str(k: LeadKind) -> &'static str {
    match k {
        LeadKind::Call => "call",
        LeadKind::Form => "form",
    }
}

/// part, id, title, name, phone, email, visit, time, group: the columns
/// of every part of the history query (`HISTORY_BY_*`, `SAME_LEAD_DEALS`);
/// part 0 is a prior accepted lead (time: when it was made, group: its
/// deal's), parts 2 to 4 deals.
fn history_row(r: &Row) -> rusqlite::Result<(i64, i64, Identity, i64, Group)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        Identity {
            title: r.get(2)?,
            name: r.get(3)?,
            phone: r.get(4)?,
            email: r.get(5)?,
            visit: r.get(6)?,
        },
        r.get(7)?,
        group_of(&r.get::<_, String>(8)?),
    ))
}

/// The history `decide` needs for a lead in one statement (issue 15: it
/// was four, each a statement cache look-up, bind, step and reset): the
/// accepted leads through the lead's most selective index (`INDEXED BY`:
/// without statistics SQLite may pick the e-mail index, and most calls
/// have no e-mail), then the client's deals by phone (part 2) and by
/// e-mail (part 3), each through its own index and only the most recent
/// (enough for every rule, whatever the window), and, where `$same_lead`
/// is given, the same-lead deals (part 4; see `same_lead_deals_needed`).
/// A part whose key is empty (`?1 <> ''`, a constant SQLite tests once)
/// reads nothing: an empty phone names no client. UNION ALL keeps the
/// parts in this order. ?1 phone, ?2 e-mail, ?3 title, ?4 name, ?5 visit,
/// ?6 leads since, ?7 deals since.
macro_rules! history_sql {
    ($index:literal, $term:literal $(, $same_lead:expr)?) => {
        concat!(
            "SELECT 0, l.id, l.title, l.name, l.phone, l.email, l.visit_id, l.created_at, d.grp, d.id
               FROM leads l INDEXED BY ",
            $index,
            " JOIN deals d ON d.id = l.deal_id
              WHERE l.accepted = 1 AND l.phone = ?1 AND l.email = ?2 AND l.title = ?3
                AND l.name = ?4 AND l.visit_id = ?5 AND l.created_at >= ?6",
            $term,
            "
             UNION ALL SELECT * FROM (
               SELECT 2, id, title, name, phone, email, visit_id, created_at, grp, id FROM deals
                WHERE ?1 <> '' AND phone = ?1 ORDER BY created_at DESC LIMIT 100)
             UNION ALL SELECT * FROM (
               SELECT 3, id, title, name, phone, email, visit_id, created_at, grp, id FROM deals
                WHERE ?2 <> '' AND email = ?2 ORDER BY created_at DESC LIMIT 100)"
            $(, "\n             UNION ALL ", $same_lead)?
        )
    };
}
/// Part 4 of the history: deals with the lead's title, name and visit
/// (L-3's same deal, for a lead with neither phone nor e-mail; see
/// `same_lead_deals_needed`). A statement of its own as well, bound like
/// the whole (?3 title, ?4 name, ?5 visit, ?7 deals since).
macro_rules! same_lead_deals_sql {
    () => {
        "SELECT * FROM (
               SELECT 4, id, title, name, phone, email, visit_id, created_at, grp, id FROM deals
                WHERE title = ?3 AND created_at >= ?7 AND name = ?4 AND visit_id = ?5
                ORDER BY created_at DESC LIMIT 100)"
    };
}
const HISTORY_BY_PHONE: &str = history_sql!("leads_phone", "");
// leads_email leaves out the leads without an e-mail (migration 0012):
// SQLite uses a partial index only for a query that repeats its WHERE
// term. This statement is used only for a lead with an e-mail, so the
// term drops no row.
const HISTORY_BY_EMAIL: &str = history_sql!("leads_email", " AND l.email <> ''");
const HISTORY_BY_TIME: &str = history_sql!("leads_created", "", same_lead_deals_sql!());
const SAME_LEAD_DEALS: &str = same_lead_deals_sql!();

/// Remembers a call in progress until its record is written.
fn note_open_call(st: &mut Statements, run_id: &str, c: &CallStart) -> rusqlite::Result<()> {
    st.get(Sql::OpenCall)?.execute(params![
        c.call_id,
        run_id,
        c.invite_at as i64,
        serde_json::to_string(&c.info).unwrap_or_else(|_| "{}".into()),
    ])?;
    Ok(())
}

impl Decider {
    /// Runs a restore (see [`Restore`]); returns the connection to go on
    /// with: the old one when the copy failed, else the reopened one. The
    /// old connection is closed before the copy is put in place: closing
    /// the last connection of a WAL database deletes `<path>-wal` by its
    /// name, which would otherwise be the new file's WAL.
    fn restore(&self, conn: Connection, r: Restore) -> Connection {
        if let Err(e) = write_back(&conn, &r.copy) {
            let _ = r
                .copied
                .send(Err(format!("copying to {}: {e}", r.copy.display())));
            return conn;
        }
        let placeholder = match Connection::open_in_memory() {
            Ok(c) => c,
            Err(e) => {
                let _ = r.copied.send(Err(e.to_string()));
                return conn;
            }
        };
        drop(conn);
        let _ = r.copied.send(Ok(()));
        let Ok(path) = r.go.recv() else {
            return placeholder;
        };
        // The file sent, if it is this database (it may have gone again
        // and been made anew, empty), else the copy itself.
        let mut last = String::new();
        for candidate in [path, r.copy.clone()] {
            match super::connect(&candidate).and_then(|c| {
                let id: String = c.query_row(
                    "SELECT value FROM meta WHERE key = 'install_id'",
                    [],
                    |row| row.get(0),
                )?;
                Ok((c, id))
            }) {
                Ok((c, id)) if id == self.install_id => {
                    let _ = r.opened.send(Ok(candidate));
                    return c;
                }
                Ok(_) => last = format!("{} is another database", candidate.display()),
                Err(e) => last = format!("{}: {e}", candidate.display()),
            }
        }
        let _ = r.opened.send(Err(last));
        placeholder
    }

    /// Works on `conn` until the channel closes (None) or a restore is
    /// asked for: the statements borrow the connection, so the thread
    /// leaves this to change it.
    fn serve(&self, conn: &Connection, rx: &mpsc::Receiver<Work>) -> Option<Restore> {
        // The statements live as long as the thread's connection.
        let mut st = Statements::new(conn);
        while let Ok(work) = rx.recv() {
            match work {
                Work::Decide(b) => {
                    let result = self.batch(&mut st, &b.jobs, &b.settings, &b.status, &b.plan);
                    // The caller may have gone (shutdown); the work is done.
                    let _ = b.reply.send(result);
                }
                Work::ReleaseMemory => release_cache(conn),
                Work::Restore(r) => return Some(r),
            }
        }
        None
    }

    fn batch(
        &self,
        st: &mut Statements,
        jobs: &[Job],
        s: &Settings,
        status: &NewDealStatus,
        plan: &Plan,
    ) -> Result<Vec<Recorded>, StoreError> {
        // Unchecked: the statements borrow the connection, so it cannot
        // be borrowed mutably for a checked transaction; this thread is
        // the connection's only user and never nests one.
        let tx = Transaction::new_unchecked(st.conn, rusqlite::TransactionBehavior::Immediate)?;
        let cx = Context {
            settings: s,
            status,
            plan,
            install_id: &self.install_id,
            run_id: &self.run_id,
            earlier_run_id: &self.earlier_run_id,
            now_ms: self.clock.unix_ms() as i64,
        };
        let out = record_batch(&mut SqlLedger(st), jobs, &cx)?;
        // Dropping an uncommitted transaction rolls it back (the `?`s).
        tx.commit()?;
        Ok(out)
    }
}

/// The decision's reads and writes in the decision thread's transaction.
struct SqlLedger<'a, 'c>(&'a mut Statements<'c>);

impl DealBook for SqlLedger<'_, '_> {
    type Error = rusqlite::Error;

    fn insert_deal(
        &mut self,
        new: &NewLead,
        status: &NewDealStatus,
        lead_id: i64,
    ) -> rusqlite::Result<i64> {
        let w = &new.who;
        self.0.get(Sql::InsertDeal)?.execute(params![
            new.at,
            w.title,
            w.name,
            w.phone,
            w.email,
            w.visit,
            status.status,
            status.group.as_str(),
            lead_id,
        ])?;
        Ok(self.0.conn.last_insert_rowid())
    }

    fn add_note(
        &mut self,
        deal: i64,
        action: Action,
        at: i64,
        text: &str,
        call: Option<&str>,
    ) -> rusqlite::Result<()> {
        add_note(self.0, deal, action, at, text, call)
    }
}

impl Ledger for SqlLedger<'_, '_> {
    fn recorded_call(&mut self, call_id: &str) -> rusqlite::Result<Option<KnownCall>> {
        self.0
            .get(Sql::RecordedCall)?
            .query_row(params![call_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()
    }

    fn history(
        &mut self,
        lead: &Lead,
        leads_since: i64,
        deals_since: i64,
    ) -> rusqlite::Result<(Vec<PriorLead>, Vec<Deal>)> {
        history(self.0, lead, leads_since, deals_since)
    }

    fn insert_lead(
        &mut self,
        lead: &NewLead,
        kind: LeadKind,
        accepted: bool,
        deal_id: Option<i64>,
        outcome: &str,
    ) -> rusqlite::Result<i64> {
        insert_lead(self.0, lead, kind, accepted, deal_id, outcome)
    }

    fn set_lead_deal(&mut self, lead_id: i64, deal: i64, outcome: &str) -> rusqlite::Result<()> {
        self.0
            .get(Sql::SetLeadDeal)?
            .execute(params![deal, outcome, lead_id])?;
        Ok(())
    }

    fn insert_call(&mut self, r: &CallRecord, lead_id: i64, base: &str) -> rusqlite::Result<()> {
        insert_call(self.0, r, lead_id, base)
    }

    fn open_call(&mut self, run_id: &str, c: &CallStart) -> rusqlite::Result<()> {
        note_open_call(self.0, run_id, c)
    }

    fn open_answered_call(
        &mut self,
        run_id: &str,
        c: &CallStart,
        answer_at: i64,
        dialog: Option<&str>,
    ) -> rusqlite::Result<()> {
        self.0.get(Sql::OpenAnsweredCall)?.execute(params![
            c.call_id,
            run_id,
            c.invite_at as i64,
            serde_json::to_string(&c.info).unwrap_or_else(|_| "{}".into()),
            answer_at,
            dialog,
        ])?;
        Ok(())
    }

    fn forget_call(&mut self, call_id: &str) -> rusqlite::Result<()> {
        self.0.get(Sql::ForgetCall)?.execute(params![call_id])?;
        Ok(())
    }

    /// Not a kept statement: it runs after a crash only.
    fn keep_dialog(&mut self, call_id: &str, now_ms: i64) -> rusqlite::Result<()> {
        self.0.conn.execute(
            "UPDATE open_calls SET recorded_at = ?2
              WHERE call_id = ?1 AND dialog IS NOT NULL AND answer_at IS NOT NULL",
            params![call_id, now_ms],
        )?;
        self.0.conn.execute(
            "DELETE FROM open_calls WHERE call_id = ?1 AND recorded_at IS NULL",
            params![call_id],
        )?;
        Ok(())
    }

    fn answer_call(
        &mut self,
        call_id: &str,
        answer_at: i64,
        dialog: Option<&str>,
    ) -> rusqlite::Result<()> {
        self.0
            .get(Sql::AnswerCall)?
            .execute(params![call_id, answer_at, dialog])?;
        Ok(())
    }

    fn queue(&mut self, items: &[Item], now_ms: i64) -> rusqlite::Result<()> {
        insert_items(self.0, items, now_ms)
    }
}

fn history(
    st: &mut Statements,
    lead: &Lead,
    leads_since: i64,
    deals_since: i64,
) -> rusqlite::Result<(Vec<PriorLead>, Vec<Deal>)> {
    let w = &lead.who;
    let sql = if !w.phone.is_empty() {
        Sql::HistoryByPhone
    } else if !w.email.is_empty() {
        Sql::HistoryByEmail
    } else {
        // Parts 1 to 4 in one statement: part 4 is always needed here.
        Sql::HistoryByTime
    };
    let mut history = History::default();
    history.read(st.get(sql)?, w, leads_since, deals_since)?;
    if sql != Sql::HistoryByTime
        && same_lead_deals_needed(&w.phone, &w.email, history.by_phone, history.by_email)
    {
        history.read(st.get(Sql::SameLeadDeals)?, w, leads_since, deals_since)?;
    }
    Ok((history.leads, history.deals))
}

/// What the history statements of one lead read.
#[derive(Default)]
struct History {
    leads: Vec<PriorLead>,
    deals: Vec<Deal>,
    /// Rows of parts 2 and 3: whether they stopped at their limit.
    by_phone: usize,
    by_email: usize,
}

impl History {
    fn read(
        &mut self,
        q: &mut Statement,
        w: &Identity,
        leads_since: i64,
        deals_since: i64,
    ) -> rusqlite::Result<()> {
        let all = params![
            w.phone,
            w.email,
            w.title,
            w.name,
            w.visit,
            leads_since,
            deals_since
        ];
        // Parts 1 to 3 alone bind no ?7 (the same-lead deals' window).
        let bound = all.get(..q.parameter_count()).unwrap_or(all);
        let mut rows = q.query(bound)?;
        while let Some(r) = rows.next()? {
            let part: i64 = r.get(0)?;
            match part {
                2 => self.by_phone += 1,
                3 => self.by_email += 1,
                _ => {}
            }
            // A deal can be the client's and the same lead's: once. Its id
            // is read first, so a repeat costs no strings.
            let id: i64 = r.get(1)?;
            if part != 0 && self.deals.iter().any(|d| d.id == id) {
                continue;
            }
            let (_, id, who, at, group) = history_row(r)?;
            if part == 0 {
                self.leads.push(PriorLead {
                    id,
                    who,
                    accepted_at: at,
                    deal_group: group,
                    deal: r.get(9)?,
                });
            } else {
                self.deals.push(Deal {
                    id,
                    who,
                    created_at: at,
                    group,
                });
            }
        }
        Ok(())
    }
}

/// JSON text of `v`, or `empty` without serde when there is nothing in
/// it (most calls have no visit data and no DTMF: a String less each).
fn json_or<T: serde::Serialize>(
    v: &T,
    is_empty: bool,
    empty: &'static str,
) -> std::borrow::Cow<'static, str> {
    if is_empty {
        return empty.into();
    }
    serde_json::to_string(v)
        .map(Into::into)
        .unwrap_or(empty.into())
}

/// A finished call, with the lead it made.
fn insert_call(
    st: &mut Statements,
    r: &CallRecord,
    lead_id: i64,
    recording_base: &str,
) -> rusqlite::Result<()> {
    let i = &r.info;
    st.get(Sql::InsertCall)?.execute(params![
        r.call_id,
        i.caller_raw.as_str(),
        i.caller.as_str(),
        i.dialed.as_str(),
        i.destination.as_str(),
        i.visit_id.as_deref(),
        i.marker.as_deref(),
        i.source.as_deref(),
        json_or(&i.visit, i.visit.is_empty(), "{}"),
        r.invite_at as i64,
        r.answer_at.map(|a| a as i64),
        r.end_at as i64,
        r.duration as i64,
        r.status.as_str(),
        r.hangup.map(|h| h.as_str()),
        lead_id,
        r.recording.state(),
        r.recording.reason().unwrap_or(""),
        json_or(&r.dtmf, r.dtmf.is_empty(), "[]"),
        recording_base,
    ])?;
    Ok(())
}

fn insert_lead(
    st: &mut Statements,
    lead: &NewLead,
    kind: LeadKind,
    accepted: bool,
    deal_id: Option<i64>,
    outcome: &str,
) -> rusqlite::Result<i64> {
    let w = &lead.who;
    st.get(Sql::InsertLead)?.execute(params![
        lead.at,
        kind_str(kind),
        w.title,
        w.name,
        w.phone,
        w.email,
        w.visit,
        lead.form,
        lead.dialed,
        lead.text,
        if lead.fields.is_empty() {
            "{}"
        } else {
            &lead.fields
        },
        lead.call_id,
        accepted,
        deal_id,
        outcome,
        lead.channel(),
        crate::store::query::name_key(&w.name),
    ])?;
    Ok(st.conn.last_insert_rowid())
}

fn add_note(
    st: &mut Statements,
    deal: i64,
    action: Action,
    at: i64,
    text: &str,
    call: Option<&str>,
) -> rusqlite::Result<()> {
    let sql = match action {
        Action::Comment => Sql::AddComment,
        Action::Task => Sql::AddTask,
    };
    st.get(sql)?.execute(params![deal, at, text, call])?;
    Ok(())
}

/// Writes CRM requests (C-5) in the caller's transaction.
fn insert_items(st: &mut Statements, items: &[Item], now_ms: i64) -> rusqlite::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let q = st.get(Sql::Queue)?;
    for i in items {
        q.execute(params![
            now_ms,
            i.target.as_str(),
            i.key,
            i.order_key,
            i.event.map(|e| e.as_str()).unwrap_or(""),
            i.lead_id,
            i.deal_ref,
            i.body.to_string(),
        ])?;
    }
    Ok(())
}
