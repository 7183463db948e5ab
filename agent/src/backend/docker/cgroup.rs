//! A container's CPU time and memory read straight from its cgroup when the agent runs on the
//! engine's host. The engine's own stats call waits out a full collection cycle (about a
//! second on 20.10, which ignores `one-shot`), and the last sample taken before a stop would
//! hold the stop for that long; the cgroup answers in microseconds with the same counters the
//! engine reports (`cpuacct.usage` or `cpu.stat usage_usec`, and `memory.usage_in_bytes` or
//! `memory.current`). Anything unexpected answers `None` and the engine is asked instead.

use std::path::{Path, PathBuf};

/// Where the cgroup hierarchies are mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// CPU seconds and memory bytes of the cgroup that `pid` is in, if that cgroup is the container
/// `container_id`'s (its path names the ID, as both of Docker's cgroup drivers do) and the
/// agent can read it.
pub(super) fn usage(pid: i64, container_id: &str) -> Option<(f64, u64)> {
    if pid <= 0 || container_id.len() < 12 {
        return None;
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let paths = Paths::parse(&table, Path::new(ROOT), container_id)?;
    let cpu_seconds = match &paths.cpuacct {
        Some(dir) => read_number(&dir.join("cpuacct.usage"))? as f64 / 1e9,
        None => cpu_stat_usec(&paths.unified.join("cpu.stat"))? as f64 / 1e6,
    };
    let memory_bytes = match &paths.memory {
        Some(dir) => read_number(&dir.join("memory.usage_in_bytes"))?,
        None => read_number(&paths.unified.join("memory.current"))?,
    };
    Some((cpu_seconds, memory_bytes))
}

/// The directories a `/proc/<pid>/cgroup` table points at under `root`.
#[derive(Debug, PartialEq, Eq)]
struct Paths {
    /// cgroup v1's `cpuacct` controller, when the host mounts v1.
    cpuacct: Option<PathBuf>,
    /// cgroup v1's `memory` controller.
    memory: Option<PathBuf>,
    /// The v2 (unified) group, used where no v1 controller is named.
    unified: PathBuf,
}

impl Paths {
    fn parse(table: &str, root: &Path, container_id: &str) -> Option<Paths> {
        let mut cpuacct = None;
        let mut memory = None;
        let mut unified = None;
        for line in table.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if !path.contains(container_id) || path.split('/').any(|c| c == "..") {
                continue;
            }
            let rel = path.trim_start_matches('/');
            let names: Vec<&str> = controllers.split(',').collect();
            if controllers.is_empty() {
                unified = Some(root.join(rel));
            } else if names.contains(&"cpuacct") {
                cpuacct = Some(root.join(controllers).join(rel));
            } else if names.contains(&"memory") {
                memory = Some(root.join(controllers).join(rel));
            }
        }
        let v1 = cpuacct.is_some() && memory.is_some();
        if v1 {
            // A v1 host may still list a v2 line: the v1 controllers hold the counters.
            return Some(Paths {
                cpuacct,
                memory,
                unified: unified.unwrap_or_else(|| root.to_path_buf()),
            });
        }
        Some(Paths {
            cpuacct: None,
            memory: None,
            unified: unified?,
        })
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn cpu_stat_usec(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "26247245296cc3d1dd39deb00a2bb484000845ceff9a4bea9f983b9e24852977";

    #[test]
    fn a_v1_table_points_at_the_cpuacct_and_memory_controllers() {
        let table = format!(
            "9:name=systemd:/docker/{ID}\n4:memory:/docker/{ID}\n2:cpu,cpuacct:/docker/{ID}\n0::/docker/{ID}\n"
        );
        let p = Paths::parse(&table, Path::new("/r"), ID).unwrap();
        assert_eq!(
            p.cpuacct,
            Some(PathBuf::from(format!("/r/cpu,cpuacct/docker/{ID}")))
        );
        assert_eq!(
            p.memory,
            Some(PathBuf::from(format!("/r/memory/docker/{ID}")))
        );
    }

    #[test]
    fn a_v2_table_points_at_the_unified_group() {
        let table = format!("0::/system.slice/docker-{ID}.scope\n");
        let p = Paths::parse(&table, Path::new("/r"), ID).unwrap();
        assert_eq!(p.cpuacct, None);
        assert_eq!(
            p.unified,
            PathBuf::from(format!("/r/system.slice/docker-{ID}.scope"))
        );
    }

    #[test]
    fn a_group_that_is_not_the_containers_is_not_read() {
        // What a process in its own cgroup namespace, or a reused pid, shows.
        assert_eq!(Paths::parse("0::/\n", Path::new("/r"), ID), None);
        let other = "0::/docker/ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\n";
        assert_eq!(Paths::parse(other, Path::new("/r"), ID), None);
        let escape = format!("0::/docker/{ID}/../../etc\n");
        assert_eq!(Paths::parse(&escape, Path::new("/r"), ID), None);
    }

    #[test]
    fn counters_are_read_from_the_files_the_engine_reads() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("g");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("cpu.stat"), "usage_usec 2500000\nuser_usec 1\n").unwrap();
        std::fs::write(group.join("memory.current"), "4096\n").unwrap();
        assert_eq!(cpu_stat_usec(&group.join("cpu.stat")), Some(2_500_000));
        assert_eq!(read_number(&group.join("memory.current")), Some(4096));
        assert_eq!(read_number(&group.join("absent")), None);
    }

    #[test]
    fn a_process_that_is_not_there_answers_none() {
        assert_eq!(usage(0, ID), None);
        assert_eq!(usage(i64::from(i32::MAX), ID), None);
    }
}
