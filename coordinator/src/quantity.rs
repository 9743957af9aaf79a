//! Just enough Kubernetes quantity arithmetic to compare requests, limits
//! and configured minimums/maximums the way upstream does.

/// Value of a quantity in base units (cores, bytes); `None` if unparseable.
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(num) = s.strip_suffix(suffix) {
            return number(num).map(|n| n * factor);
        }
    }
    if let Some(num) = s.strip_suffix('E') {
        return number(num).map(|n| n * 1e18);
    }
    number(s)
}

fn number(s: &str) -> Option<f64> {
    if s.is_empty() || s.starts_with('+') {
        return None;
    }
    // Accepts decimals and an `e<exp>` exponent (`1e3`), as quantities do.
    let (mantissa, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (s, 0),
    };
    let m: f64 = mantissa.parse().ok()?;
    (m >= 0.0).then(|| m * 10f64.powi(exp))
}

/// `a < b`, treating an unset quantity as zero like upstream's `Quantity{}`.
pub fn less(a: Option<&str>, b: &str) -> bool {
    let a = a.and_then(parse).unwrap_or(0.0);
    parse(b).is_some_and(|b| a < b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("1"), Some(1.0));
        assert_eq!(parse("1Gi"), Some(1_073_741_824.0));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("ten"), None);
        assert!(less(Some("300Mi"), "750Mi"));
        assert!(!less(Some("8"), "8000m"));
        assert!(less(None, "250m"));
    }
}
