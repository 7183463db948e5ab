//! What the client commands print: aligned tables and `key: value` views for people, or the
//! API's JSON passed through untouched for scripts (`--output json`).

use basho_core::Workspace;
use basho_core::protocol::Site;
use chrono::{DateTime, Utc};

/// How a command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The API's JSON exactly as it answered.
    Json,
}

/// Lays out rows under headers in columns two spaces apart; the last column is not padded, so no
/// line ends in spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let last = row.len().min(widths.len()).saturating_sub(1);
        for (i, cell) in row.iter().take(widths.len()).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// A timestamp as the tables show it: UTC to the second.
pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Workspaces as a table: id, project, owner, site, state, datasets, expires.
pub fn workspaces_table(list: &[Workspace]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.project.to_string(),
                w.owner.clone(),
                w.site.to_string(),
                w.state.to_string(),
                join(&w.datasets),
                timestamp(&w.expires_at),
            ]
        })
        .collect();
    table(
        &[
            "ID", "PROJECT", "OWNER", "SITE", "STATE", "DATASETS", "EXPIRES",
        ],
        &rows,
    )
}

/// One workspace, a field per line.
pub fn workspace_detail(w: &Workspace) -> String {
    let r = &w.resources;
    let mut fields = vec![
        ("id", w.id.clone()),
        ("project", w.project.to_string()),
        ("owner", w.owner.clone()),
        ("template", w.template.to_string()),
        ("site", w.site.to_string()),
        ("state", w.state.to_string()),
    ];
    if let Some(m) = &w.message {
        fields.push(("message", m.clone()));
    }
    fields.extend([
        ("datasets", join(&w.datasets)),
        (
            "resources",
            format!("{} cpu, {} MiB, {} gpu", r.cpus, r.memory_mib, r.gpus),
        ),
        ("created", timestamp(&w.created_at)),
        ("expires", timestamp(&w.expires_at)),
        ("updated", timestamp(&w.updated_at)),
    ]);
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    fields
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

/// Sites as a table: name, backend, datasets, CPUs and memory (allocated/offered), workspaces,
/// last contact.
pub fn sites_table(list: &[Site]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let ids: Vec<String> = s.datasets.iter().map(|d| d.id.to_string()).collect();
            vec![
                s.name.to_string(),
                s.backend.clone(),
                join(&ids),
                format!("{}/{}", s.allocated.cpus, s.capacity.cpus),
                format!("{}/{}", s.allocated.memory_mib, s.capacity.memory_mib),
                format!("{}/{}", s.allocated.gpus, s.capacity.gpus),
                s.workspaces.to_string(),
                match s.start_timeout_s {
                    0 => "none".to_owned(),
                    t => format!("{t}s"),
                },
                timestamp(&s.last_contact),
            ]
        })
        .collect();
    table(
        &[
            "SITE",
            "BACKEND",
            "DATASETS",
            "CPUS",
            "MEMORY_MIB",
            "GPUS",
            "WORKSPACES",
            "START_TIMEOUT",
            "LAST_CONTACT",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use basho_core::{Ident, State};

    fn ws(id: &str, owner: &str, datasets: &[&str]) -> Workspace {
        Workspace {
            owner: owner.into(),
            datasets: datasets.iter().map(|d| Ident::parse(d).unwrap()).collect(),
            ..basho_test_util::workspace(id)
        }
    }

    #[test]
    fn columns_line_up() {
        let out = table(
            &["A", "LONGER", "C"],
            &[
                vec!["xxxx".into(), "y".into(), "z".into()],
                vec!["x".into(), "yyyyyyyy".into(), "zz".into()],
            ],
        );
        assert_eq!(
            out,
            "A     LONGER    C\nxxxx  y         z\nx     yyyyyyyy  zz\n"
        );
    }

    #[test]
    fn no_trailing_spaces_and_empty_tables_keep_headers() {
        let out = table(&["ID", "STATE"], &[]);
        assert_eq!(out, "ID  STATE\n");
        let out = workspaces_table(&[ws("ws-1", "alice", &["JGAD000101"])]);
        assert!(out.lines().all(|l| !l.ends_with(' ')), "{out}");
    }

    #[test]
    fn workspace_rows_show_every_column() {
        let out = workspaces_table(&[
            ws("ws-1", "alice", &["JGAD000101", "JGAD000102"]),
            ws("ws-22", "bob@example.org", &[]),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID     PROJECT  OWNER            SITE    STATE"));
        assert!(lines[1].contains("JGAD000101,JGAD000102"));
        assert!(lines[1].ends_with("2026-01-02 03:04:05Z"));
        assert!(
            lines[2].contains(" - "),
            "empty datasets show a dash: {}",
            lines[2]
        );
        // Every row starts its columns at the same offsets as the header.
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(&lines[1][col..col + 7], "running");
        assert_eq!(&lines[2][col..col + 7], "running");
    }

    #[test]
    fn detail_names_the_message_when_there_is_one() {
        let mut w = ws("ws-1", "alice", &["JGAD000101"]);
        assert!(!workspace_detail(&w).contains("message:"));
        w.state = State::Failed;
        w.message = Some("image not allowed".into());
        let out = workspace_detail(&w);
        assert!(out.contains("state:     failed\n"), "{out}");
        assert!(out.contains("message:   image not allowed\n"), "{out}");
        assert!(out.contains("resources: 1 cpu, 256 MiB, 0 gpu\n"), "{out}");
    }
}
