use chrono::TimeZone as _;

use super::*;

fn config(toml_text: &str) -> CapacityConfig {
    toml::from_str(toml_text).unwrap()
}

fn cap(cpus: u32, memory_mib: u64, gpus: u32) -> Capacity {
    Capacity {
        cpus,
        memory_mib,
        gpus,
    }
}

fn quiet(text: &str) -> Result<QuietHours, String> {
    QuietHours::try_from(text.to_owned())
}

#[test]
fn the_ceiling_is_the_share_rounded_down() {
    let c = config("cpus = 64\nmemory_mib = 262144\ngpus = 4\nmax_share = 0.25");
    assert_eq!(c.ceiling(), cap(16, 65536, 1));
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    let whole = config("cpus = 3\nmemory_mib = 1000");
    assert_eq!(whole.ceiling(), cap(3, 1000, 0));
    assert_eq!(whole.offer(Utc::now(), None).capacity, cap(3, 1000, 0));
}

#[test]
fn a_share_outside_zero_to_one_or_too_small_is_refused() {
    for share in ["0", "-0.5", "1.5", "nan"] {
        let c = config(&format!("cpus = 8\nmemory_mib = 1024\nmax_share = {share}"));
        let p = c.problems();
        assert!(
            p.iter()
                .any(|m| m.contains("max_share") && m.contains("(0, 1]")),
            "{share}: {p:?}"
        );
    }
    let c = config("cpus = 2\nmemory_mib = 1024\nmax_share = 0.25");
    let p = c.problems();
    assert!(p.iter().any(|m| m.contains("no whole cpu")), "{p:?}");
    let c = config("cpus = 8\nmemory_mib = 1024\ngpus = 2\nmax_share = 0.25");
    let p = c.problems();
    assert!(p.iter().any(|m| m.contains("no whole gpu")), "{p:?}");
    let c = config("cpus = 2\nmemory_mib = 1024\nutc_offset = \"Tokyo\"\nreport_every_s = 0");
    let p = c.problems();
    assert!(p.iter().any(|m| m.contains("utc_offset")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("report_every_s")), "{p:?}");
}

#[test]
fn quiet_hours_that_do_not_parse_are_refused_with_the_form_to_write() {
    for bad in [
        "",
        "9-17",
        "09:00",
        "09:00-09:00",
        "25:00-26:00",
        "09:60-10:00",
        "9:00-17:00",
        "someday 09:00-17:00",
        "mon-fri",
        "mon fri 09:00-17:00",
        "24:00-01:00",
    ] {
        let e = quiet(bad).unwrap_err();
        assert!(e.contains("HH:MM-HH:MM"), "{bad:?}: {e}");
    }
    let e =
        toml::from_str::<CapacityConfig>("cpus = 2\nmemory_mib = 1\nquiet_hours = [\"lunchtime\"]")
            .unwrap_err();
    assert!(e.to_string().contains("lunchtime"), "{e}");
}

#[test]
fn quiet_hours_cover_their_days_and_pass_midnight() {
    let jst = FixedOffset::east_opt(9 * 3600).unwrap();
    // 2026-12-07 is a Monday.
    let at = |d: u32, h: u32, m: u32| jst.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap();
    let work = quiet("mon-fri 09:00-18:00").unwrap();
    assert!(work.contains(&at(7, 9, 0)));
    assert!(work.contains(&at(11, 17, 59)));
    assert!(!work.contains(&at(7, 18, 0)));
    assert!(!work.contains(&at(7, 8, 59)));
    assert!(!work.contains(&at(12, 10, 0)), "Saturday is not quiet");
    let night = quiet("fri 22:00-06:00").unwrap();
    assert!(night.contains(&at(11, 23, 0)));
    assert!(
        night.contains(&at(12, 5, 59)),
        "Saturday morning belongs to Friday's night"
    );
    assert!(
        !night.contains(&at(7, 1, 0)),
        "Monday morning follows Sunday, not Friday"
    );
    let weekend = quiet("sat-sun 00:00-24:00").unwrap();
    assert!(weekend.contains(&at(13, 23, 59)));
    assert!(!weekend.contains(&at(14, 0, 0)));
    let wrap = quiet("sat-mon 00:00-01:00").unwrap();
    assert!(
        wrap.contains(&at(14, 0, 30)),
        "a day range may wrap the week"
    );
    assert_eq!(work.to_string(), "mon,tue,wed,thu,fri 09:00-18:00");
    assert_eq!(quiet("22:00-06:00").unwrap().to_string(), "22:00-06:00");
}

#[test]
fn quiet_hours_offer_nothing_and_say_so() {
    let c = config(
        "cpus = 8\nmemory_mib = 8192\nquiet_hours = [\"mon-fri 09:00-18:00\"]\n\
         utc_offset = \"+09:00\"",
    );
    // 01:00 UTC is 10:00 in Tokyo, on Monday 2026-12-07.
    let monday_ten = Utc.with_ymd_and_hms(2026, 12, 7, 1, 0, 0).unwrap();
    let o = c.offer(monday_ten, None);
    assert_eq!(o.capacity, Capacity::default());
    assert_eq!(o.ceiling, cap(8, 8192, 0));
    assert_eq!(
        o.note.as_deref(),
        Some("quiet hours mon,tue,wed,thu,fri 09:00-18:00 +09:00")
    );
    let monday_night = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
    let o = c.offer(monday_night, None);
    assert_eq!(o.capacity, cap(8, 8192, 0));
    assert_eq!(o.note, None);
}

#[test]
fn a_limit_of_the_site_s_scheduler_bounds_the_offer_and_says_so() {
    let c = config("cpus = 16\nmemory_mib = 65536\nmax_share = 0.5");
    let qos = "QOS basho-guest allows cpu=2 at once (GrpTRES)".to_owned();
    let limit = cap(2, u64::MAX, u32::MAX);
    let o = c
        .offer(Utc::now(), None)
        .within(Some(Ok((limit, qos.clone()))));
    assert_eq!(o.capacity, cap(2, 32768, 0));
    assert_eq!(o.note.as_deref(), Some(qos.as_str()));
    let loose = cap(100, u64::MAX, u32::MAX);
    let o = c
        .offer(Utc::now(), None)
        .within(Some(Ok((loose, qos.clone()))));
    assert_eq!(
        (o.capacity, o.note),
        (cap(8, 32768, 0), None),
        "a limit that does not bind"
    );
    let o = c
        .offer(Utc::now(), None)
        .within(Some(Err("sacctmgr: timed out".into())));
    assert_eq!(o.capacity, Capacity::default());
    assert!(o.note.unwrap().contains("sacctmgr: timed out"));
    assert_eq!(
        c.offer(Utc::now(), None).within(None).capacity,
        cap(8, 32768, 0)
    );
}

#[test]
fn only_idle_offers_what_the_site_leaves_within_the_share() {
    let c = config("cpus = 16\nmemory_mib = 65536\nmax_share = 0.5\nonly_idle = true");
    let load = SiteLoad {
        total: cap(16, 65536, 0),
        others: cap(12, 8192, 0),
    };
    let o = c.offer(Utc::now(), Some(Ok(load)));
    assert_eq!(
        o.capacity,
        cap(4, 32768, 0),
        "idle cpus bind, the share binds memory"
    );
    assert_eq!(
        o.note.as_deref(),
        Some("the site's own work holds 12 of 16 cpus, 8192 of 65536 MiB")
    );
    let quiet_site = SiteLoad {
        total: cap(16, 65536, 0),
        others: Capacity::default(),
    };
    let o = c.offer(Utc::now(), Some(Ok(quiet_site)));
    assert_eq!(o.capacity, cap(8, 32768, 0));
    assert_eq!(o.note, None);
    let busy = SiteLoad {
        total: cap(16, 65536, 0),
        others: cap(20, 70000, 0),
    };
    assert_eq!(
        c.offer(Utc::now(), Some(Ok(busy))).capacity,
        Capacity::default()
    );
    let o = c.offer(Utc::now(), Some(Err("sinfo: timed out".into())));
    assert_eq!(
        o.capacity,
        Capacity::default(),
        "an unread load offers nothing"
    );
    assert!(o.note.unwrap().contains("sinfo: timed out"));
}
