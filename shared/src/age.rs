//! Retention ages as Zalando's logical backup script takes them (`LOGICAL_BACKUP_S3_RETENTION_TIME`,
//! `logicalBackupRetention`, handed to `date -d "<value> ago"`): one parser for the coordinator, which
//! refuses a manifest whose age it cannot read, and the job program, which applies it.

/// An age in `date -d` terms: calendar months (and years, as 12 months) apart from a fixed number of
/// seconds, because a month is not a fixed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age {
    pub months: u32,
    pub seconds: i64,
}

/// Parses `"7 days"`, `"1 month"`, `"2 weeks 3 days"`, `"12 hours"` (also `"7 days ago"` and `"1day"`);
/// empty means no age limit. The error says what is accepted.
pub fn parse(text: &str) -> Result<Option<Age>, String> {
    let text = text.trim();
    let text = text.strip_suffix("ago").unwrap_or(text).trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || {
        format!(
            "{text:?} is not an age; use a number and a unit as `date -d` reads them, e.g. \"7 days\", \"2 weeks\", \"1 month\", \"12 hours\""
        )
    };
    // Split "7days" as "7 days" too: every number starts a new term.
    let mut tokens = Vec::new();
    for word in text.split_whitespace() {
        let split = word
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(word.len());
        let (num, unit) = word.split_at(split);
        tokens.extend([num, unit].into_iter().filter(|s| !s.is_empty()));
    }
    let mut age = Age {
        months: 0,
        seconds: 0,
    };
    let mut it = tokens.into_iter();
    while let Some(num) = it.next() {
        let n: u32 = num.parse().map_err(|_| bad())?;
        let unit = it.next().ok_or_else(bad)?.to_ascii_lowercase();
        let secs: i64 = match unit.trim_end_matches('s') {
            "sec" | "second" => 1,
            "min" | "minute" => 60,
            "hour" => 3600,
            "day" => 86_400,
            "week" => 7 * 86_400,
            "fortnight" => 14 * 86_400,
            "month" => {
                age.months += n;
                continue;
            }
            "year" => {
                age.months += 12 * n;
                continue;
            }
            _ => return Err(bad()),
        };
        age.seconds += secs * i64::from(n);
    }
    Ok(Some(age))
}
