//! Background loops: expiry (live workspaces past `expires_at` become `expired`) and the
//! silent-agent sweep (running or starting workspaces of a site not heard from for
//! `limits.agent_silent_s` become `unknown`; the agent's next observations move them back).

use std::time::Duration;

use basho_core::State;
use chrono::{TimeDelta, Utc};
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
        let msg = format!(
            "expired at {}; ask for a new workspace (with fresh visas if they expired)",
            rec.workspace.expires_at.to_rfc3339()
        );
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
                states: vec![State::Starting, State::Running],
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

/// Runs [`sweep_once`] a few times per silence window until `shutdown`.
pub async fn silent_agents(o: Orchestrator, shutdown: CancellationToken) {
    let every = Duration::from_secs((o.inner().config.limits.agent_silent_s / 4).clamp(1, 15));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !o.is_leader() {
            continue;
        }
        if let Err(e) = sweep_once(&o).await {
            tracing::error!(error = %e, "silent-agent sweep failed; retrying");
        }
    }
}
