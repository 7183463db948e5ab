//! Background loops: expiry (live workspaces past `expires_at` become `expired`) and the
//! silent-agent sweep (running or starting workspaces of a site not heard from for
//! `limits.agent_silent_s` become `unknown`; the agent's next observations move them back),
//! which also fails workspaces stuck placed, starting or stopping past their site's
//! `start_timeout_s`.

use std::time::Duration;

use basho_core::State;
use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::Orchestrator;
use crate::store::{StoreError, Transition, WorkspaceFilter};

/// How often the expiry loop looks.
pub const EXPIRY_EVERY: Duration = Duration::from_secs(1);

fn live_states() -> Vec<State> {
    State::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .collect()
}

/// Expires live workspaces whose `expires_at` has passed; returns how many.
pub async fn expire_once(o: &Orchestrator) -> Result<usize, StoreError> {
    let now = Utc::now();
    let due = o
        .inner()
        .store
        .list_workspaces(&WorkspaceFilter {
            states: live_states(),
            expires_by: Some(now),
            ..WorkspaceFilter::default()
        })
        .await?;
    let mut n = 0;
    for rec in due {
        let w = &rec.workspace;
        let msg = match w.state {
            State::Queued => format!(
                "left the queue unplaced at {} (its max_queue_s, or a visa's expiry): {}; ask \
                 again with less compute, another site, or a longer max_queue_s",
                w.expires_at.to_rfc3339(),
                w.message
                    .as_deref()
                    .unwrap_or("no site had the compute free")
            ),
            _ => format!(
                "expired at {}; ask for a new workspace (with fresh visas if they expired)",
                w.expires_at.to_rfc3339()
            ),
        };
        if let Transition::Changed { .. } = o
            .transition_as(
                crate::audit::SYSTEM,
                &rec.workspace.id,
                State::Expired,
                Some(&msg),
            )
            .await?
        {
            n += 1;
        }
    }
    Ok(n)
}

/// Marks running and starting workspaces of silent sites `unknown`; returns how many.
pub async fn sweep_once(o: &Orchestrator) -> Result<usize, StoreError> {
    let silent_s = i64::try_from(o.inner().config.limits.agent_silent_s).unwrap_or(i64::MAX);
    let cutoff = Utc::now() - TimeDelta::try_seconds(silent_s).unwrap_or(TimeDelta::MAX);
    let mut n = 0;
    for (site, last) in o.inner().sites.silent_since(cutoff) {
        let recs = o
            .inner()
            .store
            .list_workspaces(&WorkspaceFilter {
                site: Some(site.clone()),
                states: vec![State::Starting, State::Running, State::Preempted],
                ..WorkspaceFilter::default()
            })
            .await?;
        for rec in recs {
            let msg = format!(
                "site {site} not heard from since {}; the workspace may still run",
                last.to_rfc3339()
            );
            if let Transition::Changed { .. } = o
                .transition_as(
                    crate::audit::SYSTEM,
                    &rec.workspace.id,
                    State::Unknown,
                    Some(&msg),
                )
                .await?
            {
                tracing::warn!(%site, workspace = %rec.workspace.id, "site silent: workspace unknown");
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The states a workspace passes through on its way to running or gone; none should last long.
pub const TRANSIENT: [State; 3] = [State::Placed, State::Starting, State::Stopping];

/// Marks `failed` every workspace that has been placed, starting or stopping for longer than
/// its site's `start_timeout_s`, counted from its last state change or from `since` (when this
/// replica began to lead), whichever is later: time the orchestrator was down, unable to hear
/// the agent's reports, does not count. Only sites heard from within `limits.agent_silent_s`
/// are judged: their agent is there to say the workspace is still not running, and to act on
/// the verdict (a silent site's workspaces are the silent-agent sweep's). Failing releases the
/// compute and takes the workspace out of the site's desired state, so the agent stops and
/// removes whatever it made. Returns how many.
pub async fn time_out_once(o: &Orchestrator, since: DateTime<Utc>) -> Result<usize, StoreError> {
    let now = Utc::now();
    let silent_s = i64::try_from(o.inner().config.limits.agent_silent_s).unwrap_or(i64::MAX);
    let heard_by = now - TimeDelta::try_seconds(silent_s).unwrap_or(TimeDelta::MAX);
    let silent: Vec<_> = o.inner().sites.silent_since(heard_by);
    let mut timeouts = o.inner().sites.start_timeouts();
    timeouts.retain(|site, _| !silent.iter().any(|(s, _)| s == site));
    let stuck = o
        .inner()
        .store
        .list_workspaces(&WorkspaceFilter {
            states: TRANSIENT.to_vec(),
            ..WorkspaceFilter::default()
        })
        .await?;
    let mut n = 0;
    for rec in stuck {
        let w = &rec.workspace;
        let limit = timeouts.get(&w.site).copied().unwrap_or(0);
        let from = w.updated_at.max(since);
        if limit == 0 || now - from <= TimeDelta::seconds(i64::try_from(limit).unwrap_or(i64::MAX))
        {
            continue;
        }
        let msg = format!(
            "{} for longer than site {}'s start_timeout_s ({limit} s) since {}; the site stops \
             and removes what it made",
            w.state,
            w.site,
            w.updated_at.to_rfc3339()
        );
        if let Transition::Changed { .. } = o
            .transition_as(crate::audit::SYSTEM, &w.id, State::Failed, Some(&msg))
            .await?
        {
            tracing::warn!(site = %w.site, workspace = %w.id, state = %w.state, limit,
                "workspace timed out: failed");
            o.inner()
                .metrics
                .workspaces_timed_out
                .get_or_create(&crate::metrics::SiteStateLabels {
                    site: w.site.to_string(),
                    state: w.state.to_string(),
                })
                .inc();
            n += 1;
        }
    }
    Ok(n)
}

/// Runs [`expire_once`] every [`EXPIRY_EVERY`] until `shutdown`.
pub async fn expiry(o: Orchestrator, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !o.is_leader() {
            continue;
        }
        match expire_once(&o).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "workspaces expired"),
            Err(e) => tracing::error!(error = %e, "expiry pass failed; retrying"),
        }
    }
}

/// Runs [`sweep_once`] a few times per silence window, and [`time_out_once`] every second,
/// until `shutdown`.
pub async fn silent_agents(o: Orchestrator, shutdown: CancellationToken) {
    let every = Duration::from_secs((o.inner().config.limits.agent_silent_s / 4).clamp(1, 15));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep: Option<tokio::time::Instant> = None;
    let mut leading_since: Option<DateTime<Utc>> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !o.is_leader() {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(Utc::now);
        if last_sweep.is_none_or(|t| t.elapsed() >= every) {
            last_sweep = Some(tokio::time::Instant::now());
            if let Err(e) = sweep_once(&o).await {
                tracing::error!(error = %e, "silent-agent sweep failed; retrying");
            }
        }
        if let Err(e) = time_out_once(&o, since).await {
            tracing::error!(error = %e, "start-timeout pass failed; retrying");
        }
    }
}
