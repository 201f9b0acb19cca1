//! From finished calls and form posts to recorded leads: builds the lead
//! (SPEC L-1), then lets the store decide and record it atomically.
//! Calls go through one queue, in order. When the database does not take
//! them, they go to a local journal (`journal.rs`) and are replayed into
//! the database, in order, once it works again: a storage failure costs
//! no call, and memory holds only what the journal could not take either
//! (bounded). At start, calls an earlier run saw begin and never recorded
//! (it was killed) are recorded as interrupted.

use crate::log_text::Clean;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::journal::Journal;

use crate::calls::CallRecord;
use crate::config::LeadsConfig;
use crate::crm::outbox::CallStart;
use crate::leads::dedup::{Group, Identity, LeadKind};
use crate::store::leads::{Job, NewDealStatus, NewLead, Recorded};
use crate::store::{Store, StoreError};

/// The lead a call makes: title `Incoming call from <caller>`, the caller
/// as phone, the visit (for static tracking, the channel's marker), and a
/// text naming the dialed number. A withheld caller (no phone, SPEC T-5)
/// makes `Incoming call from a withheld number` without a phone.
pub fn call_lead(r: &CallRecord) -> NewLead {
    let i = &r.info;
    let title = if i.caller.is_empty() {
        "Incoming call from a withheld number".to_string()
    } else {
        format!("Incoming call from {}", i.caller)
    };
    NewLead {
        kind: Some(LeadKind::Call),
        who: Identity {
            title,
            name: String::new(),
            phone: i.caller.to_string(),
            email: String::new(),
            visit: i.lead_visit().to_string(),
        },
        form: String::new(),
        dialed: i.dialed.to_string(),
        text: format!(
            "Call to {} ({}, {} s)",
            i.dialed,
            r.status.as_str(),
            r.duration
        ),
        fields: String::new(),
        // A call's visit rides with its call record.
        visit_data: Default::default(),
        call_id: Some(r.call_id.clone()),
        at: (r.invite_at / 1000) as i64,
    }
}

pub fn new_deal_status(cfg: &LeadsConfig) -> NewDealStatus {
    NewDealStatus {
        status: cfg.new_deal_status.clone(),
        group: cfg
            .group_of(&cfg.new_deal_status)
            .unwrap_or(Group::NotCounted),
    }
}

/// Records one finished call and its lead.
pub async fn record_call(
    store: &Store,
    cfg: &LeadsConfig,
    r: &CallRecord,
) -> Result<Recorded, StoreError> {
    let lead = call_lead(r);
    store
        .record_lead(&lead, &cfg.dedup, &new_deal_status(cfg), Some(r), &cfg.crm)
        .await
}

/// What the SIP side reports to the pipeline, in order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CallNews {
    /// A new call: remembered until its record is written (so a crash
    /// leaves it as interrupted), and its call-start webhook if configured.
    Started(CallStart),
    Ended(CallRecord),
    /// A call that ended without being one (an INVITE challenged for
    /// credentials that never came back): forget its start.
    Abandoned(String),
    /// A call was answered: its dialog goes with its start into the
    /// store, so another node can relay its BYE (issue 14).
    Answered(crate::calls::AnsweredCall),
}

/// Calls taken off the queue at once, recorded in one transaction.
const BATCH: usize = 256;
/// Batches go to the database at most this often: news arriving sooner
/// after the last batch wait and join the next one. Under load a call's
/// three news (start, answer, end) no longer cost a wake-up of the
/// decision thread, a reply wake-up of the SIP thread and a commit each
/// (issue 15: measured in README "Performance"); a quiet node's news
/// still go at once, and a record is late by at most this. Not on a store
/// shared by several nodes: there an answered call's dialog must reach
/// the database as soon as it can, for another node to take the call
/// over should this one die, and PostgreSQL's round trips batch the news
/// anyway. Nor after a full batch: more news are waiting then, and a
/// wait per batch would cap the pipeline at BATCH news per LINGER (about
/// 17,000 calls/s, within reach of one SIP thread on a fast machine),
/// with the rest piling up in the queue.
const LINGER: Duration = Duration::from_millis(5);
/// Call news held in memory when neither the database nor the journal
/// takes them; beyond this they are lost (counted, logged, exit code 1).
const MAX_HELD: usize = 200_000;
/// How long a batch may wait for the database before it goes to the
/// journal as well ([`Pipeline::record_in_time`]).
const DURABLE_WITHIN: Duration = Duration::from_secs(1);
/// A queue longer than this makes /healthz answer 503.
const BACKLOG_ALARM: u64 = 10_000;

/// How the store is doing, for /healthz and /metrics.
#[derive(Debug, Default)]
pub struct StorageHealth {
    /// The last storage error while the database refuses writes.
    failing: Mutex<Option<String>>,
    /// Call news waiting in the queue (SIP side to pipeline).
    pub queued: AtomicU64,
    /// Call news in the journal, and held in memory.
    pub journaled: AtomicU64,
    pub held: AtomicU64,
    pub errors_total: AtomicU64,
    pub lost_total: AtomicU64,
    /// The database file is not the one open (replaced while running).
    file_problem: Mutex<Option<String>>,
    /// What the node's periodic look at the database found (None: it
    /// answered): a database that goes away while no call ends is seen
    /// too (trial, 2026-12-02: /healthz said ok for a stopped PostgreSQL
    /// while the API refused leads).
    probe: Mutex<Option<String>>,
}

impl StorageHealth {
    fn fail(&self, e: &str) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failing.lock() {
            *f = Some(e.to_string());
        }
    }

    fn ok(&self) {
        if let Ok(mut f) = self.failing.lock() {
            *f = None;
        }
    }

    pub fn backlog(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
            + self.journaled.load(Ordering::Relaxed)
            + self.held.load(Ordering::Relaxed)
    }

    /// Sets or clears what is wrong with the database file itself.
    pub fn set_file_problem(&self, problem: Option<String>) {
        if let Ok(mut f) = self.file_problem.lock() {
            *f = problem;
        }
    }

    /// Why the node is not healthy, if it is not.
    /// Sets or clears what the periodic look at the database found; a
    /// failed look counts as a storage error.
    pub fn set_probe(&self, problem: Option<String>) {
        if problem.is_some() {
            self.errors_total.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut p) = self.probe.lock() {
            *p = problem;
        }
    }

    /// Why the database is failing now, if it is: the last write's
    /// error, else the last look's.
    fn failing(&self) -> Option<String> {
        let failing = self.failing.lock().ok().and_then(|f| f.clone());
        failing.or_else(|| self.probe.lock().ok().and_then(|p| p.clone()))
    }

    pub fn problem(&self) -> Option<String> {
        if let Some(p) = self.file_problem.lock().ok().and_then(|f| f.clone()) {
            return Some(p);
        }
        let failing = self.failing();
        let waiting = self.backlog();
        match failing {
            Some(e) => Some(format!(
                "storage failing ({e}); {waiting} call events waiting ({} in the journal, {} in memory)",
                self.journaled.load(Ordering::Relaxed),
                self.held.load(Ordering::Relaxed)
            )),
            None if self.queued.load(Ordering::Relaxed) > BACKLOG_ALARM => Some(format!(
                "lead pipeline backlog: {} call events queued",
                self.queued.load(Ordering::Relaxed)
            )),
            None => None,
        }
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let up = u8::from(self.failing().is_none());
        format!(
            "# TYPE siptrack_storage_up gauge\nsiptrack_storage_up {up}\n\
             # TYPE siptrack_storage_errors_total counter\nsiptrack_storage_errors_total {}\n\
             # TYPE siptrack_calls_backlog gauge\nsiptrack_calls_backlog {}\n\
             # TYPE siptrack_calls_journaled gauge\nsiptrack_calls_journaled {}\n\
             # TYPE siptrack_calls_lost_total counter\nsiptrack_calls_lost_total {}\n",
            self.errors_total.load(Ordering::Relaxed),
            self.backlog(),
            self.journaled.load(Ordering::Relaxed),
            self.lost_total.load(Ordering::Relaxed),
        )
    }
}

/// [`Pipeline::stash`] over the fields it needs, so that news can be
/// stashed while the database is still asked for a batch
/// ([`Pipeline::record_in_time`]): memory first (what the journal could
/// not take before stays ahead), then all of it into the journal, else
/// kept up to MAX_HELD and the rest counted lost.
fn stash_into(
    held: &mut VecDeque<CallNews>,
    journal: Option<&mut Journal>,
    (lost, health): (&mut u64, &StorageHealth),
    news: Vec<CallNews>,
) {
    held.extend(news);
    if let Some(j) = journal {
        let pending: Vec<CallNews> = held.iter().cloned().collect();
        match j.append(&pending) {
            Ok(()) => held.clear(),
            Err(e) => tracing::error!(
                journal = %j.path().display(),
                error = %e,
                held = held.len(),
                "journal write failed; calls held in memory"
            ),
        }
    }
    while held.len() > MAX_HELD {
        held.pop_back();
        *lost += 1;
        health.lost_total.fetch_add(1, Ordering::Relaxed);
    }
    if *lost > 0 {
        tracing::error!(
            lost = *lost,
            "calls lost: neither the database nor the journal takes them"
        );
    }
}

/// Where news wait while the journal is replayed: beside it.
fn spill_path(journal: &std::path::Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// The spill journal's entries appended to the journal (an earlier run
/// ended during a replay), then the spill emptied. Appended twice after a
/// crash in between: recorded once all the same (by Call-ID).
fn merge_spill(journal: &mut Journal, spill: &mut Journal) {
    if spill.is_empty() {
        return;
    }
    let moved = spill
        .read_all()
        .and_then(|entries| journal.append(&entries))
        .and_then(|()| spill.clear());
    if let Err(e) = moved {
        tracing::error!(journal = %spill.path().display(), error = %e, "cannot move the spill journal into the journal; its calls wait for the next start");
    }
}

/// The log line of each call a batch recorded.
fn log_recorded(jobs: &[Job], done: &[Recorded]) {
    let ended = jobs.iter().filter_map(|j| match j {
        Job::Lead(_, Some(r)) => Some(r),
        _ => None,
    });
    // A batch's lines in one write (see `log_lines`).
    crate::log_lines::together(|| {
        for (r, rec) in ended.zip(done) {
            if rec.earlier {
                // Its end after a restart recorded it `interrupted`: the
                // log said these values as if recorded (trial, 2026-12-02).
                tracing::info!(
                    call_id = %Clean(&r.call_id),
                    status = r.status.as_str(),
                    duration = r.duration,
                    hangup = r.hangup.map(|h| h.as_str()).unwrap_or(""),
                    lead = rec.lead_id,
                    "call end of a call already recorded (interrupted at a restart): the record and its lead stay as they are"
                );
                continue;
            }
            tracing::info!(
                call_id = %Clean(&r.call_id),
                caller = %Clean(&r.info.caller),
                dialed = %Clean(&r.info.dialed),
                status = r.status.as_str(),
                duration = r.duration,
                hangup = r.hangup.map(|h| h.as_str()).unwrap_or(""),
                lead = rec.lead_id,
                outcome = %rec.outcome,
                "call"
            );
        }
    });
}

/// The news of a batch the database refused, in order, for the journal.
/// The decision thread has let go of its share by now; if not, the news
/// are copied out instead.
fn give_back(jobs: Arc<Vec<Job>>) -> Vec<CallNews> {
    let jobs = Arc::try_unwrap(jobs).unwrap_or_else(|shared| (*shared).clone());
    jobs.into_iter().filter_map(news_of).collect()
}

/// Where calls go when the database does not take them.
pub struct PipelineOptions {
    /// None: memory only (bounded).
    pub journal: Option<PathBuf>,
    pub health: Arc<StorageHealth>,
    /// Recording files a crash left unfinished, repaired at this start
    /// (`media::link::file_name`s): the interrupted calls they belong to
    /// are recorded with recording `partial`.
    pub partial_recordings: std::collections::HashSet<String>,
}

/// How the pipeline ended: call news that are neither in the database
/// nor in the journal were lost.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PipelineEnd {
    pub undurable: u64,
}

/// The news a job was made from ([`job`] the other way round).
fn news_of(j: Job) -> Option<CallNews> {
    match j {
        Job::Start(s, _) => Some(CallNews::Started(s)),
        Job::Lead(_, Some(r)) => Some(CallNews::Ended(r)),
        // A form's lead: never made from call news.
        Job::Lead(_, None) => None,
        Job::Abandoned(id) => Some(CallNews::Abandoned(id)),
        Job::Answered(a) => Some(CallNews::Answered(a)),
    }
}

fn job(n: CallNews, earlier_run: bool) -> Job {
    match n {
        CallNews::Started(s) => Job::Start(s, earlier_run),
        CallNews::Ended(r) => Job::Lead(call_lead(&r), Some(r)),
        CallNews::Abandoned(id) => Job::Abandoned(id),
        CallNews::Answered(a) => Job::Answered(a),
    }
}

struct Pipeline {
    store: Store,
    cfg: Arc<LeadsConfig>,
    status: NewDealStatus,
    journal: Option<Journal>,
    /// Not in the database, not in the journal: after the journal's
    /// entries in order.
    held: VecDeque<CallNews>,
    health: Arc<StorageHealth>,
    /// The journal's entries at start are an earlier run's.
    /// How many of the journal's first entries an earlier run wrote (its
    /// call starts still open then are that run's interrupted calls);
    /// what this run adds while the database fails are its own.
    earlier_entries: usize,
    /// Interrupted calls of earlier runs are recorded.
    interrupted_done: bool,
    /// See [`PipelineOptions::partial_recordings`].
    partial_recordings: std::collections::HashSet<String>,
    lost: u64,
}

impl Pipeline {
    async fn record(&self, news: Vec<CallNews>, earlier_run: bool) -> Result<(), StoreError> {
        self.record_or_give_back(news, earlier_run)
            .await
            .map_err(|(e, _)| e)
    }

    /// [`Pipeline::record`], and on failure the news back, in order, for
    /// the journal. Taken back out of the jobs they became rather than
    /// cloned before: a clone of a batch cost each call about 13
    /// allocations on the SIP thread (issue 15), for a failure that is
    /// rare.
    async fn record_or_give_back(
        &self,
        news: Vec<CallNews>,
        earlier_run: bool,
    ) -> Result<(), (StoreError, Vec<CallNews>)> {
        let jobs: Vec<Job> = news.into_iter().map(|n| job(n, earlier_run)).collect();
        let jobs = Arc::new(jobs);
        match self
            .store
            .record_calls(jobs.clone(), &self.cfg.dedup, &self.status, &self.cfg.crm)
            .await
        {
            Ok(done) => {
                log_recorded(&jobs, &done);
                Ok(())
            }
            Err(e) => Err((e, give_back(jobs))),
        }
    }

    /// A batch of this run into the database, made durable in time: one
    /// the database has not taken within [`DURABLE_WITHIN`] (a database
    /// that hangs rather than refuses: a frozen server, a lock held, a
    /// lost connection; its statement timeout is 20 s) goes to the
    /// journal meanwhile, so a crash while it waits loses nothing. The
    /// database's answer still counts; the journal's replay then finds
    /// those calls recorded (`Ledger::recorded_call`, open calls
    /// inserted once, CRM requests by idempotency key). Trial,
    /// 2026-12-02: calls that ended while PostgreSQL was frozen sat in
    /// memory for 20 s, and a `kill -9` then lost them without a trace.
    /// While it waits on, news that come go to the journal behind the
    /// batch (`queue`; `open` turns false when it closes). Ok(true): the
    /// journal has the batch as well.
    async fn record_in_time(
        &mut self,
        batch: Vec<CallNews>,
        queue: &mut mpsc::UnboundedReceiver<CallNews>,
        open: &mut bool,
    ) -> Result<bool, (StoreError, Vec<CallNews>)> {
        let jobs: Arc<Vec<Job>> = Arc::new(batch.into_iter().map(|n| job(n, false)).collect());
        let recording =
            self.store
                .record_calls(jobs.clone(), &self.cfg.dedup, &self.status, &self.cfg.crm);
        tokio::pin!(recording);
        let mut journaled = false;
        let answer = tokio::select! {
            answer = &mut recording => answer,
            _ = tokio::time::sleep(DURABLE_WITHIN) => {
                if let Some(j) = self.journal.as_mut() {
                    let copy: Vec<CallNews> = jobs.iter().cloned().filter_map(news_of).collect();
                    match j.append(&copy) {
                        Ok(()) => {
                            journaled = true;
                            tracing::warn!(calls = copy.len(), "the database has not answered within 1 s: calls written to the journal meanwhile");
                        }
                        Err(e) => {
                            tracing::error!(journal = %j.path().display(), error = %e, "journal write failed; calls wait for the database in memory");
                        }
                    }
                }
                self.gauges();
                loop {
                    tokio::select! {
                        answer = &mut recording => break answer,
                        n = queue.recv(), if journaled && *open => {
                            let Some(n) = n else {
                                *open = false;
                                continue;
                            };
                            let later = with_the_rest(n, queue);
                            // Behind the batch, in order.
                            stash_into(
                                &mut self.held,
                                self.journal.as_mut(),
                                (&mut self.lost, &self.health),
                                later,
                            );
                            self.gauges();
                        }
                    }
                }
            }
        };
        match answer {
            Ok(done) => {
                log_recorded(&jobs, &done);
                Ok(journaled)
            }
            // Already durable: nothing to give back.
            Err(e) if journaled => Err((e, Vec::new())),
            Err(e) => Err((e, give_back(jobs))),
        }
    }

    fn degraded(&self) -> bool {
        !self.held.is_empty() || self.journal.as_ref().is_some_and(|j| !j.is_empty())
    }

    fn gauges(&self) {
        let journaled = self.journal.as_ref().map_or(0, Journal::len) as u64;
        self.health.journaled.store(journaled, Ordering::Relaxed);
        self.health
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    /// Keeps `news` for later, behind what is already waiting: in the
    /// journal when it takes them, else in memory up to MAX_HELD.
    fn stash(&mut self, news: Vec<CallNews>) {
        stash_into(
            &mut self.held,
            self.journal.as_mut(),
            (&mut self.lost, &self.health),
            news,
        );
        self.gauges();
    }

    /// Whether the database takes work within [`DURABLE_WITHIN`]
    /// (`Store::probe`: SQLite's write lock, else a read):
    /// asked before a replay, which would otherwise hold the news that
    /// come meanwhile in memory for as long as a hung database takes to
    /// fail (its statement timeout, 20 s). Not answering, the replay
    /// waits and the news go on into the journal.
    async fn answers_soon(&self) -> Result<(), StoreError> {
        match tokio::time::timeout(DURABLE_WITHIN, self.store.probe()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Thread(
                "the database did not answer within 1 s".into(),
            )),
        }
    }

    /// Moves what waits (journal, then memory) into the database.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        if let Some(j) = &self.journal {
            if !j.is_empty() {
                let entries = j.read_all().map_err(|e| {
                    StoreError::Thread(format!("reading the journal {}: {e}", j.path().display()))
                })?;
                let n = entries.len();
                let mut ours = entries;
                let earlier: Vec<CallNews> = ours.drain(..self.earlier_entries.min(n)).collect();
                for (part, from_earlier_run) in [(earlier, true), (ours, false)] {
                    let mut rest = part;
                    while !rest.is_empty() {
                        let tail = rest.split_off(rest.len().min(BATCH));
                        self.record(rest, from_earlier_run).await?;
                        rest = tail;
                    }
                }
                if let Some(j) = &mut self.journal {
                    if let Err(e) = j.clear() {
                        // Its entries would be recorded again: harmless,
                        // calls are recorded once by Call-ID.
                        tracing::error!(journal = %j.path().display(), error = %e, "cannot empty the journal");
                    }
                }
                tracing::info!(calls = n, "journal replayed into the database");
            }
        }
        self.earlier_entries = 0;
        while !self.held.is_empty() {
            let n = self.held.len().min(BATCH);
            let batch: Vec<CallNews> = self.held.iter().take(n).cloned().collect();
            self.record(batch, false).await?;
            self.held.drain(..n);
        }
        if !self.interrupted_done {
            let keep_dialogs_ms = self.cfg.max_call_seconds.saturating_mul(1000);
            let mut calls = self.store.interrupted_calls(keep_dialogs_ms).await?;
            for c in &mut calls {
                let file = crate::media::link::file_name(c.call_id.as_bytes());
                if self.partial_recordings.contains(&file) {
                    c.recording = crate::calls::Recording::Partial;
                }
            }
            if !calls.is_empty() {
                tracing::warn!(
                    calls = calls.len(),
                    "calls cut short by an earlier crash recorded as interrupted"
                );
                self.record(calls.into_iter().map(CallNews::Ended).collect(), false)
                    .await?;
            }
            self.interrupted_done = true;
        }
        Ok(())
    }
}

/// The journal's replay ([`Pipeline::catch_up`]), with the news that come
/// meanwhile in the spill journal beside it: the replay may wait on the
/// database as long as a write may (trial, 2026-12-02), and the journal
/// itself is emptied when the replay is done. They go into the journal
/// behind what the replay left once it ends, either way. Without a
/// journal they wait in the queue.
async fn replay_spilling(
    p: &mut Pipeline,
    news: &mut mpsc::UnboundedReceiver<CallNews>,
    spill: &mut Option<Journal>,
    open: &mut bool,
) -> Result<(), StoreError> {
    let health = p.health.clone();
    let mut unspilled = Vec::new();
    let caught_up = {
        let replay = p.catch_up();
        tokio::pin!(replay);
        loop {
            tokio::select! {
                r = &mut replay => break r,
                n = news.recv(), if *open && spill.is_some() => {
                    let Some(n) = n else {
                        *open = false;
                        continue;
                    };
                    let later = with_the_rest(n, news);
                    match spill.as_mut().filter(|_| unspilled.is_empty()).map(|sp| sp.append(&later)) {
                        Some(Ok(())) => {
                            health.journaled.fetch_add(later.len() as u64, Ordering::Relaxed);
                        }
                        _ => unspilled.extend(later),
                    }
                }
            }
        }
    };
    if let Some(sp) = spill.as_mut().filter(|sp| !sp.is_empty()) {
        match sp.read_all() {
            Ok(entries) => {
                p.stash(entries);
                if let Err(e) = sp.clear() {
                    tracing::error!(journal = %sp.path().display(), error = %e, "cannot empty the spill journal");
                }
            }
            Err(e) => {
                tracing::error!(journal = %sp.path().display(), error = %e, "spill journal unreadable; its calls wait for the next start")
            }
        }
    }
    if !unspilled.is_empty() {
        p.stash(unspilled);
    }
    caught_up
}

/// `first` and whatever else waits in `queue` now, in order.
fn with_the_rest(first: CallNews, queue: &mut mpsc::UnboundedReceiver<CallNews>) -> Vec<CallNews> {
    let mut all = vec![first];
    while let Ok(n) = queue.try_recv() {
        all.push(n);
    }
    all
}

/// Takes call news off the queue until it closes (shutdown), in order;
/// whatever is queued is recorded together, so the pipeline keeps up with
/// call rates far above one commit per call.
pub async fn run(
    mut news: mpsc::UnboundedReceiver<CallNews>,
    store: Store,
    cfg: Arc<LeadsConfig>,
    opts: PipelineOptions,
) -> PipelineEnd {
    let mut journal = opts.journal.as_ref().and_then(|path| match Journal::open(path) {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::error!(journal = %path.display(), error = %e, "journal unreadable; calls the database refuses are held in memory only");
            None
        }
    });
    let mut spill = journal
        .as_ref()
        .and_then(|j| Journal::open(&spill_path(j.path())).ok());
    // What came while an earlier run replayed its journal goes behind it.
    if let (Some(j), Some(sp)) = (journal.as_mut(), spill.as_mut()) {
        merge_spill(j, sp);
    }
    if let Some(j) = journal.as_ref().filter(|j| !j.is_empty()) {
        tracing::warn!(journal = %j.path().display(), calls = j.len(), "an earlier run left calls in the journal; replaying them");
    }
    let earlier_entries = journal.as_ref().map_or(0, Journal::len);
    let mut p = Pipeline {
        status: new_deal_status(&cfg),
        store,
        cfg,
        journal,
        held: VecDeque::new(),
        health: opts.health,
        earlier_entries,
        interrupted_done: false,
        partial_recordings: opts.partial_recordings,
        lost: 0,
    };
    p.gauges();
    let mut wait = Duration::from_millis(100);
    let mut retry_at = Instant::now();
    // Start-up work (journal, interrupted calls) first.
    let mut catching_up = true;
    let mut open = true;
    let mut last_batch: Option<Instant> = None;
    let mut last_was_full = false;
    while open || catching_up {
        // After the queue closed (shutdown): one last try, at once,
        // unless the database failed moments ago and the journal holds
        // every call (a hung database would hold the exit for its
        // statement timeout again: trial, 2026-12-02).
        if !open
            && catching_up
            && Instant::now() < retry_at
            && p.held.is_empty()
            && p.journal.is_some()
        {
            break;
        }
        if catching_up && (Instant::now() >= retry_at || !open) {
            // After a failure only: at start nothing says the database
            // might hang, and the first news should not wait for a read.
            let answers = if open && p.health.failing().is_some() {
                p.answers_soon().await
            } else {
                Ok(())
            };
            let caught_up = match answers {
                Ok(()) => replay_spilling(&mut p, &mut news, &mut spill, &mut open).await,
                e => e,
            };
            match caught_up {
                Ok(()) => {
                    // What came during the replay waits in the journal now.
                    catching_up = p.degraded();
                    wait = Duration::from_millis(100);
                    p.health.ok();
                }
                Err(e) => {
                    p.health.fail(&e.to_string());
                    tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "storage refuses calls; they wait in the journal");
                    retry_at = Instant::now() + wait;
                    wait = (wait * 2).min(Duration::from_secs(10));
                    if !open {
                        break;
                    }
                }
            }
            p.gauges();
        }
        if !open {
            continue;
        }
        let first = if catching_up {
            tokio::select! {
                n = news.recv() => n,
                _ = tokio::time::sleep_until(retry_at) => continue,
            }
        } else {
            news.recv().await
        };
        let Some(first) = first else {
            open = false;
            continue;
        };
        let linger = last_batch.filter(|_| !p.store.is_shared() && !last_was_full);
        if let Some(until) = linger.map(|t| t + LINGER) {
            if Instant::now() < until {
                tokio::time::sleep_until(until).await;
            }
        }
        last_batch = Some(Instant::now());
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match news.try_recv() {
                Ok(n) => batch.push(n),
                Err(_) => break,
            }
        }
        last_was_full = batch.len() == BATCH;
        p.health.queued.store(news.len() as u64, Ordering::Relaxed);
        if catching_up || p.degraded() {
            p.stash(batch);
            continue;
        }
        match p.record_in_time(batch, &mut news, &mut open).await {
            Ok(false) => {}
            // Recorded, and in the journal too: its replay (which finds
            // them recorded) empties it.
            Ok(true) => {
                catching_up = true;
                retry_at = Instant::now();
            }
            Err((e, batch)) => {
                p.health.fail(&e.to_string());
                if batch.is_empty() {
                    tracing::error!(error = %e, "calls not recorded yet; they wait in the journal");
                } else {
                    tracing::error!(calls = batch.len(), error = %e, "calls not recorded yet; writing them to the journal");
                    p.stash(batch);
                }
                catching_up = true;
                retry_at = Instant::now() + wait;
            }
        }
        p.gauges();
    }
    p.gauges();
    let undurable = p.held.len() as u64 + p.lost;
    if undurable > 0 {
        tracing::error!(calls = undurable, "call events could not be made durable");
    } else if p.degraded() {
        tracing::warn!(
            calls = p.journal.as_ref().map_or(0, Journal::len),
            "calls wait in the journal for the next start"
        );
    }
    PipelineEnd { undurable }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::CallInfo;
    use crate::clock::Clock;

    fn start(id: &str) -> CallNews {
        CallNews::Started(CallStart {
            call_id: id.into(),
            info: CallInfo {
                caller: "79160000001".into(),
                ..CallInfo::default()
            },
            invite_at: 1_000,
        })
    }

    /// The pipeline on a memory store with the default settings, and the
    /// store's count of commits.
    fn memory_pipeline(
        rx: mpsc::UnboundedReceiver<CallNews>,
    ) -> (
        tokio::task::JoinHandle<PipelineEnd>,
        tokio::sync::watch::Receiver<u64>,
    ) {
        let cfg = Arc::new(crate::config::Config::parse("").expect("defaults").leads);
        let store = Store::memory(Clock::manual(1_700_000_000_000));
        let commits = store.recorded();
        let options = PipelineOptions {
            journal: None,
            health: Default::default(),
            partial_recordings: Default::default(),
        };
        (tokio::spawn(run(rx, store, cfg, options)), commits)
    }

    /// The pipeline on a SQLite file with a journal, its first call
    /// recorded (start-up done), and that file locked by a second
    /// connection (`BEGIN EXCLUSIVE`): a database that hangs, as the
    /// store waits out SQLite's busy timeout (10 s).
    struct Hung {
        _dir: tempfile::TempDir,
        journal: PathBuf,
        store: Store,
        health: Arc<StorageHealth>,
        tx: mpsc::UnboundedSender<CallNews>,
        pipeline: tokio::task::JoinHandle<PipelineEnd>,
        lock: rusqlite::Connection,
    }

    async fn hung_database() -> Hung {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("calls.db");
        let journal = dir.path().join("calls.journal");
        let url = format!("sqlite:{}", db.display());
        let store = Store::open_with_clock(&url, Clock::manual(1_700_000_000_000))
            .await
            .expect("store");
        let cfg = Arc::new(crate::config::Config::parse("").expect("defaults").leads);
        let health: Arc<StorageHealth> = Default::default();
        let options = PipelineOptions {
            journal: Some(journal.clone()),
            health: health.clone(),
            partial_recordings: Default::default(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let pipeline = tokio::spawn(run(rx, store.clone(), cfg, options));
        tx.send(ended("before")).expect("send");
        let deadline = Instant::now() + Duration::from_secs(10);
        while recorded(&store).await.is_empty() {
            assert!(Instant::now() < deadline, "the first call never recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lock = rusqlite::Connection::open(&db).expect("second connection");
        lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        Hung {
            _dir: dir,
            journal,
            store,
            health,
            tx,
            pipeline,
            lock,
        }
    }

    impl Hung {
        /// Lets the database go on, waits until `want` calls are recorded
        /// and the journal and its spill are empty, and ends the pipeline.
        async fn release(self, want: &[&str]) {
            self.lock.execute_batch("COMMIT").expect("unlock");
            drop(self.lock);
            let deadline = Instant::now() + Duration::from_secs(30);
            while recorded(&self.store).await.len() < want.len()
                || !Journal::open(&self.journal).expect("journal").is_empty()
            {
                assert!(
                    Instant::now() < deadline,
                    "not every call recorded, or the journal kept"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(Journal::open(&spill_path(&self.journal))
                .expect("spill")
                .is_empty());
            assert_eq!(recorded(&self.store).await, want, "each recorded once");
            drop(self.tx);
            assert_eq!(
                self.pipeline.await.expect("pipeline"),
                PipelineEnd { undurable: 0 }
            );
        }
    }

    fn ended(id: &str) -> CallNews {
        CallNews::Ended(CallRecord::interrupted(
            id.into(),
            CallInfo {
                caller: "79160000001".into(),
                ..CallInfo::default()
            },
            1_000,
            Some(2_000),
        ))
    }

    /// The Call-IDs recorded, sorted.
    async fn recorded(store: &Store) -> Vec<String> {
        let mut ids: Vec<String> = store
            .list_calls(10, 0)
            .await
            .map(|c| c.into_iter().map(|c| c.call_id).collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// The database still hanging after a write failed: the replay waits
    /// for it to take a write again, and news that come meanwhile go to
    /// disk within about a second (not into memory for a replay's whole
    /// wait); in the end every call is recorded once and the journal and
    /// its spill are empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn news_while_the_database_stays_hung_go_to_disk() {
        let h = hung_database().await;
        h.tx.send(ended("hung")).expect("send");
        // The write gives up after SQLite's busy wait (10 s); the replay
        // then starts and waits as long.
        let deadline = Instant::now() + Duration::from_secs(20);
        while h.health.problem().is_none() {
            assert!(Instant::now() < deadline, "the write never failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.tx.send(ended("during")).expect("send");
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        // In the journal (the replay waits for the database to take a
        // write: `answers_soon`), or beside it (a replay under way).
        let on_disk: Vec<CallNews> = [h.journal.clone(), spill_path(&h.journal)]
            .iter()
            .flat_map(|p| Journal::open(p).expect("journal").read_all().expect("read"))
            .collect();
        assert!(on_disk.contains(&ended("during")), "on disk: {on_disk:?}");
        h.release(&["before", "during", "hung"]).await;
    }

    /// A run that ended during a replay left news in the spill journal:
    /// the next start puts them behind the journal's, in order.
    #[test]
    fn a_spill_left_by_an_earlier_run_goes_behind_the_journal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("calls.journal");
        let mut j = Journal::open(&path).expect("journal");
        j.append(&[start("first")]).expect("append");
        let mut sp = Journal::open(&spill_path(&path)).expect("spill");
        sp.append(&[start("second"), start("third")])
            .expect("append");
        let mut sp = Journal::open(&spill_path(&path)).expect("spill again");
        merge_spill(&mut j, &mut sp);
        assert_eq!(
            Journal::open(&path)
                .expect("journal")
                .read_all()
                .expect("read"),
            [start("first"), start("second"), start("third")]
        );
        assert!(sp.is_empty());
        assert!(!spill_path(&path).exists());
        assert_eq!(spill_path(&path), dir.path().join("calls.journal.next"));
    }

    /// What /healthz and /metrics say of the database: the last write's
    /// error first, else what the periodic look found; either clears.
    #[test]
    fn a_failed_look_at_the_database_is_a_storage_problem() {
        let h = StorageHealth::default();
        assert_eq!(h.problem(), None);
        assert!(h.render().contains("siptrack_storage_up 1\n"));
        h.set_probe(Some("the database did not answer within 5 s".into()));
        assert_eq!(h.errors_total.load(Ordering::Relaxed), 1);
        assert_eq!(
            h.problem().as_deref(),
            Some("storage failing (the database did not answer within 5 s); 0 call events waiting (0 in the journal, 0 in memory)")
        );
        assert!(h.render().contains("siptrack_storage_up 0\n"));
        h.fail("connection refused");
        assert!(h
            .problem()
            .is_some_and(|p| p.starts_with("storage failing (connection refused)")));
        h.ok();
        h.set_probe(None);
        assert_eq!(h.problem(), None);
        assert!(h.render().contains("siptrack_storage_up 1\n"));
    }

    /// A batch the database refused goes to the journal as it came: each
    /// news is what its job gives back, whichever run it is from.
    #[test]
    fn news_come_back_from_their_jobs_unchanged() {
        let ended = CallNews::Ended(CallRecord::interrupted(
            "e".into(),
            CallInfo::default(),
            1_000,
            Some(2_000),
        ));
        for n in [start("s"), ended, CallNews::Abandoned("a".into())] {
            for earlier_run in [false, true] {
                assert_eq!(news_of(job(n.clone(), earlier_run)), Some(n.clone()));
            }
        }
        assert_eq!(news_of(Job::Lead(NewLead::default(), None)), None);
    }

    /// News arriving one by one right after a batch wait for LINGER and
    /// share the next commit; after a quiet spell the first goes at once.
    /// (Real time: a stall of the test thread longer than LINGER costs an
    /// extra commit, hence the margin; without the wait it would be 100.)
    #[tokio::test]
    async fn news_close_together_share_a_commit() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (pipeline, commits) = memory_pipeline(rx);
        let settle = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        tx.send(start("quiet")).expect("send");
        settle().await;
        assert_eq!(*commits.borrow(), 1, "the first news goes at once");
        // Each news with the pipeline free to run in between.
        for i in 0..100 {
            tx.send(start(&format!("busy-{i}"))).expect("send");
            settle().await;
        }
        tokio::time::sleep(LINGER * 4).await;
        let busy = *commits.borrow() - 1;
        assert!((1..=10).contains(&busy), "{busy} commits for 100 news");
        tokio::time::sleep(LINGER * 4).await;
        tx.send(start("quiet-again")).expect("send");
        settle().await;
        assert_eq!(*commits.borrow(), busy + 2, "after a quiet spell, at once");
        drop(tx);
        assert_eq!(
            pipeline.await.expect("pipeline"),
            PipelineEnd { undurable: 0 }
        );
    }

    /// A backlog goes batch after batch: after a full batch the next does
    /// not wait for LINGER. (With the wait the pipeline took BATCH news
    /// per LINGER at most, and here only the first batch would be in by
    /// the time the yields are done: no time passes during them.)
    #[tokio::test(start_paused = true)]
    async fn a_backlog_is_not_held_back_by_the_linger() {
        let (tx, rx) = mpsc::unbounded_channel();
        // Four full batches and one more news, queued before the pipeline
        // runs.
        for i in 0..4 * BATCH + 1 {
            tx.send(start(&format!("backlog-{i}"))).expect("send");
        }
        let (pipeline, commits) = memory_pipeline(rx);
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
        }
        // The clock is paused: the fifth batch (one news, after a full
        // one) also goes without waiting.
        assert_eq!(*commits.borrow(), 5, "commits without any time passing");
        drop(tx);
        assert_eq!(
            pipeline.await.expect("pipeline"),
            PipelineEnd { undurable: 0 }
        );
    }

    /// A database that hangs rather than refuses (here a SQLite file
    /// another process holds locked: the store waits its busy timeout)
    /// does not keep a batch in memory only: within about a second it is
    /// in the journal, so a crash then loses nothing. When the database
    /// answers, the calls are recorded once, and the journal's replay
    /// (which finds them recorded) empties it. Trial, 2026-12-02: with
    /// PostgreSQL frozen, a `kill -9` lost every call of the last 20 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_database_gets_the_batch_journaled_within_a_second() {
        let h = hung_database().await;
        h.tx.send(start("hung")).expect("send");
        h.tx.send(ended("hung")).expect("send");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let waiting = Journal::open(&h.journal).expect("journal").len();
        assert_eq!(
            waiting, 2,
            "both news in the journal while the database hangs"
        );
        // News that come while it still hangs join them.
        h.tx.send(ended("later")).expect("send");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(Journal::open(&h.journal).expect("journal").len(), 3);
        h.release(&["before", "hung", "later"]).await;
    }

    /// A journal holding an earlier run's call start and, behind it, a
    /// start this run wrote while the database refused it: only the
    /// earlier run's call is interrupted; this run's is still going on.
    #[tokio::test]
    async fn only_an_earlier_runs_open_calls_are_interrupted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("calls.journal");
        let mut j = Journal::open(&path).expect("journal");
        j.append(&[start("earlier")]).expect("append");
        let earlier_entries = j.len();
        j.append(&[start("ours")]).expect("append");
        let cfg = Arc::new(crate::config::Config::parse("").expect("defaults").leads);
        let store = Store::memory(Clock::manual(1_700_000_000_000));
        let mut p = Pipeline {
            status: new_deal_status(&cfg),
            store: store.clone(),
            cfg,
            journal: Some(j),
            held: VecDeque::new(),
            health: Default::default(),
            earlier_entries,
            interrupted_done: false,
            partial_recordings: [crate::media::link::file_name(b"earlier")].into(),
            lost: 0,
        };
        p.catch_up().await.expect("catch up");
        let calls = store.list_calls(10, 0).await.expect("calls");
        let ids: Vec<&str> = calls.iter().map(|c| c.call_id.as_str()).collect();
        assert_eq!(ids, vec!["earlier"], "{calls:?}");
        // Its recording, repaired at this start, is partial.
        assert_eq!(calls[0].recording, crate::calls::Recording::Partial);
        assert!(p.journal.as_ref().is_some_and(Journal::is_empty));
        assert!(!path.exists());
    }
}
