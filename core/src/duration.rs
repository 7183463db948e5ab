//! Human durations on the command line: `3600` (seconds), `90s`, `15m`, `2h`, `1d`, `1h30m`.

use std::time::Duration;

/// Parses a duration: a bare number of seconds, or one or more `<number><unit>` parts with units
/// `d`, `h`, `m`, `s` (`1h30m`). Zero is allowed; the caller decides whether it makes sense.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; write seconds (3600) or a unit (90s, 15m, 2h, 1d)".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => {
                return Err(format!(
                    "duration {s:?} has unit {c:?}; use d, h, m or s (2h, 1h30m, 90s)"
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("duration {s:?}: a number must come before {c:?}"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "duration {s:?} ends in a number without a unit; write {s}s or only seconds"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Formats seconds the way [`parse_duration`] reads them back (`1h30m`, `45s`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
    }

    #[test]
    fn units_and_combinations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d2h3m4s"), Ok(Duration::from_secs(93_784)));
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("2x").unwrap_err().contains("unit 'x'"));
        assert!(
            parse_duration("h")
                .unwrap_err()
                .contains("number must come")
        );
        assert!(
            parse_duration("1h30")
                .unwrap_err()
                .contains("without a unit")
        );
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(
            parse_duration("999999999999999d")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn format_round_trips() {
        for secs in [0, 1, 59, 60, 61, 3600, 5400, 86_400, 93_784] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{secs}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
