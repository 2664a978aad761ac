//! `sila-sqlite audit`: the workspace's audit trail, one line per record or JSON.

use crate::outln;
use crate::versions::iso_utc;
use sila_sqlite::{AuditQuery, Error, ErrorCode, Result, Workspace};

/// The longest `--since` duration: ten years.
const SINCE_SECS_MAX: u64 = 10 * 366 * 86_400;

/// `--since`: unix milliseconds (digits only), or a duration before now: a number and one
/// of `s`, `m`, `h`, `d` (`90m`, `7d`).
pub fn parse_since(text: &str, now_ms: u64) -> Result<u64> {
    let bad = |why: &str| {
        Error::new(
            ErrorCode::InvalidArgument,
            format!("--since {text:?}: {why}; give unix milliseconds or a duration such as 90m, 12h or 7d"),
        )
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad("too large"));
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad("no unit")),
    };
    let n: u64 = number.parse().map_err(|_| bad("not a number"))?;
    let secs = n
        .checked_mul(secs_per)
        .filter(|s| *s <= SINCE_SECS_MAX)
        .ok_or_else(|| bad("longer than ten years"))?;
    Ok(now_ms.saturating_sub(secs * 1000))
}

pub fn run(ws: &Workspace, app: Option<String>, since: Option<&str>, limit: usize, json: bool) -> Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let since_ms = since.map(|s| parse_since(s, now_ms)).transpose()?;
    let read = ws.audit(&AuditQuery { app, since_ms, limit })?;
    if json {
        let records: Vec<serde_json::Value> = read.records.iter().map(|r| r.to_json()).collect();
        return outln!("{}", serde_json::json!({ "records": records, "damaged": read.damaged }));
    }
    for r in &read.records {
        let outcome = r.error.as_deref().map_or_else(|| "ok".to_string(), |c| format!("error[{c}]"));
        let target = match (r.app.as_str(), r.db.as_str()) {
            ("", _) => "-".to_string(),
            (app, "") => app.to_string(),
            (app, db) => format!("{app}/{db}"),
        };
        outln!(
            "{} {} {} {target} {outcome} {}ms {}",
            r.seq,
            iso_utc(r.at_ms),
            r.op,
            r.duration_ms,
            r.detail
        )?;
    }
    if read.damaged > 0 {
        outln!("({} damaged line(s) skipped: they failed their checksum)", read.damaged)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_milliseconds_or_a_duration_before_now() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("1700000000000", now).unwrap(), 1_700_000_000_000);
        assert_eq!(parse_since("90m", now).unwrap(), now - 90 * 60_000);
        assert_eq!(parse_since("7d", now).unwrap(), now - 7 * 86_400_000);
        assert_eq!(parse_since("30s", now).unwrap(), now - 30_000);
        assert_eq!(parse_since(&format!("{}s", SINCE_SECS_MAX), now).unwrap(), now - SINCE_SECS_MAX * 1000);
        for bad in
            ["", "h", "7w", "-1d", "1.5h", "99999999999999999999999", &format!("{}s", SINCE_SECS_MAX + 1)]
        {
            assert_eq!(parse_since(bad, now).unwrap_err().code(), ErrorCode::InvalidArgument, "{bad:?}");
        }
    }
}
