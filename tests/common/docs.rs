//! The shell blocks (```sh, bash, shell, console) of README.md,
//! CONTRIBUTING.md and docs/*.md, and the commands in them; shared by
//! tests/docs_commands.rs (every `keyhold` command parses) and
//! tests/docs_run.rs (every runnable block runs).
#![allow(dead_code)] // each including test uses part of it

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, CONTRIBUTING.md, then docs/*.md in name order.
pub fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md"), repo().join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// One shell block of a document.
pub struct Block {
    /// The document, relative to the repository (`docs/api.md`).
    pub file: String,
    /// The line number of the block's first line (after the fence).
    pub line: usize,
    /// The block's lines, as written.
    pub lines: Vec<String>,
}

impl Block {
    pub fn text(&self) -> String {
        let mut t = self.lines.join("\n");
        t.push('\n');
        t
    }

    /// The commands: each a line range (continued lines joined), with its
    /// text; comment and blank lines are not commands.
    pub fn commands(&self) -> Vec<(std::ops::Range<usize>, String)> {
        let mut out = Vec::new();
        let mut joined = String::new();
        let mut start = 0;
        for (i, line) in self.lines.iter().enumerate() {
            if joined.is_empty() {
                let t = line.trim_start();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                start = i;
            }
            match line.strip_suffix('\\') {
                Some(part) => {
                    joined.push_str(part);
                    joined.push(' ');
                }
                None => {
                    joined.push_str(line);
                    out.push((start..i + 1, std::mem::take(&mut joined)));
                }
            }
        }
        out
    }
}

/// Every shell block of `path`.
pub fn blocks_of(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap();
    let file = path
        .strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut out: Vec<Block> = Vec::new();
    let mut in_shell = false;
    let mut in_other = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            if in_shell || in_other {
                in_shell = false;
                in_other = false;
            } else if matches!(lang.trim(), "sh" | "bash" | "shell" | "console") {
                in_shell = true;
                out.push(Block {
                    file: file.clone(),
                    line: i + 2,
                    lines: Vec::new(),
                });
            } else {
                in_other = true;
            }
            continue;
        }
        if in_shell {
            if let Some(b) = out.last_mut() {
                b.lines.push(line.to_string());
            }
        }
    }
    out
}

/// Every shell block of every document.
pub fn blocks() -> Vec<Block> {
    doc_files().iter().flat_map(|f| blocks_of(f)).collect()
}
