//! YAML emitter for the Patroni configuration.
//!
//! Patroni loads `postgres.yml` with PyYAML, i.e. YAML 1.1, where an unquoted `on`, `yes`, `0644`, `12:30`,
//! `1_000` or `2026-11-01` is not a string. serde_yaml_ng emits all of those plain (it follows YAML 1.2), which
//! would turn `archive_mode: 'on'` into a boolean or a password `12:30` into the integer 750. This emitter covers
//! the JSON data model only (which is all the config is) and writes a string plain only when it cannot be read
//! as anything else under either YAML version; everything else is quoted. Keys are sorted like PyYAML's dump so
//! diffs against Spilo's output stay readable.

use serde_json::{Map, Number, Value};

pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0, false),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn write_mapping(out: &mut String, map: &Map<String, Value>, indent: usize, first_inline: bool) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 || !first_inline {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&string(key));
        out.push(':');
        write_value(out, &map[key], indent, indent + 2);
    }
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize, first_inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !first_inline {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => write_mapping(out, map, indent + 2, true),
            Value::Array(inner) if !inner.is_empty() => {
                write_sequence(out, inner, indent + 2, true)
            }
            other => {
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

/// Writes what follows `key:`. Sequences inside mappings are not indented further, as PyYAML does.
fn write_value(out: &mut String, value: &Value, seq_indent: usize, map_indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_mapping(out, map, map_indent, false);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(out, items, seq_indent, false);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// YAML 1.1 only reads a float if it has a dot, so `1e-7` (serde_json's spelling) would load as a string.
fn number(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => {
            let mut s = f.to_string();
            if !s.contains('.') {
                s.push_str(".0");
            }
            s
        }
        _ => n.to_string(),
    }
}

fn string(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else if s.chars().all(|c| (' '..='~').contains(&c)) {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        double_quoted(s)
    }
}

/// Conservative: a plain scalar starting with a letter, `_` or `/` can never resolve to a number, timestamp,
/// merge key or `=` in YAML 1.1 or 1.2; what remains are the boolean/null words and characters with syntax
/// meaning. A scalar starting with a digit is a string only if it has a character no numeric form allows (all
/// of YAML's number patterns are anchored and made of digits, `_.:+-eE`, and the `0x`/`0b`/`0o` prefixes) and
/// is not a date (`2026-11-01...`): `1800s` and `64MB` stay plain, `0644`, `12:30` and `1e3` are quoted.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let letter_start = first.is_ascii_alphabetic() || first == '_' || first == '/';
    let digit_start = first.is_ascii_digit()
        && s.chars()
            .any(|c| !matches!(c, '0'..='9' | '_' | '.' | ':' | '+' | '-' | 'e' | 'E'))
        && !["0x", "0X", "0b", "0B", "0o", "0O"]
            .iter()
            .any(|p| s.starts_with(p))
        && !(s.len() >= 5 && s[..4].bytes().all(|b| b.is_ascii_digit()) && s.as_bytes()[4] == b'-');
    if !(letter_start || digit_start) || s.ends_with(' ') {
        return false;
    }
    let reserved = ["true", "false", "yes", "no", "on", "off", "y", "n", "null"];
    if reserved.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    let bytes = s.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => true,
        b'_' | b'-' | b'.' | b'/' | b'%' | b'+' | b'=' | b'@' | b'(' | b')' | b'$' | b','
        | b' ' => true,
        b':' => bytes.get(i + 1).is_some_and(|&n| n != b' '),
        _ => false,
    })
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_layout_like_pyyaml() {
        let v = json!({
            "b": {"list": ["x", {"k": 1, "a": [1, 2]}, [3, 4]], "empty": {}, "none": []},
            "a": true,
            "f": 0.9,
            "m": null
        });
        let expected = "\
a: true
b:
  empty: {}
  list:
  - x
  - a:
    - 1
    - 2
    k: 1
  - - 3
    - 4
  none: []
f: 0.9
m: null
";
        assert_eq!(to_yaml(&v), expected);
    }

    #[test]
    fn quotes_everything_yaml11_would_retype() {
        for s in [
            "on",
            "off",
            "yes",
            "No",
            "Y",
            "null",
            "~",
            "",
            "0644",
            "15",
            "9.6",
            "2026-11-01T10:00:00+00:00",
            "2026-11-01 10:00:00",
            "0b11",
            "0o17",
            "1.5e+3",
            "1:30:00",
            "12:30",
            "1_000",
            "2026-11-01",
            "0x1F",
            ".inf",
            "=",
            "<<",
            "+1",
            "1e3",
            "*:5432",
            ":8008",
            "%t [%p]",
            "a: b",
            "a #b",
            " x",
            "x ",
            "-x",
            "a:",
        ] {
            let out = string(s);
            assert!(
                out.starts_with('\'') || out.starts_with('"'),
                "{s:?} emitted as {out}"
            );
        }
    }

    #[test]
    fn plain_where_unambiguous() {
        for s in [
            "hot_standby",
            "/scripts/x.sh",
            "local   all  all  trust",
            "host:5432",
            "btree_gin,x",
            "1800s",
            "64MB",
            "1d",
        ] {
            assert_eq!(string(s), s);
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(string("it's"), "'it''s'");
        assert_eq!(
            string("a\"b\\c\nd\u{7f}é😀"),
            "\"a\\\"b\\\\c\\nd\\x7F\\xE9\\U0001F600\""
        );
    }

    #[test]
    fn floats_always_have_a_dot() {
        assert_eq!(scalar(&json!(5.0)), "5.0");
        assert_eq!(scalar(&json!(1e-7)), "0.0000001");
        assert_eq!(scalar(&json!(0.02)), "0.02");
        assert_eq!(scalar(&json!(33554432)), "33554432");
    }
}
