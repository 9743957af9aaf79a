//! Server-version ranges as postgres_exporter writes them (`runonserver: ">=10.0.0 <12.0.0"`, `||` for
//! alternatives), so that existing query files keep their version gating. Versions may be abbreviated
//! (`17`, `9.6`); missing parts are zero.

pub type Version = (u64, u64, u64);

/// The semantic version postgres_exporter derives from `server_version_num`: `150004` is 15.4.0 (major
/// versions since 10 have two parts), `90624` is 9.6.24.
pub fn from_server_version_num(num: u64) -> Version {
    if num >= 100_000 {
        (num / 10_000, num % 10_000, 0)
    } else {
        (num / 10_000, (num / 100) % 100, num % 100)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// A disjunction of conjunctions of comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange {
    alternatives: Vec<Vec<(Op, Version)>>,
}

impl VersionRange {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut alternatives = Vec::new();
        for alt in text.split("||") {
            let mut all = Vec::new();
            for term in alt.split_whitespace() {
                all.push(parse_term(term)?);
            }
            if all.is_empty() {
                return Err(format!("{text:?} has an empty alternative"));
            }
            alternatives.push(all);
        }
        Ok(Self { alternatives })
    }

    pub fn matches(&self, v: Version) -> bool {
        self.alternatives.iter().any(|all| {
            all.iter().all(|(op, w)| match op {
                Op::Lt => v < *w,
                Op::Le => v <= *w,
                Op::Gt => v > *w,
                Op::Ge => v >= *w,
                Op::Eq => v == *w,
                Op::Ne => v != *w,
            })
        })
    }
}

fn parse_term(term: &str) -> Result<(Op, Version), String> {
    let (op, rest) = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
    ]
    .iter()
    .find_map(|(p, op)| term.strip_prefix(p).map(|r| (*op, r)))
    .unwrap_or((Op::Eq, term));
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return Err(format!("{term:?} is not a version comparison"));
    }
    let mut v = [0u64; 3];
    for (slot, part) in v.iter_mut().zip(&parts) {
        *slot = part
            .parse()
            .map_err(|_| format!("{term:?} is not a version comparison"))?;
    }
    Ok((op, (v[0], v[1], v[2])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_version_num_conversion() {
        assert_eq!(from_server_version_num(150004), (15, 4, 0));
        assert_eq!(from_server_version_num(170000), (17, 0, 0));
        assert_eq!(from_server_version_num(90624), (9, 6, 24));
    }

    #[test]
    fn ranges() {
        let r = VersionRange::parse(">=10.0.0 <17.0.0").unwrap();
        assert!(r.matches((16, 4, 0)));
        assert!(r.matches((10, 0, 0)));
        assert!(!r.matches((17, 0, 0)));
        assert!(!r.matches((9, 6, 24)));
        let r = VersionRange::parse("<10 || >=17").unwrap();
        assert!(r.matches((9, 6, 0)) && r.matches((17, 2, 0)) && !r.matches((15, 0, 0)));
        assert!(VersionRange::parse("15.4").unwrap().matches((15, 4, 0)));
        assert!(VersionRange::parse(">=x").is_err());
        assert!(VersionRange::parse(">=1 ||").is_err());
        assert!(VersionRange::parse("1.2.3.4").is_err());
    }
}
