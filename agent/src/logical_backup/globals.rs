//! Applying `pg_dumpall` globals to a cluster that already has roles of its own.
//!
//! A target cluster always has roles (its superuser, and in a Spilo-style cluster `admin`, `standby`,
//! `robot_zmon`, …) whose passwords the operator keeps in Secrets. Replaying `ALTER ROLE postgres WITH …
//! PASSWORD '…'` from another cluster would lock the operator out, so the `CREATE ROLE`/`ALTER ROLE`
//! lines of roles that already exist are left out: existing roles stay exactly as they are, missing ones
//! are created with their attributes and passwords, and memberships (`GRANT … TO …`) are added for all.
//!
//! pg_dumpall writes each of those statements on one line, before the first `\connect` (after which a
//! full dump's database contents start, where a matching line could be table data and is never touched).

use std::collections::BTreeSet;

/// The role a `CREATE ROLE x;`, `ALTER ROLE x WITH …` or `ALTER ROLE x SET …`/`IN DATABASE …` line is
/// about; `None` for every other line.
pub fn role_of(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("CREATE ROLE ")
        .or_else(|| line.strip_prefix("ALTER ROLE "))?;
    let (name, after) = if let Some(quoted) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.char_indices();
        loop {
            let (i, c) = chars.next()?;
            if c == '"' {
                if quoted[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                } else {
                    break (name, &quoted[i + 1..]);
                }
            } else {
                name.push(c);
            }
        }
    } else {
        let end = rest.find([' ', ';']).unwrap_or(rest.len());
        (rest[..end].to_string(), &rest[end..])
    };
    let statement_goes_on = after.starts_with(';')
        || after.starts_with(" WITH ")
        || after.starts_with(" SET ")
        || after.starts_with(" IN DATABASE ");
    (statement_goes_on && !name.is_empty()).then_some(name)
}

/// Filters a globals script line by line, remembering which existing roles it left alone.
#[derive(Debug)]
pub struct Filter {
    existing: BTreeSet<String>,
    in_globals: bool,
    pub kept: BTreeSet<String>,
}

impl Filter {
    pub fn new(existing: BTreeSet<String>) -> Self {
        Filter {
            existing,
            in_globals: true,
            kept: BTreeSet::new(),
        }
    }

    /// Whether to pass `line` on to psql.
    pub fn keep(&mut self, line: &str) -> bool {
        if !self.in_globals {
            return true;
        }
        if line.starts_with("\\connect") {
            self.in_globals = false;
            return true;
        }
        match role_of(line.trim_end()) {
            Some(role) if self.existing.contains(&role) => {
                self.kept.insert(role);
                false
            }
            _ => true,
        }
    }
}

/// psql's `ERROR:` lines from its stderr, split into what a cluster with its own objects always answers
/// to a full dump (`already exists`) and the rest.
pub fn errors(stderr: &str) -> (usize, Vec<String>) {
    let mut benign = 0;
    let mut other = Vec::new();
    for line in stderr.lines().filter(|l| l.contains("ERROR:")) {
        if line.contains("already exists") {
            benign += 1;
        } else {
            other.push(line.trim().to_string());
        }
    }
    (benign, other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_lines_as_pg_dumpall_writes_them() {
        assert_eq!(role_of("CREATE ROLE admin;").as_deref(), Some("admin"));
        assert_eq!(
            role_of("ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:x';").as_deref(),
            Some("postgres")
        );
        assert_eq!(
            role_of(r#"CREATE ROLE "app ""x"" user";"#).as_deref(),
            Some(r#"app "x" user"#)
        );
        assert_eq!(
            role_of(r#"ALTER ROLE "Mixed" SET search_path TO 'a';"#).as_deref(),
            Some("Mixed")
        );
        assert_eq!(
            role_of("ALTER ROLE app IN DATABASE d SET work_mem TO '1MB';").as_deref(),
            Some("app")
        );
        for other in [
            "GRANT admin TO app GRANTED BY postgres;",
            "COMMENT ON ROLE app IS 'x';",
            "CREATE ROLE",
            r#"CREATE ROLE "unterminated;"#,
            "ALTER ROLE app RENAME TO b;",
        ] {
            assert_eq!(role_of(other), None, "{other:?}");
        }
    }

    #[test]
    fn existing_roles_are_left_alone_until_the_first_connect() {
        let mut f = Filter::new(["postgres".to_string()].into());
        let script = [
            "CREATE ROLE app;",
            "ALTER ROLE app WITH LOGIN PASSWORD 'x';",
            "CREATE ROLE postgres;",
            "ALTER ROLE postgres WITH SUPERUSER PASSWORD 'y';",
            "GRANT app TO postgres GRANTED BY postgres;",
            "\\connect template1",
            "ALTER ROLE postgres WITH SUPERUSER PASSWORD 'y';",
        ];
        let kept: Vec<&str> = script.into_iter().filter(|l| f.keep(l)).collect();
        assert_eq!(
            kept,
            [
                "CREATE ROLE app;",
                "ALTER ROLE app WITH LOGIN PASSWORD 'x';",
                "GRANT app TO postgres GRANTED BY postgres;",
                "\\connect template1",
                "ALTER ROLE postgres WITH SUPERUSER PASSWORD 'y';",
            ]
        );
        assert_eq!(f.kept, ["postgres".to_string()].into());
    }

    #[test]
    fn psql_errors_are_sorted() {
        let err = "psql:<stdin>:10: ERROR:  schema \"user_management\" already exists\n\
                   psql:<stdin>:20: ERROR:  relation \"t\" does not exist\nNOTICE: x\n";
        let (benign, other) = errors(err);
        assert_eq!(benign, 1);
        assert_eq!(
            other,
            ["psql:<stdin>:20: ERROR:  relation \"t\" does not exist"]
        );
    }
}
