//! `[capacity]`: what basho may use at the site, and how that follows the site's own users. The
//! ceiling is the configured compute times `max_share`; with `only_idle` the agent also leaves
//! alone what the site's own work holds (read from the backend), and in quiet hours it offers
//! nothing new. The agent works the offer out every `report_every_s` and reports each change
//! (`PUT /v1/agent/capacity`); the orchestrator never places past it. Workspaces already
//! running are not stopped when the offer shrinks: the offer only bounds new placements.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use basho_core::Ident;
use basho_core::protocol::{Capacity, CapacityReport};
use chrono::{DateTime, Datelike as _, FixedOffset, Timelike as _, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::{Backend, SiteLoad};
use crate::client::Client;

/// How often the offer is worked out by default, seconds.
const DEFAULT_REPORT_EVERY_S: u64 = 10;

/// The `[capacity]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// CPU cores of the site basho's share is taken from.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// The most basho may use, as a share of the above, in (0, 1].
    #[serde(default = "one")]
    pub max_share: f64,
    /// Offer only what the site's own work leaves idle (the backend's view of its load).
    #[serde(default)]
    pub only_idle: bool,
    /// Spans in which basho takes nothing new: `"09:00-18:00"` every day, `"mon-fri
    /// 08:30-19:00"`, `"sat 00:00-24:00"`; a span may pass midnight (`"22:00-06:00"`).
    #[serde(default)]
    pub quiet_hours: Vec<QuietHours>,
    /// The zone quiet hours are written in, as an offset from UTC (`"+09:00"`).
    #[serde(default = "utc")]
    pub utc_offset: String,
    /// How often the offer is worked out, seconds.
    #[serde(default = "default_report_every_s")]
    pub report_every_s: u64,
}

fn one() -> f64 {
    1.0
}

fn utc() -> String {
    "+00:00".into()
}

fn default_report_every_s() -> u64 {
    DEFAULT_REPORT_EVERY_S
}

impl CapacityConfig {
    /// All of `c`, always: no share, no load, no quiet hours.
    pub fn fixed(c: Capacity) -> Self {
        Self {
            cpus: c.cpus,
            memory_mib: c.memory_mib,
            gpus: c.gpus,
            max_share: 1.0,
            only_idle: false,
            quiet_hours: Vec::new(),
            utc_offset: utc(),
            report_every_s: DEFAULT_REPORT_EVERY_S,
        }
    }

    /// Every compute figure of the site at the full share.
    pub fn total(&self) -> Capacity {
        Capacity {
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            gpus: self.gpus,
        }
    }

    /// The most basho may ever use: each figure times `max_share`, rounded down.
    pub fn ceiling(&self) -> Capacity {
        let share = self.max_share.clamp(0.0, 1.0);
        let scale = |n: f64| (n * share + 1e-9).floor();
        Capacity {
            cpus: scale(f64::from(self.cpus)) as u32,
            memory_mib: scale(self.memory_mib as f64) as u64,
            gpus: scale(f64::from(self.gpus)) as u32,
        }
    }

    fn offset(&self) -> Option<FixedOffset> {
        self.utc_offset
            .parse::<FixedOffset>()
            .ok()
            .or_else(|| (self.utc_offset == "Z").then(|| FixedOffset::east_opt(0))?)
    }

    /// What is wrong with the table, each saying what to write instead.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.cpus == 0 || self.memory_mib == 0 {
            p.push("capacity.cpus and capacity.memory_mib must be positive".into());
        }
        if !(self.max_share > 0.0 && self.max_share <= 1.0) {
            p.push(format!(
                "capacity.max_share is {}; write a share in (0, 1], such as 0.25",
                self.max_share
            ));
        } else if self.cpus > 0 && self.ceiling().cpus == 0 {
            p.push(format!(
                "capacity.max_share {} of {} cpus leaves basho no whole cpu; raise it to at least {}",
                self.max_share,
                self.cpus,
                1.0 / f64::from(self.cpus)
            ));
        }
        if self.gpus > 0 && self.ceiling().gpus == 0 && self.max_share > 0.0 {
            p.push(format!(
                "capacity.max_share {} of {} gpus leaves basho no whole gpu; raise it or set \
                 gpus = 0",
                self.max_share, self.gpus
            ));
        }
        if self.offset().is_none() {
            p.push(format!(
                "capacity.utc_offset {:?} is not an offset; write it like \"+09:00\"",
                self.utc_offset
            ));
        }
        if self.report_every_s == 0 || self.report_every_s > 3600 {
            p.push(format!(
                "capacity.report_every_s is {}; use 1 to 3600",
                self.report_every_s
            ));
        }
        p
    }

    /// What basho may use at `now`, given the site's load when `only_idle` asked for it (an
    /// error reading it offers nothing: the site's users come first).
    pub fn offer(&self, now: DateTime<Utc>, load: Option<Result<SiteLoad, String>>) -> Offer {
        let ceiling = self.ceiling();
        let offset = self
            .offset()
            .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero"));
        let local = now.with_timezone(&offset);
        if let Some(q) = self.quiet_hours.iter().find(|q| q.contains(&local)) {
            return Offer {
                capacity: Capacity::default(),
                ceiling,
                note: Some(format!("quiet hours {q} {}", self.utc_offset)),
            };
        }
        match load {
            Some(Ok(load)) => {
                let idle = load.idle();
                let capacity = Capacity {
                    cpus: ceiling.cpus.min(idle.cpus),
                    memory_mib: ceiling.memory_mib.min(idle.memory_mib),
                    gpus: ceiling.gpus.min(idle.gpus),
                };
                let note = (capacity != ceiling).then(|| load.describe());
                Offer {
                    capacity,
                    ceiling,
                    note,
                }
            }
            Some(Err(why)) => Offer {
                capacity: Capacity::default(),
                ceiling,
                note: Some(format!("the site's load cannot be read: {why}")),
            },
            None => Offer {
                capacity: ceiling,
                ceiling,
                note: None,
            },
        }
    }
}

/// What basho may use at the site now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Compute basho may hold now (its running workspaces included).
    pub capacity: Capacity,
    /// The most it may ever hold.
    pub ceiling: Capacity,
    /// Why `capacity` is below the ceiling.
    pub note: Option<String>,
}

impl Offer {
    /// Bounds the offer by a limit the site's scheduler puts on basho (Slurm's `GrpTRES` on
    /// its QOS); a limit that cannot be read offers nothing.
    pub fn within(mut self, limit: Option<Result<(Capacity, String), String>>) -> Offer {
        let (limit, why) = match limit {
            None => return self,
            Some(Ok(l)) => l,
            Some(Err(e)) => (
                Capacity::default(),
                format!("the site's limits on basho cannot be read: {e}"),
            ),
        };
        let bounded = Capacity {
            cpus: self.capacity.cpus.min(limit.cpus),
            memory_mib: self.capacity.memory_mib.min(limit.memory_mib),
            gpus: self.capacity.gpus.min(limit.gpus),
        };
        if bounded != self.capacity {
            self.capacity = bounded;
            self.note = Some(match self.note {
                Some(n) => format!("{n}; {why}"),
                None => why,
            });
        }
        self
    }
}

impl SiteLoad {
    /// What the site's own work leaves idle for basho.
    pub fn idle(&self) -> Capacity {
        Capacity {
            cpus: self.total.cpus.saturating_sub(self.others.cpus),
            memory_mib: self.total.memory_mib.saturating_sub(self.others.memory_mib),
            gpus: self.total.gpus.saturating_sub(self.others.gpus),
        }
    }

    /// `the site's own work holds 3 of 4 cpus, 2048 of 8192 MiB`, naming what it holds.
    pub fn describe(&self) -> String {
        let mut held = Vec::new();
        if self.others.cpus > 0 {
            held.push(format!("{} of {} cpus", self.others.cpus, self.total.cpus));
        }
        if self.others.memory_mib > 0 {
            held.push(format!(
                "{} of {} MiB",
                self.others.memory_mib, self.total.memory_mib
            ));
        }
        if self.others.gpus > 0 {
            held.push(format!("{} of {} gpus", self.others.gpus, self.total.gpus));
        }
        if held.is_empty() {
            return "the site's own work leaves too little idle".into();
        }
        format!("the site's own work holds {}", held.join(", "))
    }
}

/// One span of quiet hours: the days it applies to (Monday is bit 0) and minutes from midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuietHours {
    days: u8,
    start: u16,
    end: u16,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const EVERY_DAY: u8 = 0x7f;

impl QuietHours {
    /// Whether `t` (in the configured zone) falls in the span. A span passing midnight belongs
    /// to the day it starts on.
    pub fn contains<Tz: chrono::TimeZone>(&self, t: &DateTime<Tz>) -> bool {
        let minute = (t.hour() * 60 + t.minute()) as u16;
        let day = t.weekday().num_days_from_monday() as u8;
        let on = |d: u8| self.days & (1 << (d % 7)) != 0;
        if self.start < self.end {
            on(day) && (self.start..self.end).contains(&minute)
        } else {
            (on(day) && minute >= self.start) || (on((day + 6) % 7) && minute < self.end)
        }
    }
}

fn parse_minute(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

fn parse_day(s: &str) -> Option<u8> {
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(s))
        .map(|i| i as u8)
}

impl TryFrom<String> for QuietHours {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let bad = || {
            format!(
                "quiet hours {text:?} do not parse; write \"HH:MM-HH:MM\", optionally after days \
                 (\"mon-fri 09:00-18:00\", \"sat 00:00-24:00\")"
            )
        };
        let mut words = text.split_whitespace();
        let (days, span) = match (words.next(), words.next(), words.next()) {
            (Some(span), None, None) => (EVERY_DAY, span),
            (Some(days), Some(span), None) => {
                let days = match days.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (parse_day(a).ok_or_else(bad)?, parse_day(b).ok_or_else(bad)?);
                        let mut mask = 0u8;
                        let mut d = a;
                        loop {
                            mask |= 1 << d;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                        mask
                    }
                    None => 1 << parse_day(days).ok_or_else(bad)?,
                };
                (days, span)
            }
            _ => return Err(bad()),
        };
        let (start, end) = span.split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            parse_minute(start).ok_or_else(bad)?,
            parse_minute(end).ok_or_else(bad)?,
        );
        if start == end || start == 24 * 60 {
            return Err(bad());
        }
        Ok(Self { days, start, end })
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days != EVERY_DAY {
            let names: Vec<&str> = (0..7)
                .filter(|d| self.days & (1 << d) != 0)
                .map(|d| DAYS[d as usize])
                .collect();
            write!(f, "{} ", names.join(","))?;
        }
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

impl From<QuietHours> for String {
    fn from(q: QuietHours) -> String {
        q.to_string()
    }
}

/// Works the offer out now, reading the backend's load when `only_idle` asks for it, and the
/// limits its scheduler puts on basho.
pub async fn current(config: &CapacityConfig, backend: &dyn Backend) -> Offer {
    let load = if config.only_idle {
        Some(match backend.site_load().await {
            Ok(Some(load)) => Ok(load),
            Ok(None) => Err(format!("the {} backend cannot tell", backend.kind())),
            Err(e) => Err(e.message().to_owned()),
        })
    } else {
        None
    };
    let limit = match backend.site_limit().await {
        Ok(None) => None,
        Ok(Some(l)) => Some(Ok(l)),
        Err(e) => Some(Err(e.message().to_owned())),
    };
    config.offer(Utc::now(), load).within(limit)
}

/// Works the offer out every `report_every_s` and reports each change from `registered` (the
/// offer the first registration carried); the registration reads the latest from `offers`.
pub async fn report_loop(
    registered: Offer,
    config: CapacityConfig,
    site: Ident,
    backend: Arc<dyn Backend>,
    client: Client,
    offers: watch::Sender<Offer>,
    stop: CancellationToken,
) {
    let mut reported = Some(registered);
    let every = Duration::from_secs(config.report_every_s.max(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let offer = tokio::select! {
            () = stop.cancelled() => return,
            o = current(&config, backend.as_ref()) => o,
        };
        offers.send_if_modified(|o| {
            let changed = *o != offer;
            *o = offer.clone();
            changed
        });
        if reported.as_ref() == Some(&offer) {
            continue;
        }
        let report = CapacityReport {
            site: site.clone(),
            capacity: offer.capacity,
            note: offer.note.clone(),
        };
        match client.report_capacity(&report).await {
            Ok(()) => {
                info!(
                    cpus = offer.capacity.cpus,
                    memory_mib = offer.capacity.memory_mib,
                    gpus = offer.capacity.gpus,
                    note = offer.note.as_deref().unwrap_or(""),
                    "capacity reported"
                );
                reported = Some(offer);
            }
            // Not registered yet, or the orchestrator is away: the registration carries the
            // latest offer, and the next round tries again.
            Err(e) => warn!(error = %e, "capacity report not taken; trying again"),
        }
    }
}

#[cfg(test)]
mod tests;
