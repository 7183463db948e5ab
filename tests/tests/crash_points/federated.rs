//! The federated cases: a job over the world's site (its step and its aggregation both there,
//! every clean partial released by the site's rule) with the orchestrator or the agent killed at
//! a federated job's crash point, the job sent again with its Idempotency-Key when the
//! orchestrator died. The job must complete, its step and its aggregation each made once and
//! both gone from the backend, the site's capacity free again.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::DATASET;
use crate::world::{Files, Row, World, died_at, starters};

impl World {
    pub(crate) async fn run_federated(
        &self,
        dir: &Path,
        point: &'static str,
    ) -> Result<Row, String> {
        let Files {
            config,
            orchestrator: orch_toml,
            agent: site_toml,
            log,
            ..
        } = self.files(dir, |s| s.airlock.auto_release_partials = true);
        let armed = format!("{point}=return");
        let in_orchestrator = point.starts_with("orchestrator.");
        let (orch, agent) = starters(&orch_toml, &site_toml, &log);
        let mut o = orch(in_orchestrator.then_some(armed.as_str()));
        self.up(config.listen).await?;
        let mut a = agent((!in_orchestrator).then_some(armed.as_str()));
        self.registered().await?;

        let project = basho_tests::unique("P-CRASH");
        let site = self.site();
        let body = json!({
            "project": project,
            "visas": [self.fed.issuer.mint("alice", DATASET)],
            "sites": [site],
            "site_step": {"image": "basho/demo", "command": ["count-cells"]},
            "aggregation": {"image": "basho/demo", "command": ["sum-cells", "1"], "site": site},
        });
        // The job; the armed process dies on the way (its answer may never come).
        let key = basho_tests::unique("key");
        let headers = [("Idempotency-Key", key.as_str())];
        let answered = self
            .fed
            .api
            .try_call_with(Method::POST, "/v1/federated-jobs", Some(&body), &headers)
            .await;
        died_at(if in_orchestrator { &mut o } else { &mut a }, point).await?;

        // Started again on the same state; the job sent again with its key when the
        // orchestrator died: the same job answers, nothing started twice.
        let restarted = Instant::now();
        let mut id = answered.and_then(|(_, j)| j["id"].as_str().map(str::to_owned));
        if in_orchestrator {
            o = orch(None);
            self.up(config.listen).await?;
            let (status, j) = self
                .fed
                .api
                .try_call_with(Method::POST, "/v1/federated-jobs", Some(&body), &headers)
                .await
                .ok_or("the replayed job was not answered")?;
            let replayed = j["id"].as_str().map(str::to_owned);
            if !status.is_success() || (id.is_some() && replayed != id) {
                return Err(format!("the replay answered {status}: {j} (first: {id:?})"));
            }
            id = replayed;
        } else {
            a = agent(None);
        }
        let id = id.ok_or("no job id was ever answered")?;
        let job = self
            .poll("the job to end", Duration::from_secs(90), || async {
                let (_, j) = self
                    .fed
                    .api
                    .try_call_with(Method::GET, &format!("/v1/federated-jobs/{id}"), None, &[])
                    .await?;
                ["completed", "failed"]
                    .contains(&j["state"].as_str()?)
                    .then_some(j)
            })
            .await?;
        if job["state"] != "completed" {
            return Err(format!("the job {}: {}", job["state"], job["message"]));
        }
        let converged = restarted.elapsed();
        // A few more passes: a second aggregation, or a step run again, would show now.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (_, made) = self
            .fed
            .api
            .try_call_with(
                Method::GET,
                &format!("/v1/workspaces?project={project}"),
                None,
                &[],
            )
            .await
            .ok_or("the workspaces could not be listed")?;
        let made: Vec<String> = made
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let step = job["sites"][0]["workspace"].as_str().unwrap_or_default();
        let aggregation = job["aggregation"]["workspace"].as_str().unwrap_or_default();
        let mut expected = vec![step.to_owned(), aggregation.to_owned()];
        let mut seen = made.clone();
        expected.sort();
        seen.sort();
        if seen != expected {
            return Err(format!(
                "the project holds {made:?}, not the step and the aggregation"
            ));
        }
        for w in &made {
            self.instances(w, false).await?;
        }
        self.capacity(false).await?;
        o.kill();
        a.kill();
        for w in &made {
            self.ledgers(&config.data_dir, &project, w).await?;
        }
        Ok(Row {
            point,
            end: "completed".into(),
            converged,
        })
    }
}
