//! Console views of the audit log: the pages one console sign-in looks
//! at are recorded as one session, not one `audit_export` record per page.
//!
//! A session is the pair (token id, session id): the console makes a
//! random session id at each sign-in and sends it with its page requests
//! (`X-Keyhold-Console-Session`). The id is no credential — every request
//! still needs the token, and another token naming the same id has a
//! session of its own — so a stolen id gives nothing.
//!
//! Only the console's own kind of request joins a session: a JSON Lines
//! page, newest first, of at most [`MAX_PAGE`] records. A whole export, a
//! CSV, a bigger page or a request without the header writes its own
//! record as before, so a bulk export cannot hide in a session.
//!
//! The first page of a session writes its record durably before it is
//! answered (as every export does): the log says who started looking at
//! it before they see anything. Further pages are counted in memory and,
//! when the session ends (no page for [`IDLE`], open for [`MAX_AGE`], or
//! [`MAX_PAGES`] pages, and at shutdown), written as one closing record
//! whose `count` is the number of further pages, naming the opening
//! record's seq, how many records were shown, the seqs they covered and
//! the filters used. A session of one page writes one record; of fifty
//! pages, two. Past [`MAX_SESSIONS`] open sessions, a page writes its own
//! record: memory stays bounded and no page goes unrecorded.
//!
//! Not for: the budget of records a token may write (see
//! `vault::Vault::record`), nor HTTP.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Action, AuditEvent, Outcome};

/// Largest page (in records) that joins a session: the console shows 25,
/// 50 or 100.
pub const MAX_PAGE: u64 = 100;
/// A session with no page for this long (µs) ends.
pub const IDLE: i64 = 10 * 60 * 1_000_000;
/// A session ends after this long (µs), however busy: its count reaches
/// the log at least this often.
pub const MAX_AGE: i64 = 60 * 60 * 1_000_000;
/// A session ends at this many pages (at most `MAX_PAGES * MAX_PAGE`
/// records shown per recorded session).
pub const MAX_PAGES: u64 = 1000;
/// Open sessions, at most; past it a page writes its own record.
pub const MAX_SESSIONS: usize = 4096;
/// Distinct filters named in a closing record (the rest are counted).
const MAX_FILTERS: usize = 4;
/// Longest filter description kept, in characters.
const MAX_FILTER_CHARS: usize = 200;

/// Whether `id` is a session id the console could have made: 16 to 64
/// ASCII letters, digits, `-` or `_`.
pub fn valid_session_id(id: &str) -> bool {
    (16..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What to do with one page of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The session's first page: write its record now, then call
    /// [`ConsoleViews::opened`].
    Open,
    /// Counted into the session's closing record: no record now.
    Counted,
    /// Not counted (the session's opening record is still being written,
    /// or too many sessions are open): write the page's own record.
    Alone,
}

struct Session {
    /// The opening record's seq; `None` while it is being written.
    opened_seq: Option<u64>,
    /// The opening page's event: caller, address, action.
    event: AuditEvent,
    opened_us: i64,
    last_us: i64,
    /// Pages after the first.
    further: u64,
    /// Records shown in every page of the session.
    records: u64,
    low_seq: Option<u64>,
    high_seq: Option<u64>,
    filters: Vec<String>,
    more_filters: u64,
    mixed_ip: bool,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<(uuid::Uuid, String), Session>,
    /// Closing records due, in the order the sessions ended.
    closed: Vec<AuditEvent>,
}

/// The open console sessions of a server.
#[derive(Default)]
pub struct ConsoleViews {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ConsoleViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleViews").finish_non_exhaustive()
    }
}

impl ConsoleViews {
    pub fn new() -> ConsoleViews {
        ConsoleViews::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// One page of `session` by `token`, described by `filter` (what its
    /// own record would say), asked for at `now_us`.
    pub fn view(
        &self,
        token: uuid::Uuid,
        session: &str,
        event: &AuditEvent,
        filter: &str,
        now_us: i64,
    ) -> View {
        let mut inner = self.lock();
        let key = (token, session.to_string());
        if let Some(s) = inner.sessions.get_mut(&key) {
            if s.opened_seq.is_none() {
                return View::Alone;
            }
            let ended = s.further + 1 >= MAX_PAGES
                || now_us.saturating_sub(s.opened_us) >= MAX_AGE
                || now_us.saturating_sub(s.last_us) >= IDLE;
            if !ended {
                s.further += 1;
                s.last_us = now_us;
                s.note_filter(filter);
                if s.event.ip != event.ip {
                    s.mixed_ip = true;
                }
                return View::Counted;
            }
            if let Some(s) = inner.sessions.remove(&key) {
                if let Some(e) = s.close() {
                    inner.closed.push(e);
                }
            }
        }
        if inner.sessions.len() >= MAX_SESSIONS {
            return View::Alone;
        }
        let mut s = Session {
            opened_seq: None,
            event: event.clone(),
            opened_us: now_us,
            last_us: now_us,
            further: 0,
            records: 0,
            low_seq: None,
            high_seq: None,
            filters: Vec::new(),
            more_filters: 0,
            mixed_ip: false,
        };
        s.note_filter(filter);
        inner.sessions.insert(key, s);
        View::Open
    }

    /// The opening record of `session` was written at `seq`, or (`None`)
    /// could not be: the session is forgotten and its next page opens it
    /// again.
    pub fn opened(&self, token: uuid::Uuid, session: &str, seq: Option<u64>) {
        let mut inner = self.lock();
        let key = (token, session.to_string());
        match seq {
            Some(seq) => {
                if let Some(s) = inner.sessions.get_mut(&key) {
                    s.opened_seq = Some(seq);
                }
            }
            None => {
                inner.sessions.remove(&key);
            }
        }
    }

    /// A page of `session` showed `records` records within seqs
    /// `low..=high`.
    pub fn shown(&self, token: uuid::Uuid, session: &str, records: u64, seqs: Option<(u64, u64)>) {
        let mut inner = self.lock();
        if let Some(s) = inner.sessions.get_mut(&(token, session.to_string())) {
            s.records = s.records.saturating_add(records);
            if let Some((low, high)) = seqs {
                s.low_seq = Some(s.low_seq.map_or(low, |l| l.min(low)));
                s.high_seq = Some(s.high_seq.map_or(high, |h| h.max(high)));
            }
        }
    }

    /// The closing records due at `now_us` (every open session's when
    /// `all`, at shutdown).
    pub fn drain(&self, now_us: i64, all: bool) -> Vec<AuditEvent> {
        let mut inner = self.lock();
        let ended: Vec<(uuid::Uuid, String)> = inner
            .sessions
            .iter()
            .filter(|(_, s)| {
                all || (s.opened_seq.is_some()
                    && (now_us.saturating_sub(s.last_us) >= IDLE
                        || now_us.saturating_sub(s.opened_us) >= MAX_AGE))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in ended {
            if let Some(e) = inner.sessions.remove(&k).and_then(Session::close) {
                inner.closed.push(e);
            }
        }
        std::mem::take(&mut inner.closed)
    }

    /// Puts back a closing record that could not be written, to be
    /// written with the next ones.
    pub fn restore(&self, event: AuditEvent) {
        self.lock().closed.push(event);
    }
}

impl Session {
    fn note_filter(&mut self, filter: &str) {
        let f: String = filter.chars().take(MAX_FILTER_CHARS).collect();
        if self.filters.contains(&f) {
            return;
        }
        if self.filters.len() < MAX_FILTERS {
            self.filters.push(f);
        } else {
            self.more_filters += 1;
        }
    }

    /// The session's closing record, if it had pages after the first (and
    /// its opening record was written).
    fn close(self) -> Option<AuditEvent> {
        let seq = self.opened_seq?;
        if self.further == 0 {
            return None;
        }
        let mut e = self.event;
        e.action = Action::AuditExport;
        e.outcome = Outcome::Success;
        e.key_id = None;
        e.provider = None;
        e.count = Some(self.further);
        let seqs = match (self.low_seq, self.high_seq) {
            (Some(l), Some(h)) => format!(" within seqs {l}-{h}"),
            _ => String::new(),
        };
        let more = if self.more_filters > 0 {
            format!(" (and {} more)", self.more_filters)
        } else {
            String::new()
        };
        let mut detail = format!(
            "console session: {} further pages after the one recorded at seq {seq}, {} to {}; \
             {} records shown in its {} pages{seqs}; filters: {}{more}",
            self.further,
            crate::time::to_rfc3339(self.opened_us),
            crate::time::to_rfc3339(self.last_us),
            self.records,
            self.further + 1,
            self.filters.join(" | "),
        );
        if self.mixed_ip {
            detail.push_str("; from several addresses");
        }
        e.detail = Some(detail);
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ip: &str) -> AuditEvent {
        AuditEvent {
            request_id: "r".into(),
            action: Action::AuditExport,
            key_id: None,
            provider: None,
            caller: "alice".into(),
            caller_id: None,
            ip: ip.into(),
            peer: None,
            outcome: Outcome::Success,
            count: None,
            detail: None,
        }
    }

    const S: &str = "0123456789abcdef0123";

    #[test]
    fn a_session_opens_once_counts_its_pages_and_closes_into_one_record() {
        let v = ConsoleViews::new();
        let t = uuid::Uuid::new_v4();
        assert_eq!(v.view(t, S, &ev("a"), "unfiltered", 0), View::Open);
        // Before its opening record is written, a page writes its own.
        assert_eq!(v.view(t, S, &ev("a"), "unfiltered", 1), View::Alone);
        v.opened(t, S, Some(7));
        v.shown(t, S, 50, Some((51, 100)));
        for i in 0..5 {
            assert_eq!(
                v.view(t, S, &ev("a"), "outcome=forbidden", 10 + i),
                View::Counted
            );
            v.shown(t, S, 50, Some((1, 50)));
        }
        assert!(v.drain(1_000, false).is_empty(), "not idle yet");
        let closed = v.drain(14 + IDLE, false);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].count, Some(5));
        let d = closed[0].detail.as_deref().unwrap();
        assert!(d.contains("recorded at seq 7"), "{d}");
        assert!(
            d.contains("300 records shown in its 6 pages within seqs 1-100"),
            "{d}"
        );
        assert!(d.contains("unfiltered | outcome=forbidden"), "{d}");
        assert!(v.drain(i64::MAX, true).is_empty());
    }

    #[test]
    fn another_token_naming_the_same_session_has_its_own() {
        let v = ConsoleViews::new();
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        assert_eq!(v.view(a, S, &ev("a"), "f", 0), View::Open);
        v.opened(a, S, Some(1));
        assert_eq!(v.view(b, S, &ev("b"), "f", 1), View::Open);
    }

    #[test]
    fn a_failed_opening_record_forgets_the_session() {
        let v = ConsoleViews::new();
        let t = uuid::Uuid::new_v4();
        assert_eq!(v.view(t, S, &ev("a"), "f", 0), View::Open);
        v.opened(t, S, None);
        assert_eq!(v.view(t, S, &ev("a"), "f", 1), View::Open);
    }

    #[test]
    fn a_long_session_ends_at_its_page_cap_and_a_new_one_opens() {
        let v = ConsoleViews::new();
        let t = uuid::Uuid::new_v4();
        assert_eq!(v.view(t, S, &ev("a"), "f", 0), View::Open);
        v.opened(t, S, Some(1));
        for i in 1..MAX_PAGES {
            assert_eq!(v.view(t, S, &ev("a"), "f", i as i64), View::Counted);
        }
        assert_eq!(v.view(t, S, &ev("a"), "f", 5_000), View::Open);
        let closed = v.drain(5_001, false);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].count, Some(MAX_PAGES - 1));
    }

    #[test]
    fn past_the_session_cap_pages_are_recorded_alone() {
        let v = ConsoleViews::new();
        for _ in 0..MAX_SESSIONS {
            assert_eq!(
                v.view(uuid::Uuid::new_v4(), S, &ev("a"), "f", 0),
                View::Open
            );
        }
        assert_eq!(
            v.view(uuid::Uuid::new_v4(), S, &ev("a"), "f", 0),
            View::Alone
        );
    }

    #[test]
    fn session_ids_are_checked() {
        assert!(valid_session_id("0123456789abcdef"));
        assert!(!valid_session_id("short"));
        assert!(!valid_session_id("0123456789abcdef 01"));
        assert!(!valid_session_id(&"a".repeat(65)));
    }
}
