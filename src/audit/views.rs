//! Console views of the audit log: the pages one console sign-in looks
//! at are recorded as one session, by one `audit_export` record, not one
//! record per page.
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
//! The first page of a session writes the session's one record durably
//! before it is answered (as every export does): the log says who started
//! looking at it before they see anything, and a crash loses nothing that
//! was recorded. Further pages write nothing. A session ends after
//! [`IDLE`] without a page, [`MAX_AGE`] after it opened, or at
//! [`MAX_PAGES`] pages; the next page opens a new session with a record
//! of its own. So reading the whole log through the console leaves a
//! record at least every hour or [`MAX_PAGES`] pages. Past
//! [`MAX_SESSIONS`] open sessions, a page writes its own record: memory
//! stays bounded and the failure mode is more records, never fewer.
//!
//! Not for: the budget of records a token may write (see
//! `vault::Vault::record`), nor HTTP.

use std::collections::HashMap;
use std::sync::Mutex;

/// Largest page (in records) that joins a session: the console shows 25,
/// 50 or 100.
pub(crate) const MAX_PAGE: u64 = 100;
/// A session with no page for this long (µs) ends.
pub(crate) const IDLE: i64 = 10 * 60 * 1_000_000;
/// A session ends after this long (µs), however busy.
pub(crate) const MAX_AGE: i64 = 60 * 60 * 1_000_000;
/// A session ends at this many pages (at most `MAX_PAGES * MAX_PAGE`
/// records shown per recorded session).
pub(crate) const MAX_PAGES: u64 = 1000;
/// Open sessions, at most; past it a page writes its own record.
pub(crate) const MAX_SESSIONS: usize = 4096;

/// Whether `id` is a session id the console could have made: 16 to 64
/// ASCII letters, digits, `-` or `_`.
pub(crate) fn valid_session_id(id: &str) -> bool {
    (16..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What to do with one page of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// The session's first page: write the session's record now, then
    /// call [`ConsoleViews::opened`].
    Open,
    /// A further page of a session whose record is written: no record.
    Counted,
    /// Not in a session (its record is still being written, or too many
    /// sessions are open): write the page's own record.
    Alone,
}

struct Session {
    /// Whether the session's record is written.
    recorded: bool,
    opened_us: i64,
    last_us: i64,
    /// Pages after the first.
    further: u64,
}

/// The open console sessions of a server.
#[derive(Default)]
pub(crate) struct ConsoleViews {
    sessions: Mutex<HashMap<(uuid::Uuid, String), Session>>,
}

impl std::fmt::Debug for ConsoleViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleViews").finish_non_exhaustive()
    }
}

impl ConsoleViews {
    pub(crate) fn new() -> ConsoleViews {
        ConsoleViews::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(uuid::Uuid, String), Session>> {
        match self.sessions.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// One page of `session` by `token`, asked for at `now_us`.
    pub(crate) fn view(&self, token: uuid::Uuid, session: &str, now_us: i64) -> View {
        let mut sessions = self.lock();
        let key = (token, session.to_string());
        if let Some(s) = sessions.get_mut(&key) {
            if !s.recorded {
                return View::Alone;
            }
            let ended = s.further + 1 >= MAX_PAGES
                || now_us.saturating_sub(s.opened_us) >= MAX_AGE
                || now_us.saturating_sub(s.last_us) >= IDLE;
            if !ended {
                s.further += 1;
                s.last_us = now_us;
                return View::Counted;
            }
            sessions.remove(&key);
        }
        if sessions.len() >= MAX_SESSIONS {
            // Ended sessions are dropped lazily; make room before refusing.
            sessions.retain(|_, s| {
                !s.recorded
                    || (now_us.saturating_sub(s.last_us) < IDLE
                        && now_us.saturating_sub(s.opened_us) < MAX_AGE)
            });
            if sessions.len() >= MAX_SESSIONS {
                return View::Alone;
            }
        }
        sessions.insert(
            key,
            Session {
                recorded: false,
                opened_us: now_us,
                last_us: now_us,
                further: 0,
            },
        );
        View::Open
    }

    /// The record of `session` was written (`true`), or could not be: the
    /// session is forgotten and its next page opens it again.
    pub(crate) fn opened(&self, token: uuid::Uuid, session: &str, written: bool) {
        let mut sessions = self.lock();
        let key = (token, session.to_string());
        if written {
            if let Some(s) = sessions.get_mut(&key) {
                s.recorded = true;
            }
        } else {
            sessions.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "0123456789abcdef0123";

    #[test]
    fn a_session_is_recorded_once_for_all_its_pages() {
        let v = ConsoleViews::new();
        let t = uuid::Uuid::new_v4();
        assert_eq!(v.view(t, S, 0), View::Open);
        // Before its record is written, a page writes its own.
        assert_eq!(v.view(t, S, 1), View::Alone);
        v.opened(t, S, true);
        for i in 0..5 {
            assert_eq!(v.view(t, S, 10 + i), View::Counted);
        }
        // Idle too long: the next page opens a new session.
        assert_eq!(v.view(t, S, 14 + IDLE), View::Open);
    }

    #[test]
    fn a_session_ends_an_hour_after_it_opened_however_busy() {
        let v = ConsoleViews::new();
        let t = uuid::Uuid::new_v4();
        assert_eq!(v.view(t, S, 0), View::Open);
        v.opened(t, S, true);
        let step = IDLE / 2;
        let mut now = 0;
        while now + step < MAX_AGE {
            now += step;
            assert_eq!(v.view(t, S, now), View::Counted);
        }
        assert_eq!(v.view(t, S, MAX_AGE), View::Open);
    }

    #[test]
    fn another_token_naming_the_same_session_has_its_own() {
        let v = ConsoleViews::new();
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        assert_eq!(v.view(a, S, 0), View::Open);
        v.opened(a, S, true);
        assert_eq!(v.view(b, S, 1), View::Open);
    }

    #[test]
    fn a_failed_record_forgets_the_session() {
        let v = ConsoleViews::new();
        let t = uuid::Uuid::new_v4();
        assert_eq!(v.view(t, S, 0), View::Open);
        v.opened(t, S, false);
        assert_eq!(v.view(t, S, 1), View::Open);
    }

    #[test]
    fn a_long_session_ends_at_its_page_cap_and_a_new_one_opens() {
        let v = ConsoleViews::new();
        let t = uuid::Uuid::new_v4();
        assert_eq!(v.view(t, S, 0), View::Open);
        v.opened(t, S, true);
        for i in 1..MAX_PAGES {
            assert_eq!(v.view(t, S, i as i64), View::Counted);
        }
        assert_eq!(v.view(t, S, 5_000), View::Open);
    }

    #[test]
    fn past_the_session_cap_pages_are_recorded_alone_until_sessions_end() {
        let v = ConsoleViews::new();
        for _ in 0..MAX_SESSIONS {
            let t = uuid::Uuid::new_v4();
            assert_eq!(v.view(t, S, 0), View::Open);
            v.opened(t, S, true);
        }
        assert_eq!(v.view(uuid::Uuid::new_v4(), S, 1), View::Alone);
        // Once they have ended, new sessions open again.
        assert_eq!(v.view(uuid::Uuid::new_v4(), S, IDLE + 1), View::Open);
    }

    #[test]
    fn session_ids_are_checked() {
        assert!(valid_session_id("0123456789abcdef"));
        assert!(!valid_session_id("short"));
        assert!(!valid_session_id("0123456789abcdef 01"));
        assert!(!valid_session_id(&"a".repeat(65)));
    }
}
