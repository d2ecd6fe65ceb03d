//! Unit tests of the rewrite: copying, racing commits, interrupted
//! rewrites, planted files and links, readers holding old files.

use super::*;

#[test]
fn current_must_name_a_generation_inside_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(sled_dir(dir.path()).unwrap(), dir.path());
    for bad in [
        "../elsewhere",
        "/etc",
        "store.",
        "store.+1",
        "store.1/..",
        "db",
    ] {
        std::fs::write(dir.path().join(CURRENT), bad).unwrap();
        assert!(
            matches!(sled_dir(dir.path()), Err(StoreError::BadCurrent { .. })),
            "{bad}"
        );
    }
    std::fs::write(dir.path().join(CURRENT), "store.7\n").unwrap();
    assert_eq!(sled_dir(dir.path()).unwrap(), dir.path().join("store.7"));
    assert_eq!(
        next_dir(dir.path(), &dir.path().join("store.7")),
        dir.path().join("store.8")
    );
    assert_eq!(next_dir(dir.path(), dir.path()), dir.path().join("store.1"));
    // Past the largest name (a planted CURRENT), back to 1.
    let last = dir.path().join("store.9999999999999999999");
    assert_eq!(next_dir(dir.path(), &last), dir.path().join("store.1"));
    // A CURRENT that never ends (a link to /dev/zero) is not read to
    // its end.
    std::fs::remove_file(dir.path().join(CURRENT)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join(CURRENT)).unwrap();
    assert!(matches!(
        sled_dir(dir.path()),
        Err(StoreError::BadCurrent { .. })
    ));
}

use crate::store::{KeyRecord, RecordKeys, Store, Write, TABLES};

fn store(dir: &Path) -> Store {
    let s = Store::open(dir).unwrap();
    s.set_record_keys(RecordKeys::from_secret(&[5u8; 32]));
    s
}

/// Rewrites the store now, as after a purge; the pause it took.
fn rewrite(s: &Store) -> Option<Duration> {
    s.mark_scrub_due();
    s.scrub_if_due(Duration::from_secs(5)).unwrap()
}

/// A store in `dir` holding `kept` and audit records 1..=`last`, flushed.
fn holding(dir: &Path, kept: &KeyRecord, last: u64) -> Store {
    let s = store(dir);
    s.commit_writes(&records(1..=last), b"h", &[Write::PutKey(kept.clone())])
        .unwrap();
    s.flush().unwrap();
    s
}

fn key(token: &str) -> KeyRecord {
    KeyRecord::new(
        uuid::Uuid::new_v4(),
        "claude".into(),
        "k".into(),
        token.into(),
        1,
        None,
        None,
    )
}

fn records(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.map(|q| (q, vec![0, q as u8, 7])).collect()
}

/// Every entry of every table.
fn all(s: &Store) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for t in TABLES {
        for e in s.entries(t) {
            let (k, v) = e.unwrap();
            out.push((t, k.to_vec(), v.to_vec()));
        }
    }
    out
}

/// Whether any file under `dir` holds `needle`.
fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

#[test]
fn a_scrub_keeps_every_entry_and_leaves_no_removed_bytes_in_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let gone = key("gAAAA-purged-version-0123456789");
    let kept = key("gAAAA-kept-version");
    s.commit_writes(
        &records(1..=40),
        b"head",
        &[Write::PutKey(gone.clone()), Write::PutKey(kept.clone())],
    )
    .unwrap();
    s.commit_writes(
        &records(41..=41),
        b"head2",
        &[Write::DeleteKey(gone.clone())],
    )
    .unwrap();
    s.flush().unwrap();
    let needle = b"purged-version-0123456789";
    assert!(on_disk(dir.path(), needle), "the test cannot see it");
    let before = all(&s);

    assert!(rewrite(&s).is_some());
    assert!(!on_disk(dir.path(), needle));
    assert_eq!(all(&s), before);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(CURRENT)).unwrap(),
        "store.1\n"
    );
    for f in LEGACY_FILES {
        assert!(!dir.path().join(f).exists(), "{f} left behind");
    }
    // The rewritten store takes writes; a second scrub moves on to the
    // next generation and removes the first.
    let later = key("gAAAA-later");
    s.commit_writes(&records(42..=42), b"head3", &[Write::PutKey(later.clone())])
        .unwrap();
    assert!(rewrite(&s).is_some());
    assert!(!dir.path().join("store.1").exists());
    assert!(dir.path().join("store.2").join("db").is_file());
    let after = all(&s);
    // Opened again (by this process or another), it is the same store,
    // and it is locked to one holder as before.
    s.close().unwrap();
    let s = store(dir.path());
    assert_eq!(all(&s), after);
    assert_eq!(s.get_key(&later.id).unwrap().unwrap(), later);
    assert!(s.get_key(&gone.id).unwrap().is_none());
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("stop it, or go through the running server"),
        "{err}"
    );
}

/// Audit record `q`'s bytes: distinct for every seq.
fn record(q: u64) -> (u64, Vec<u8>) {
    (q, q.to_be_bytes().repeat(3))
}

#[test]
fn commits_racing_a_scrub_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    // A log to copy while the store is in use: many full entries.
    for first in (1..=3000u64).step_by(10) {
        let batch: Vec<_> = (first..first + 10).map(record).collect();
        s.commit_writes(&batch, b"h", &[]).unwrap();
    }
    let writer = s.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_w = stop.clone();
    let t = std::thread::spawn(move || {
        // Commits of 1 to 7 records until told to stop: the newest
        // entry keeps growing while the scrubs copy the ones before it.
        // Every third commit also removes the key the one before added.
        let mut q = 3001u64;
        let mut n = 0u64;
        let mut live: Vec<KeyRecord> = Vec::new();
        while !stop_w.load(std::sync::atomic::Ordering::SeqCst) {
            let size = 1 + (n % 7);
            let batch: Vec<_> = (q..q + size).map(record).collect();
            q += size;
            n += 1;
            let k = key("gAAAA-x");
            let mut writes = vec![Write::PutKey(k.clone())];
            if n.is_multiple_of(3) {
                if let Some(gone) = live.pop() {
                    writes.push(Write::DeleteKey(gone));
                }
            }
            live.push(k);
            // The chain head changes with every commit (meta).
            writer
                .commit_writes(&batch, format!("head {n}").as_bytes(), &writes)
                .unwrap();
        }
        (live, q - 1, format!("head {n}"))
    });
    for _ in 0..5 {
        rewrite(&s);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (live, last, head) = t.join().unwrap();
    assert!(last > 3100, "the writer hardly ran: {last}");
    let got: Vec<(u64, Vec<u8>)> = s
        .audit_iter(0)
        .map(|r| r.map(|(q, b)| (q, b.to_vec())).unwrap())
        .collect();
    assert_eq!(got, (1..=last).map(record).collect::<Vec<_>>());
    let stored_head = s
        .entries("meta")
        .map(|e| e.unwrap())
        .find(|(k, _)| **k == *crate::store::META_AUDIT_HEAD)
        .map(|(_, v)| v.to_vec());
    assert_eq!(stored_head, Some(head.into_bytes()));
    let mut want: Vec<_> = live.iter().map(|k| k.id).collect();
    let mut have: Vec<_> = s.list_keys(None).unwrap().iter().map(|k| k.id).collect();
    want.sort();
    have.sort();
    assert_eq!(have, want);
}

#[test]
fn the_next_open_clears_what_an_interrupted_rewrite_left() {
    let dir = tempfile::tempdir().unwrap();
    let kept = key("gAAAA-kept");
    {
        let s = holding(dir.path(), &kept, 5);
        // A crash while copying: a half-made next generation.
        std::fs::create_dir(dir.path().join("store.1")).unwrap();
        std::fs::write(dir.path().join("store.1").join("db"), "half-made").unwrap();
        s.close().unwrap();
    }
    let s = store(dir.path());
    assert!(!dir.path().join("store.1").exists());
    assert_eq!(s.get_key(&kept.id).unwrap().unwrap(), kept);
    // A crash after the switch, before the old files were removed:
    // they (and a stray generation and temporary file) go at the next
    // open, and the store is the one CURRENT names.
    rewrite(&s);
    s.close().unwrap();
    std::fs::write(dir.path().join("db"), "old-store-bytes").unwrap();
    std::fs::write(dir.path().join("snap.00000000001"), "old").unwrap();
    std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
    std::fs::create_dir_all(dir.path().join("store.9")).unwrap();
    std::fs::write(dir.path().join("CURRENT.tmp"), "store.9\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "the operator's").unwrap();
    let s = store(dir.path());
    for gone in ["db", "snap.00000000001", "blobs", "store.9", "CURRENT.tmp"] {
        assert!(!dir.path().join(gone).exists(), "{gone} left behind");
    }
    assert!(
        dir.path().join("notes.txt").exists(),
        "not keyhold's to remove"
    );
    assert_eq!(s.get_key(&kept.id).unwrap().unwrap(), kept);
    s.close().unwrap();
    // A CURRENT that points elsewhere is refused, and nothing removed.
    std::fs::write(dir.path().join(CURRENT), "../elsewhere\n").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::BadCurrent { .. }), "{err}");
    assert!(dir.path().join("store.1").join("db").is_file());
}

#[test]
fn symlinks_in_place_of_the_old_files_are_removed_not_followed() {
    use std::os::unix::fs::symlink;
    let theirs = tempfile::tempdir().unwrap();
    let t = theirs.path();
    std::fs::write(t.join("db"), "theirs: db").unwrap();
    std::fs::create_dir(t.join("blobs")).unwrap();
    std::fs::write(t.join("blobs").join("1"), "theirs: blob").unwrap();
    let intact = || {
        assert_eq!(std::fs::read(t.join("db")).unwrap(), b"theirs: db");
        assert_eq!(
            std::fs::read(t.join("blobs").join("1")).unwrap(),
            b"theirs: blob"
        );
    };
    // An old generation that is a link to a directory of theirs, and
    // the old layout's files links to theirs; a link in place of
    // CURRENT.tmp.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let live = d.join("store.2");
    std::fs::create_dir(&live).unwrap();
    symlink(t, d.join("store.1")).unwrap();
    symlink(t.join("db"), d.join("db")).unwrap();
    symlink(t.join("blobs"), d.join("blobs")).unwrap();
    symlink(t.join("db"), d.join("CURRENT.tmp")).unwrap();
    assert!(clear_stale(d, &live, Duration::ZERO).unwrap());
    for name in ["store.1", "db", "blobs", "CURRENT.tmp"] {
        assert!(std::fs::symlink_metadata(d.join(name)).is_err(), "{name}");
    }
    assert!(live.is_dir());
    intact();
    // A link planted as CURRENT.tmp before a switch: replaced, not
    // written through; a file planted as a generation: removed.
    symlink(t.join("db"), d.join("CURRENT.tmp")).unwrap();
    switch(d, &live).unwrap();
    intact();
    assert_eq!(
        std::fs::read_to_string(d.join(CURRENT)).unwrap(),
        "store.2\n"
    );
    assert!(!std::fs::symlink_metadata(d.join(CURRENT))
        .unwrap()
        .is_symlink());
    std::fs::write(d.join("store.3"), "a file").unwrap();
    assert!(clear_stale(d, &live, Duration::ZERO).unwrap());
    assert!(!d.join("store.3").exists());
}

#[test]
fn a_current_naming_a_missing_store_is_refused_and_nothing_removed() {
    let dir = tempfile::tempdir().unwrap();
    let kept = key("gAAAA-kept");
    let s = holding(dir.path(), &kept, 3);
    rewrite(&s);
    s.close().unwrap();
    // store.1 left out of a copy, or lost: CURRENT names store.5.
    std::fs::write(dir.path().join(CURRENT), "store.5\n").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::CurrentMissing { .. }), "{err}");
    assert!(err.to_string().contains("store.5"), "{err}");
    assert!(!dir.path().join("store.5").exists(), "sled made a store");
    assert!(dir.path().join("store.1").join("db").is_file());
    std::fs::write(dir.path().join(CURRENT), "store.1\n").unwrap();
    let s = store(dir.path());
    assert_eq!(s.get_key(&kept.id).unwrap().unwrap(), kept);
}

#[test]
fn an_old_store_still_open_is_left_until_it_is_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = d.join("store.1");
    let held = crate::store::sled_store::open_sled(&old, 1 << 20).unwrap();
    held.insert("k", "secret-bytes-of-the-old-store").unwrap();
    held.flush().unwrap();
    let live = d.join("store.2");
    std::fs::create_dir(&live).unwrap();
    assert!(!clear_stale(d, &live, Duration::ZERO).unwrap());
    assert!(on_disk(&old, b"secret-bytes-of-the-old-store"));
    drop(held);
    assert!(super::super::wait_for_lock(&old));
    assert!(clear_stale(d, &live, Duration::ZERO).unwrap());
    assert!(!old.exists());
}

#[test]
fn a_scrub_whose_old_files_stay_open_says_so_and_the_next_clears_them() {
    use crate::store::backend::Backend;
    let dir = tempfile::tempdir().unwrap();
    let store = super::super::SledStore::open(dir.path(), 8 << 20).unwrap();
    store
        .t()
        .unwrap()
        .keys
        .insert("k", "gAAAA-purged-long-ago")
        .unwrap();
    store.t().unwrap().keys.remove("k").unwrap();
    store.t().unwrap().db.flush().unwrap();
    assert!(on_disk(dir.path(), b"gAAAA-purged-long-ago"));
    // A reader (an export) holds a tree of the old store past the switch.
    let reader = store.t().unwrap().audit.clone();
    let err = store.scrub(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, StoreError::OldFilesInUse), "{err}");
    drop(reader);
    assert!(store.scrub(Duration::from_secs(1)).unwrap().is_some());
    assert!(!on_disk(dir.path(), b"gAAAA-purged-long-ago"));
    assert!(!dir.path().join("db").exists());
}

#[test]
fn purges_waiting_at_once_share_one_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.commit_writes(&records(1..=3), b"h", &[Write::PutKey(key("gAAAA-x"))])
        .unwrap();
    assert!(s.scrub_if_due(Duration::from_secs(5)).unwrap().is_none());
    s.mark_scrub_due();
    let done: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.scrub_if_due(Duration::from_secs(5)).unwrap())
        })
        .collect();
    let rewrites = done
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(Option::is_some)
        .count();
    assert_eq!(rewrites, 1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(CURRENT)).unwrap(),
        "store.1\n"
    );
}

/// Every entry of every tree of a sled database.
fn dump(db: &Db) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let mut names = db.tree_names();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        for e in db.open_tree(&name).unwrap().iter() {
            let (k, v) = e.unwrap();
            out.push((name.to_vec(), k.to_vec(), v.to_vec()));
        }
    }
    out
}

#[test]
fn changes_made_while_the_first_step_copies_are_all_in_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::super::SledStore::open(dir.path(), 8 << 20).unwrap();
    let t = store.t().unwrap();
    for i in 0..50u8 {
        t.keys.insert([i], vec![i; 40]).unwrap();
        t.audit.insert([0, i], vec![i; 10]).unwrap();
    }
    t.meta.insert("head", "one").unwrap();
    let copy = begin(&t.db, dir.path(), dir.path(), 8 << 20).unwrap();
    // After the first step: a value replaced, one removed, one added,
    // the newest audit entry grown and one appended, a new tree.
    t.keys.insert([3], vec![99; 40]).unwrap();
    t.keys.remove([4]).unwrap();
    t.keys.insert([200], vec![1]).unwrap();
    t.audit.insert([0, 49], vec![49; 20]).unwrap();
    t.audit.insert([0, 50], vec![50; 10]).unwrap();
    t.meta.insert("head", "two").unwrap();
    t.db.open_tree("later").unwrap().insert("k", "v").unwrap();
    let Ok((db, _next)) = finish(&t.db, copy) else {
        panic!("the second step failed")
    };
    assert_eq!(dump(&db), dump(&t.db));
}
