//! Runs `KEYHOLD_KEY_COMMAND` with a deadline and an output cap.
//!
//! The command (`sh -c`, in a process group of its own) must print its
//! key(s) and exit within `KEYHOLD_KEY_COMMAND_TIMEOUT` seconds (default
//! [`DEFAULT_TIMEOUT`]) and print at most [`MAX_OUTPUT`] bytes. Past
//! either limit the whole group is killed and the caller gets an error
//! that says which limit was hit: a hung secret-manager call can no longer
//! hang `serve`, `check` or any offline command.
//!
//! Not for: parsing the keys (see `keyring`).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// Why KEYHOLD_KEY_COMMAND gave no keys. Messages say what to do and never
/// show its output (it may hold keys).
// Every variant is a failure of the command: the shared prefix is its
// subject, as each message's is.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, thiserror::Error)]
pub enum KeyCommandError {
    #[error(
        "cannot run KEYHOLD_KEY_COMMAND: {0}; check the command and that its program is installed"
    )]
    CommandSpawn(std::io::Error),
    #[error(
        "KEYHOLD_KEY_COMMAND exited with {0}; run it by hand to see its error (its output is not shown here because it may hold keys)"
    )]
    CommandFailed(std::process::ExitStatus),
    #[error(
        "KEYHOLD_KEY_COMMAND did not finish within {} s and was killed; check that its secret \
         manager answers, or give it longer with KEYHOLD_KEY_COMMAND_TIMEOUT (seconds)",
        timeout.as_secs()
    )]
    CommandTimedOut { timeout: std::time::Duration },
    #[error(
        "KEYHOLD_KEY_COMMAND printed more than {} KiB and was killed; it must print only the \
         key(s), one a line",
        limit / 1024
    )]
    CommandOutputTooLarge { limit: usize },
    #[error(
        "KEYHOLD_KEY_COMMAND_TIMEOUT `{0}` is not a duration from 1 s to 1 h (e.g. 45, 90s, 1m30s); fix or unset it (default 30 s)"
    )]
    CommandTimeoutSetting(String),
}

/// The variable that sets the deadline, in whole seconds.
pub(crate) const TIMEOUT_VAR: &str = "KEYHOLD_KEY_COMMAND_TIMEOUT";
/// How long the command may take when the variable is not set.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes the command may print: room for over a thousand keys.
pub(crate) const MAX_OUTPUT: usize = 64 * 1024;

/// Reads the deadline from `KEYHOLD_KEY_COMMAND_TIMEOUT` (a duration, 1 s
/// to 1 h: `45`, `90s`, `1m30s`) through `lookup`.
pub(crate) fn timeout_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Duration, KeyCommandError> {
    let Some(raw) = lookup(TIMEOUT_VAR) else {
        return Ok(DEFAULT_TIMEOUT);
    };
    if raw.trim().is_empty() {
        return Ok(DEFAULT_TIMEOUT);
    }
    match raw.trim().parse::<crate::duration::Seconds>() {
        Ok(secs) if (1..=3600).contains(&secs.0) => Ok(Duration::from_secs(secs.0)),
        _ => Err(KeyCommandError::CommandTimeoutSetting(
            raw.chars().take(20).collect(),
        )),
    }
}

/// Runs `command` with `sh -c` and returns what it printed on stdout.
pub(crate) fn run(command: &str, timeout: Duration) -> Result<Zeroizing<Vec<u8>>, KeyCommandError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group, so a timeout kills what it started too
        // (a pipeline, a CLI that forks) and the pipe closes.
        .process_group(0)
        .spawn()
        .map_err(KeyCommandError::CommandSpawn)?;
    let deadline = Instant::now() + timeout;
    let Some(mut stdout) = child.stdout.take() else {
        kill_group(&mut child);
        return Err(KeyCommandError::CommandSpawn(std::io::Error::other(
            "no pipe to the command's output",
        )));
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // One byte past the cap tells "too much" from "exactly the cap".
        let mut out = Zeroizing::new(Vec::new());
        let res = (&mut stdout)
            .take(MAX_OUTPUT as u64 + 1)
            .read_to_end(&mut out);
        let _ = tx.send(res.map(|_| out));
    });
    let left = deadline.saturating_duration_since(Instant::now());
    let out = match rx.recv_timeout(left) {
        Ok(Ok(out)) if out.len() > MAX_OUTPUT => {
            kill_group(&mut child);
            return Err(KeyCommandError::CommandOutputTooLarge { limit: MAX_OUTPUT });
        }
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            kill_group(&mut child);
            return Err(KeyCommandError::CommandSpawn(e));
        }
        Err(_) => {
            kill_group(&mut child);
            return Err(KeyCommandError::CommandTimedOut { timeout });
        }
    };
    // Its output is closed; now it has the rest of the time to exit.
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(out),
            Ok(Some(status)) => return Err(KeyCommandError::CommandFailed(status)),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child);
                return Err(KeyCommandError::CommandTimedOut { timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                kill_group(&mut child);
                return Err(KeyCommandError::CommandSpawn(e));
            }
        }
    }
}

/// Kills the command's whole process group, then reaps the command.
fn kill_group(child: &mut Child) {
    // No unsafe code here, so no kill(2): the shell's `kill` signals the
    // group (the negative id), and `Child::kill` covers a shell that is
    // missing.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -KILL -{} 2>/dev/null", child.id()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_hangs_is_killed_at_its_deadline() {
        let started = Instant::now();
        let err = run("sleep 30; echo late", Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, KeyCommandError::CommandTimedOut { .. }),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err.to_string().contains(TIMEOUT_VAR), "{err}");
    }

    #[test]
    fn a_child_holding_the_pipe_open_is_killed_too() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("still-running");
        let started = Instant::now();
        let cmd = format!("(sleep 2; touch {}) & echo key", marker.display());
        let err = run(&cmd, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, KeyCommandError::CommandTimedOut { .. }),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        // The background part was killed with the group: it never wakes.
        std::thread::sleep(Duration::from_secs(3));
        assert!(!marker.exists(), "the command's child outlived the timeout");
    }

    #[test]
    fn endless_output_is_cut_at_the_cap() {
        let err = run("yes", Duration::from_secs(20)).unwrap_err();
        assert!(
            matches!(err, KeyCommandError::CommandOutputTooLarge { .. }),
            "{err}"
        );
    }

    #[test]
    fn output_up_to_the_cap_is_read_whole() {
        let out = run("printf 'abc\\n'", DEFAULT_TIMEOUT).unwrap();
        assert_eq!(&out[..], b"abc\n");
    }

    #[test]
    fn the_timeout_setting_is_checked() {
        let none = |_: &str| None;
        assert_eq!(timeout_from(none).unwrap(), DEFAULT_TIMEOUT);
        let five = |_: &str| Some("5".to_string());
        assert_eq!(timeout_from(five).unwrap(), Duration::from_secs(5));
        let longer = |_: &str| Some("1m30s".to_string());
        assert_eq!(timeout_from(longer).unwrap(), Duration::from_secs(90));
        for bad in ["0", "abc", "-1", "99999", "2h"] {
            let f = move |_: &str| Some(bad.to_string());
            assert!(timeout_from(f).is_err(), "{bad}");
        }
    }
}
