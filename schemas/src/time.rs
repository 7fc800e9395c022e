//! Instants as people write them: one parser for every command that reads a time
//! (`graphscaler twin bucket`'s timestamps, `graphscaler actions tail --from time:`).

/// Seconds since the Unix epoch of a timestamp, whole and fraction: a number of seconds, or a
/// UTC date and time `YYYY-MM-DD HH:MM:SS[.frac]` (`T` between them, a trailing `Z`).
pub fn parse_instant(s: &str) -> Option<(i64, f64)> {
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then(|| (v.floor() as i64, v - v.floor()));
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once([' ', 'T'])?;
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    let ([y, m, day], [h, mi, sec]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    let (y, m, day): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, day.parse().ok()?);
    let (h, mi): (i64, i64) = (h.parse().ok()?, mi.parse().ok()?);
    let (whole_s, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let whole_s: i64 = whole_s.parse().ok()?;
    let frac: f64 = if frac.is_empty() {
        0.0
    } else if frac.bytes().all(|b| b.is_ascii_digit()) {
        format!("0.{frac}").parse().ok()?
    } else {
        return None;
    };
    if !((1..=12).contains(&m)
        && (1..=31).contains(&day)
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        && (0..61).contains(&whole_s))
    {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm, proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3_600 + mi * 60 + whole_s, frac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_utc_dates() {
        assert_eq!(parse_instant("1700000000.25"), Some((1_700_000_000, 0.25)));
        assert_eq!(
            parse_instant("2023-11-14T22:13:20Z"),
            Some((1_700_000_000, 0.0))
        );
        assert_eq!(
            parse_instant("2023-11-14 22:13:20.5"),
            Some((1_700_000_000, 0.5))
        );
        assert_eq!(parse_instant("1970-01-01T00:00:00Z"), Some((0, 0.0)));
        for bad in [
            "yesterday",
            "2023-13-01T00:00:00Z",
            "2023-11-14T25:00:00",
            "2023-11-14",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }
}
