//! The store suite's cases for GA4GH TES tasks.

use basho_core::protocol::Launch;
use basho_core::tes::{TesState, TesTask, task_state};

use super::*;
use crate::store::{Cancel, NewTask, TaskFilter};

fn task(name: &str, tags: &[(&str, &str)]) -> NewTask {
    let body: TesTask = serde_json::from_value(json!({
        "name": name,
        "executors": [{"image": "basho/demo", "command": ["true"]}],
        "tags": tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
    }))
    .unwrap();
    NewTask {
        body,
        warnings: vec!["resources.disk_gb is not applied".into()],
    }
}

fn page(f: TaskFilter) -> TaskFilter {
    TaskFilter { limit: 100, ..f }
}

pub(crate) async fn tasks_are_listed_filtered_and_canceled(s: Arc<dyn Store>) {
    s.upsert_site(&registration("tohoku", 64), Utc::now())
        .await
        .unwrap();
    // A task and its batch workspace are one insert; the workspace keeps its launch.
    let mut first = rec("ws-t0", "tohoku");
    first.launch = Some(Launch {
        workdir: Some("/work/run".into()),
        env: [("LANG".to_owned(), "C".to_owned())].into(),
        outputs: vec!["counts.csv".into()],
        ..Launch::default()
    });
    let made = new(s
        .create_task(&first, &task("align-1", &[("run", "7")]), None)
        .await
        .unwrap());
    assert_eq!(made.launch, first.launch);
    let back = s.workspace("ws-t0").await.unwrap().unwrap();
    assert_eq!(back.launch, first.launch);
    let t = s.task("ws-t0").await.unwrap().unwrap();
    assert_eq!(t.body.name.as_deref(), Some("align-1"));
    assert_eq!(t.warnings.len(), 1);
    assert!(!t.canceled);
    assert_eq!(t.workspace.state, Placed);
    assert!(s.task("ws-none").await.unwrap().is_none());
    // A plain workspace is no task.
    new(s
        .create_workspace(&rec("ws-plain", "tohoku"), None)
        .await
        .unwrap());
    assert!(s.task("ws-plain").await.unwrap().is_none());
    for i in 1..5 {
        let name = if i % 2 == 0 { "align" } else { "count" };
        let r = rec(&format!("ws-t{i}"), "tohoku");
        let tags = [("run", if i < 3 { "7" } else { "8" }), ("kind", name)];
        new(s
            .create_task(&r, &task(&format!("{name}-{i}"), &tags), None)
            .await
            .unwrap());
    }
    let ids = |rows: Vec<crate::store::TaskRow>| -> Vec<String> {
        rows.into_iter().map(|r| r.workspace.id).collect()
    };
    // Newest first, in pages.
    let all = s.list_tasks(&page(TaskFilter::default())).await.unwrap();
    assert_eq!(
        ids(all.clone()),
        ["ws-t4", "ws-t3", "ws-t2", "ws-t1", "ws-t0"]
    );
    let two = TaskFilter {
        limit: 2,
        ..TaskFilter::default()
    };
    let p1 = s.list_tasks(&two).await.unwrap();
    let p2 = s
        .list_tasks(&TaskFilter {
            before: Some(p1[1].seq),
            ..two.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(p2), ["ws-t2", "ws-t1"]);
    // By name prefix, tag key, tag key and value.
    let f = page(TaskFilter {
        name_prefix: Some("align".into()),
        ..TaskFilter::default()
    });
    assert_eq!(
        ids(s.list_tasks(&f).await.unwrap()),
        ["ws-t4", "ws-t2", "ws-t0"]
    );
    let f = page(TaskFilter {
        name_prefix: Some("%".into()),
        ..TaskFilter::default()
    });
    assert!(
        s.list_tasks(&f).await.unwrap().is_empty(),
        "a prefix is not a pattern"
    );
    let f = page(TaskFilter {
        tags: vec![("kind".into(), None)],
        ..TaskFilter::default()
    });
    assert_eq!(
        ids(s.list_tasks(&f).await.unwrap()),
        ["ws-t4", "ws-t3", "ws-t2", "ws-t1"]
    );
    let f = page(TaskFilter {
        tags: vec![
            ("run".into(), Some("7".into())),
            ("kind".into(), Some("count".into())),
        ],
        ..TaskFilter::default()
    });
    assert_eq!(ids(s.list_tasks(&f).await.unwrap()), ["ws-t1"]);
    let f = page(TaskFilter {
        owner: Some("someone-else".into()),
        ..TaskFilter::default()
    });
    assert!(s.list_tasks(&f).await.unwrap().is_empty());

    // Each workspace state, canceled or not, exit or not: the state filter finds a task
    // exactly where the mapping the API shows says it is.
    let now = Utc::now();
    s.transition("ws-t1", Running, None, now).await.unwrap();
    s.transition("ws-t2", Failed, Some("exited with code 3"), now)
        .await
        .unwrap();
    s.transition("ws-t3", Failed, Some("image not allowed"), now)
        .await
        .unwrap();
    s.transition("ws-t4", Stopped, Some("exited with code 0"), now)
        .await
        .unwrap();
    assert_eq!(s.cancel_task("ws-t4").await.unwrap(), Cancel::Ended);
    assert_eq!(s.cancel_task("ws-t1").await.unwrap(), Cancel::Marked);
    assert_eq!(s.cancel_task("ws-t1").await.unwrap(), Cancel::Marked);
    assert_eq!(s.cancel_task("ws-none").await.unwrap(), Cancel::Missing);
    s.transition("ws-t1", Stopping, None, now).await.unwrap();
    let rows = s.list_tasks(&page(TaskFilter::default())).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for row in &rows {
        let w = &row.workspace;
        let want = task_state(w.state, w.message.as_deref(), row.canceled);
        seen.insert(want);
        for state in TesState::ALL {
            let f = page(TaskFilter {
                state: Some(state),
                ..TaskFilter::default()
            });
            let found = ids(s.list_tasks(&f).await.unwrap()).contains(&w.id);
            assert_eq!(found, state == want, "{} in {state:?}: {w:?}", w.id);
        }
    }
    let expected = [
        TesState::Queued,
        TesState::Canceling,
        TesState::ExecutorError,
        TesState::SystemError,
        TesState::Complete,
    ];
    assert!(expected.iter().all(|e| seen.contains(e)), "{seen:?}");
}
