//! The tables of `keys list`, `keys versions` and `token list`: at most
//! [`WIDTH`] columns by default (the widest cells shortened with `…`,
//! timestamps to the minute, some columns left out), every column in full
//! with `--wide`; and the `--output json` form of the same answers.

use std::io::Write;

use crate::wire::{KeyMeta, VersionMeta};

/// The most columns a default table takes.
pub(super) const WIDTH: usize = 100;

/// Space between columns.
const GAP: usize = 2;

/// A column: its header, and whether its cells may be shortened to fit.
pub(super) struct Col {
    pub(super) header: &'static str,
    pub(super) shrinks: bool,
}

/// A column that keeps its cells whole (ids, timestamps).
pub(super) const fn whole(header: &'static str) -> Col {
    Col {
        header,
        shrinks: false,
    }
}

/// A column whose cells are shortened when the table is too wide.
pub(super) const fn shrinks(header: &'static str) -> Col {
    Col {
        header,
        shrinks: true,
    }
}

/// Rows under columns, printed aligned.
pub(super) struct Table {
    cols: Vec<Col>,
    rows: Vec<Vec<String>>,
    wide: bool,
}

impl Table {
    pub(super) fn new(cols: Vec<Col>, wide: bool) -> Table {
        Table {
            cols,
            rows: Vec::new(),
            wide,
        }
    }

    /// Whether every column is shown in full.
    pub(super) fn wide(&self) -> bool {
        self.wide
    }

    /// Adds a row (one cell a column).
    pub(super) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.cols.len());
        self.rows.push(cells);
    }

    /// The width of each column: its widest cell or header; past
    /// [`WIDTH`] (unless wide), the widest shrinking column loses a column
    /// at a time, down to its header's width.
    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self
            .cols
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([c.header.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        if self.wide {
            return w;
        }
        let total = |w: &[usize]| w.iter().sum::<usize>() + GAP * w.len().saturating_sub(1);
        while total(&w) > WIDTH {
            let widest = (0..w.len())
                .filter(|&i| self.cols[i].shrinks && w[i] > self.cols[i].header.len().max(4))
                .max_by_key(|&i| w[i]);
            match widest {
                Some(i) => w[i] -= 1,
                None => break,
            }
        }
        w
    }

    /// Prints the header and the rows; the last column is not padded.
    pub(super) fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let w = self.widths();
        let headers: Vec<String> = self.cols.iter().map(|c| c.header.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(&" ".repeat(GAP));
                }
                let shown = fit(cell, w[i]);
                let pad = w[i].saturating_sub(shown.chars().count());
                line.push_str(&shown);
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(pad));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `cell` in at most `width` characters, ending in `…` when shortened.
fn fit(cell: &str, width: usize) -> String {
    if cell.chars().count() <= width {
        return cell.to_string();
    }
    let mut s: String = cell.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// A timestamp as the table shows it: whole (RFC 3339) when wide, else to
/// the minute (`2026-01-02 03:04Z`); `-` when absent.
pub(super) fn when(ts: &str, wide: bool) -> String {
    match ts {
        "" | "-" => "-".into(),
        t if wide => t.into(),
        t => t
            .get(..16)
            .map_or(t.into(), |m| format!("{}Z", m.replacen('T', " ", 1))),
    }
}

/// An optional text as a cell: `-` when absent.
fn text(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// An API answer as `--output json` prints it: indented, each object's
/// fields in name order (as it has always printed them).
pub(super) fn print_json<T: serde::Serialize>(
    out: &mut impl Write,
    answer: &T,
) -> anyhow::Result<()> {
    let value = serde_json::to_value(answer)?;
    serde_json::to_writer_pretty(&mut *out, &value)?;
    writeln!(out)?;
    Ok(())
}

/// `keys list`: id, provider, name, last use and expiry; `wide` adds the
/// creation time. A list of deleted keys (`deleted_view`, even when empty)
/// shows when each is purged (instead of its last use, unless `wide`).
pub(super) fn keys(list: &[KeyMeta], wide: bool, deleted_view: bool) -> Table {
    let deleted = deleted_view || list.iter().any(|k| k.purge_at.is_some());
    let last_used = !deleted || wide;
    let mut cols = vec![whole("ID"), shrinks("PROVIDER"), shrinks("NAME")];
    if wide {
        cols.push(whole("CREATED"));
    }
    if last_used {
        cols.push(whole("LAST USED"));
    }
    cols.push(whole("EXPIRES"));
    if deleted {
        cols.push(whole("PURGE AT"));
    }
    let mut t = Table::new(cols, wide);
    for k in list {
        let mut cells = vec![k.id.clone(), k.provider.clone(), k.key_name.clone()];
        if wide {
            cells.push(when(&k.created_at, wide));
        }
        if last_used {
            cells.push(when(text(&k.last_used), wide));
        }
        cells.push(when(text(&k.expires_at), wide));
        if deleted {
            cells.push(when(text(&k.purge_at), wide));
        }
        t.row(cells);
    }
    t
}

/// `keys versions`: every column, timestamps to the minute unless `wide`.
pub(super) fn versions(list: &[VersionMeta], wide: bool) -> Table {
    let cols = vec![
        whole("VERSION"),
        whole("STATE"),
        whole("CREATED"),
        shrinks("CREATED BY"),
        whole("EXPIRES"),
    ];
    let mut t = Table::new(cols, wide);
    for v in list {
        t.row(vec![
            v.version.to_string(),
            v.state.to_string(),
            when(&v.created_at, wide),
            text(&v.created_by).to_string(),
            when(text(&v.expires_at), wide),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(t: &Table) -> String {
        let mut out = Vec::new();
        t.print(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_list_of_deleted_keys_says_when_each_is_purged_within_100_columns() {
        let k = KeyMeta {
            version: 1,
            deleted_at: Some("2026-12-07T10:00:00Z".into()),
            purge_at: Some("2026-12-14T10:00:00Z".into()),
            ..crate::wire::tests::sample_key_meta()
        };
        let text = printed(&keys(std::slice::from_ref(&k), false, true));
        assert!(
            text.contains("PURGE AT") && text.contains("2026-12-14 10:00Z"),
            "{text}"
        );
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        let live = KeyMeta {
            id: "x".into(),
            deleted_at: None,
            purge_at: None,
            ..k
        };
        let live = printed(&keys(&[live], false, false));
        assert!(!live.contains("PURGE AT"), "{live}");
        // `keys list --deleted` with nothing deleted: the same columns.
        let none = printed(&keys(&[], false, true));
        assert!(
            none.contains("PURGE AT") && !none.contains("LAST USED"),
            "{none}"
        );
    }

    #[test]
    fn a_table_fits_unless_wide() {
        let long = "n".repeat(80);
        for wide in [false, true] {
            let mut t = Table::new(vec![whole("ID"), shrinks("NAME"), shrinks("NOTE")], wide);
            t.row(vec!["x".repeat(36), long.clone(), "short".into()]);
            let text = printed(&t);
            let widest = text.lines().map(|l| l.chars().count()).max().unwrap();
            if wide {
                assert!(text.contains(&long), "{text}");
                assert!(widest > WIDTH);
            } else {
                assert!(widest <= WIDTH, "{text}");
                assert!(text.contains('…') && text.contains(&"x".repeat(36)));
                assert!(text.contains("short"), "{text}");
            }
        }
    }

    #[test]
    fn timestamps_to_the_minute() {
        assert_eq!(
            when("2026-01-02T03:04:05.123456Z", false),
            "2026-01-02 03:04Z"
        );
        assert_eq!(
            when("2026-01-02T03:04:05.123456Z", true),
            "2026-01-02T03:04:05.123456Z"
        );
        assert_eq!(when("-", false), "-");
    }
}
