//! `basho-init --until UNIX_SECONDS -- CMD ARGS...`: the first process of a workspace container.
//! It runs the workload, reaps every process that ends in the container (it is PID 1 there),
//! hands `docker stop`'s SIGTERM (and SIGINT, SIGHUP) on to the workload, and at `--until`, the
//! earliest expiry of the workspace's grants, ends everything: SIGTERM to every process in the
//! container, SIGKILL ten seconds later, exit 124. The agent mounts it read-only, so the expiry
//! holds even when no agent runs (killed, upgraded, its host cut off). It links statically
//! (`scripts/build-init`), since workspace images bring whatever C library they like, or none.

use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::os::fd::AsFd as _;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Time the workload gets between SIGTERM and SIGKILL at expiry.
const GRACE: Duration = Duration::from_secs(10);
/// Exit code when the expiry ended the workload (as `timeout(1)`).
const EXPIRED: u8 = 124;
/// Signals passed on to the workload.
const FORWARDED: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage(why: &str) -> ExitCode {
    eprintln!("basho-init: {why}; usage: basho-init --until UNIX_SECONDS -- CMD [ARGS...]");
    ExitCode::from(2)
}

/// Reaps every child that ended; the workload's exit code when it was among them.
fn reap(workload: Pid) -> Option<u8> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == workload => {
                found = Some(u8::try_from(code).unwrap_or(1));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == workload => {
                found = Some(u8::try_from(128 + sig as i32).unwrap_or(255));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(_) => {}
        }
    }
}

/// Sends `sig` to every process of the container but this one.
fn signal_all(sig: Signal) {
    let _ = kill(Pid::from_raw(-1), sig);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (until, cmd) = match args.as_slice() {
        [flag, until, dashes, cmd @ ..]
            if flag == "--until" && dashes == "--" && !cmd.is_empty() =>
        {
            match until.parse::<u64>() {
                Ok(u) => (u, cmd),
                Err(_) => return usage("--until takes Unix seconds"),
            }
        }
        _ => return usage("no command"),
    };
    if now() >= until {
        eprintln!("basho-init: the workspace's grants expired at {until}; not starting");
        return ExitCode::from(EXPIRED);
    }
    // Started before the signals are blocked, so the workload gets them as usual.
    let workload = match Command::new(&cmd[0]).args(&cmd[1..]).spawn() {
        Ok(c) => Pid::from_raw(i32::try_from(c.id()).unwrap_or(-1)),
        Err(e) => {
            eprintln!("basho-init: cannot run {}: {e}", cmd[0]);
            return ExitCode::from(127);
        }
    };
    // PID 1 has no default action for signals: take them through a descriptor instead.
    // SIGCHLD too: a child ending wakes the loop at once.
    let mut mask = SigSet::empty();
    for s in FORWARDED.into_iter().chain([Signal::SIGCHLD]) {
        mask.add(s);
    }
    let signals = mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC));
    let signals = match signals {
        Ok(fd) => Some(fd),
        Err(e) => {
            eprintln!("basho-init: cannot take signals ({e}); they will not reach the workload");
            None
        }
    };
    let mut ending: Option<u64> = None;
    loop {
        if let Some(code) = reap(workload) {
            if ending.is_some() {
                signal_all(Signal::SIGKILL);
                return ExitCode::from(EXPIRED);
            }
            return ExitCode::from(code);
        }
        // A child that ended after the reap above was announced by a SIGCHLD read here: reap
        // again before waiting, or the wait would sleep through its end.
        let mut ended = false;
        while let Some(Ok(Some(info))) = signals.as_ref().map(SignalFd::read_signal) {
            match Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) {
                Ok(sig) if FORWARDED.contains(&sig) => {
                    let _ = kill(workload, sig);
                }
                Ok(Signal::SIGCHLD) => ended = true,
                _ => {}
            }
        }
        if ended {
            continue;
        }
        let t = now();
        match ending {
            None if t >= until => {
                eprintln!(
                    "basho-init: the workspace's grants expired at {until}; ending its processes"
                );
                signal_all(Signal::SIGTERM);
                ending = Some(t);
            }
            Some(since) if t >= since + GRACE.as_secs() => signal_all(Signal::SIGKILL),
            _ => {}
        }
        // Wait for a signal (a child's end among them), at most a second: the clock is looked
        // at again then.
        match &signals {
            Some(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(1000u16));
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
