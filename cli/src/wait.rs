//! `--wait`: polls a workspace until it runs (create) or has ended (delete), showing progress on
//! stderr: a spinner on a terminal, a plain line per state change otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use basho_core::{State, Workspace};

use crate::client::{Answer, Client};
use crate::error::Error;

/// How often the workspace is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// `running`; any terminal state is a failure.
    Running,
    /// Any terminal state; `failed` is a failure. A workspace the API no longer knows has ended.
    Ended,
}

impl Goal {
    fn name(self) -> &'static str {
        match self {
            Goal::Running => "running",
            Goal::Ended => "ended",
        }
    }
}

/// Polls workspace `id` until `goal`, for at most `timeout`. Returns the last answer (its body is
/// the workspace's JSON), or `None` when the workspace disappeared while waiting for it to end.
pub async fn wait_for(
    client: &Client,
    id: &str,
    goal: Goal,
    timeout: Duration,
) -> Result<Option<(Workspace, Answer)>, Error> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut progress = Progress::new(id, std::io::stderr().is_terminal());
    loop {
        let last_seen = match client.get_workspace(id).await {
            Ok(answer) => {
                let ws: Workspace = answer.parse(client, "a workspace")?;
                progress.show(&ws, started.elapsed());
                match settle(goal, &ws) {
                    Some(Ok(())) => {
                        progress.done(&ws);
                        return Ok(Some((ws, answer)));
                    }
                    Some(Err(e)) => {
                        progress.done(&ws);
                        return Err(e);
                    }
                    None => ws.state.to_string(),
                }
            }
            Err(e) if goal == Goal::Ended && e.status() == Some(404) => {
                progress.clear();
                return Ok(None);
            }
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "polling the workspace failed; retrying");
                format!("unknown ({e})")
            }
            Err(e) => {
                progress.clear();
                return Err(e.into());
            }
        };
        let now = Instant::now();
        if now >= deadline {
            progress.clear();
            return Err(Error::Timeout {
                id: id.to_owned(),
                goal: goal.name(),
                state: last_seen,
                waited_s: started.elapsed().as_secs(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Whether `ws` settles the wait: `Some(Ok)` reached, `Some(Err)` never will, `None` keep polling.
pub fn settle(goal: Goal, ws: &Workspace) -> Option<Result<(), Error>> {
    let ended = |ws: &Workspace| Error::Ended {
        id: ws.id.clone(),
        state: ws.state,
        message: ws
            .message
            .clone()
            .unwrap_or_else(|| "the orchestrator gave no reason".into()),
    };
    match goal {
        Goal::Running if ws.state == State::Running => Some(Ok(())),
        Goal::Running if ws.state.is_terminal() => Some(Err(ended(ws))),
        Goal::Ended if ws.state == State::Failed => Some(Err(ended(ws))),
        Goal::Ended if ws.state.is_terminal() => Some(Ok(())),
        _ => None,
    }
}

/// A workspace's state and site, and while queued its place and why it waits.
fn where_(ws: &Workspace) -> String {
    match (&ws.state, &ws.queue) {
        (State::Queued, Some(q)) => {
            format!("queued, {} of {} ({})", q.position, q.length, q.reason)
        }
        (State::Queued, None) => format!(
            "queued ({})",
            ws.message.as_deref().unwrap_or("waiting for compute")
        ),
        _ => format!("{} at {}", ws.state, ws.site),
    }
}

/// Progress on stderr.
struct Progress {
    id: String,
    tty: bool,
    frame: usize,
    last: Option<State>,
}

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl Progress {
    fn new(id: &str, tty: bool) -> Self {
        Self {
            id: id.to_owned(),
            tty,
            frame: 0,
            last: None,
        }
    }

    fn show(&mut self, ws: &Workspace, elapsed: Duration) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            self.frame = (self.frame + 1) % SPINNER.len();
            let _ = write!(
                err,
                "\r\x1b[2K{} {}: {} ({}s)",
                SPINNER[self.frame],
                self.id,
                where_(ws),
                elapsed.as_secs()
            );
            let _ = err.flush();
        } else if self.last != Some(ws.state) {
            let _ = writeln!(err, "{}: {}", self.id, where_(ws));
        }
        self.last = Some(ws.state);
    }

    fn done(&mut self, ws: &Workspace) {
        if self.tty {
            self.clear();
            let _ = writeln!(
                std::io::stderr(),
                "{}: {} at {}",
                self.id,
                ws.state,
                ws.site
            );
        }
    }

    fn clear(&mut self) {
        if self.tty && self.last.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(state: State, message: Option<&str>) -> Workspace {
        Workspace {
            state,
            message: message.map(Into::into),
            ..basho_test_util::workspace("ws-1")
        }
    }

    #[test]
    fn running_is_reached_and_terminal_states_fail() {
        assert!(matches!(
            settle(Goal::Running, &ws(State::Running, None)),
            Some(Ok(()))
        ));
        for s in [
            State::Pending,
            State::Placed,
            State::Starting,
            State::Unknown,
        ] {
            assert!(settle(Goal::Running, &ws(s, None)).is_none(), "{s}");
        }
        let Some(Err(e)) = settle(Goal::Running, &ws(State::Failed, Some("image not allowed")))
        else {
            panic!("failed must end the wait")
        };
        assert_eq!(e.to_string(), "workspace ws-1 is failed: image not allowed");
        assert!(matches!(
            settle(Goal::Running, &ws(State::Revoked, None)),
            Some(Err(Error::Ended { .. }))
        ));
    }

    #[test]
    fn ending_waits_for_a_terminal_state() {
        assert!(settle(Goal::Ended, &ws(State::Stopping, None)).is_none());
        assert!(settle(Goal::Ended, &ws(State::Running, None)).is_none());
        assert!(matches!(
            settle(Goal::Ended, &ws(State::Stopped, None)),
            Some(Ok(()))
        ));
        assert!(matches!(
            settle(Goal::Ended, &ws(State::Failed, None)),
            Some(Err(_))
        ));
    }
}
