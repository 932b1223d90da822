//! The filter's values as people write them, parsed for both front ends (`clipkit search
//! --after 2023-06-01`, `GET /v1/search?after=2023-06-01`), so the command line and the HTTP
//! API accept exactly the same forms. Errors say what the value should look like, never which
//! flag or field it came from: each front end adds that.

/// A date or date and time, as seconds on the photo's own clock (no time zone: EXIF dates
/// have none) at the start of the period it names: `2023`, `2023-06`, `2023-06-01`,
/// `2023-06-01T14:30` or `2023-06-01T14:30:15` (a space may replace the `T`).
pub fn date(s: &str) -> Result<i64, String> {
    const FORMS: &str = "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]";
    let bad = || format!("must be a date: {FORMS}");
    let s = s.trim();
    let (day, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let number = |part: &str, digits: usize| -> Result<i64, String> {
        if part.len() != digits || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let parts: Vec<&str> = day.split('-').collect();
    if parts.is_empty() || parts.len() > 3 || (time.is_some() && parts.len() != 3) {
        return Err(bad());
    }
    let year = number(parts[0], 4)?;
    let month = parts.get(1).map(|m| number(m, 2)).transpose()?.unwrap_or(1);
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is not 01 to 12"));
    }
    let day_of_month = parts.get(2).map(|d| number(d, 2)).transpose()?.unwrap_or(1);
    let days = days_in_month(year, month);
    if !(1..=days).contains(&day_of_month) {
        return Err(format!("{year}-{month:02} has no day {day_of_month}"));
    }
    let mut seconds = days_from_civil(year, month, day_of_month) * 86_400;
    if let Some(time) = time {
        let fields: Vec<&str> = time.split(':').collect();
        if !(2..=3).contains(&fields.len()) {
            return Err(bad());
        }
        let (h, m) = (number(fields[0], 2)?, number(fields[1], 2)?);
        let sec = fields
            .get(2)
            .map(|x| number(x, 2))
            .transpose()?
            .unwrap_or(0);
        if h > 23 || m > 59 || sec > 59 {
            return Err(format!("{time} is not a time of day (00:00 to 23:59:59)"));
        }
        seconds += h * 3600 + m * 60 + sec;
    }
    Ok(seconds)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `LAT,LON,RADIUS`: degrees in -90..=90 and -180..=180, and a distance above zero with its
/// unit, `m`, `km` or `mi` (`48.85,2.35,20km`).
pub fn near(s: &str) -> Result<crate::filter::Near, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [lat, lon, radius] = parts[..] else {
        return Err("must be LAT,LON,RADIUS, e.g. 48.85,2.35,20km".into());
    };
    let latitude = match lat.parse::<f64>() {
        Ok(v) if (-90.0..=90.0).contains(&v) => v,
        _ => return Err(format!("latitude `{lat}` must be a number from -90 to 90")),
    };
    let longitude = match lon.parse::<f64>() {
        Ok(v) if (-180.0..=180.0).contains(&v) => v,
        _ => {
            return Err(format!(
                "longitude `{lon}` must be a number from -180 to 180"
            ))
        }
    };
    let lower = radius.to_ascii_lowercase();
    let (number, metres) = if let Some(n) = lower.strip_suffix("km") {
        (n, 1000.0)
    } else if let Some(n) = lower.strip_suffix("mi") {
        (n, 1609.344)
    } else if let Some(n) = lower.strip_suffix('m') {
        (n, 1.0)
    } else {
        return Err(format!(
            "radius `{radius}` needs a unit: m, km or mi (e.g. 20km)"
        ));
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(crate::filter::Near {
            latitude,
            longitude,
            radius_m: v * metres,
        }),
        _ => Err(format!("radius `{radius}` must be a distance above 0")),
    }
}

/// A file size in bytes: a whole or decimal number with an optional unit, `B`, `KB`, `MB`,
/// `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), any case.
pub fn size(s: &str) -> Result<u64, String> {
    let bad = || "must be a size such as 2048, 200KB, 1.5MB or 4MiB".to_string();
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * factor < u64::MAX as f64 => {
            Ok((v * factor).round() as u64)
        }
        _ => Err(bad()),
    }
}

/// A file type: an extension, with or without its dot, letters and digits only (`jpg`).
pub fn file_type(s: &str) -> Result<String, String> {
    let t = s.trim().trim_start_matches('.').to_ascii_lowercase();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("must be a file extension such as jpg, png or heic".into());
    }
    Ok(t)
}

/// Seconds on a clock without a time zone (a photo's own) as `YYYY-MM-DDTHH:MM:SS`, the
/// inverse of the `--after`/`--before` parser (H. Hinnant's `civil_from_days`).
pub fn naive_date(seconds: i64) -> String {
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Restrictions that contradict each other, so that no file could match: `Err((field,
/// problem))` with the field named as the filter names it (`after`, `min_size`).
pub fn check(filter: &crate::filter::Filter) -> Result<(), (&'static str, String)> {
    if let (Some(after), Some(before)) = (filter.after, filter.before) {
        if after >= before {
            return Err((
                "after",
                format!(
                    "{} is not earlier than the end of the range ({}): nothing can match",
                    naive_date(after),
                    naive_date(before)
                ),
            ));
        }
    }
    if let (Some(min), Some(max)) = (filter.min_size, filter.max_size) {
        if min > max {
            return Err((
                "min_size",
                format!("{min} bytes is more than the largest size allowed ({max} bytes)"),
            ));
        }
    }
    if filter
        .camera
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        return Err(("camera", "needs some text to look for".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_start_their_period() {
        assert_eq!(date("1970-01-01"), Ok(0));
        assert_eq!(date("1970"), Ok(0));
        assert_eq!(date("2023-09-01"), Ok(1_693_526_400));
        assert_eq!(date("2023-09"), date("2023-09-01"));
        assert_eq!(date("2023-09-01T01:02:03"), Ok(1_693_526_400 + 3723));
        assert_eq!(date("2023-09-01 01:02"), Ok(1_693_526_400 + 3720));
        assert_eq!(date("2024-02-29"), Ok(1_709_164_800));
        assert_eq!(date("1969-12-31"), Ok(-86_400));
        for bad in [
            "",
            "2023-13-01",
            "2023-02-29",
            "2023-9-1",
            "23-09-01",
            "2023-09-01T25:00",
            "2023-09-01T12",
            "2023-09T12:00",
            "yesterday",
            "2023/09/01",
        ] {
            assert!(date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn places_sizes_and_types() {
        let n = near("48.85, 2.35, 20km").unwrap();
        assert_eq!(
            (n.latitude, n.longitude, n.radius_m),
            (48.85, 2.35, 20_000.0)
        );
        assert_eq!(near("0,0,1mi").unwrap().radius_m, 1609.344);
        assert_eq!(near("0,0,250m").unwrap().radius_m, 250.0);
        for bad in [
            "91,0,1km",
            "0,181,1km",
            "0,0,20",
            "0,0,-1km",
            "0,0,0km",
            "0,0",
            "a,b,1km",
        ] {
            assert!(near(bad).is_err(), "{bad}");
        }
        assert_eq!(size("2048"), Ok(2048));
        assert_eq!(size("200KB"), Ok(200_000));
        assert_eq!(size("1.5mb"), Ok(1_500_000));
        assert_eq!(size("4MiB"), Ok(4 << 20));
        for bad in ["", "-1", "5XB", "MB", "1e3"] {
            assert!(size(bad).is_err(), "{bad}");
        }
        assert_eq!(file_type(".JPG"), Ok("jpg".into()));
        assert!(file_type("j/g").is_err());
        assert!(file_type("").is_err());
    }

    #[test]
    fn dates_round_trip() {
        for s in [
            "1970-01-01T00:00:00",
            "1969-12-31T23:59:59",
            "2000-02-29T12:00:00",
            "2023-09-01T01:02:03",
            "2100-03-01T00:00:00",
        ] {
            assert_eq!(naive_date(date(s).unwrap()), s);
        }
    }
}
