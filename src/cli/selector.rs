//! `--from SELECTOR`: PromQL label matchers (`job="otel",node=~"prod-.*"`, braces optional),
//! parsed once into typed matchers and rendered back escaped, so the text a user gives can only
//! ever select series.

use crate::analysis::queries::{Selector, escape_label_value};

/// A matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "=~",
            Op::NotRegex => "!~",
        }
    }
}

/// One `label op "value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// The label name (`[a-zA-Z_][a-zA-Z0-9_]*`, never `__name__`: the plan picks the metrics).
    pub label: String,
    /// The operator.
    pub op: Op,
    /// The value, unescaped.
    pub value: String,
}

/// Parsed `--from` matchers (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Matcher>);

impl Selector for LabelSelector {
    fn matchers(&self) -> String {
        self.0
            .iter()
            .map(|m| {
                format!(
                    "{}{}\"{}\"",
                    m.label,
                    m.op.as_str(),
                    escape_label_value(&m.value)
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}", self.matchers())
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let inner = match (trimmed.strip_prefix('{'), trimmed.ends_with('}')) {
            (Some(rest), true) => &rest[..rest.len() - 1],
            (None, false) => trimmed,
            _ => return Err(format!("unbalanced braces in {text:?}")),
        };
        let mut chars = inner.chars().peekable();
        let mut matchers = Vec::new();
        loop {
            skip_spaces(&mut chars);
            if chars.peek().is_none() {
                break;
            }
            let label: String =
                std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_'))
                    .collect();
            let valid = label
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !valid {
                return Err(format!("expected a label name in {text:?}"));
            }
            if label == "__name__" {
                return Err(
                    "__name__ cannot be selected: the plan reads every process metric".into(),
                );
            }
            skip_spaces(&mut chars);
            let op = match (chars.next(), chars.peek()) {
                (Some('='), Some('~')) => Op::Regex,
                (Some('='), _) => Op::Equal,
                (Some('!'), Some('=')) => Op::NotEqual,
                (Some('!'), Some('~')) => Op::NotRegex,
                _ => {
                    return Err(format!(
                        "expected =, !=, =~ or !~ after {label} in {text:?}"
                    ));
                }
            };
            if op != Op::Equal {
                chars.next();
            }
            skip_spaces(&mut chars);
            let value = quoted(&mut chars)
                .ok_or_else(|| format!("expected a quoted value for {label} in {text:?}"))?;
            if matches!(op, Op::Regex | Op::NotRegex) {
                regex::Regex::new(&value).map_err(|e| format!("{label}: {e}"))?;
            }
            matchers.push(Matcher { label, op, value });
            skip_spaces(&mut chars);
            match chars.next() {
                None => break,
                Some(',') => continue,
                Some(c) => return Err(format!("unexpected {c:?} in {text:?}")),
            }
        }
        if matchers.is_empty() {
            return Err("an empty selector would read every series".into());
        }
        Ok(LabelSelector(matchers))
    }
}

fn skip_spaces(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

/// A `"…"` or `'…'` string with Go-style escapes (`\"`, `\\`, `\n`, `\t`, `\r`).
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let quote = chars.next().filter(|c| *c == '"' || *c == '\'')?;
    let mut value = String::new();
    loop {
        match chars.next()? {
            c if c == quote => return Some(value),
            '\\' => value.push(match chars.next()? {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            }),
            c => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse_with_or_without_braces_and_render_escaped() {
        let sel: LabelSelector = r#"{job="otel", node=~"prod-.*",team!='a\"b'}"#
            .parse()
            .expect("parses");
        assert_eq!(sel.0.len(), 3);
        assert_eq!(sel.0[2].value, "a\"b");
        assert_eq!(sel.matchers(), r#"job="otel",node=~"prod-.*",team!="a\"b""#);
        let bare: LabelSelector = r#"phoenix_variant="baseline""#.parse().expect("parses");
        assert_eq!(bare.to_string(), r#"{phoenix_variant="baseline"}"#);
    }

    #[test]
    fn hostile_or_broken_selectors_are_refused() {
        for bad in [
            "",
            "{}",
            "job",
            "job=otel",
            r#"job="otel""#.trim_end_matches('"'),
            r#"{job="a"} or vector(1)"#,
            r#"job="a" or vector(1)"#,
            r#"__name__="up""#,
            r#"1job="a""#,
            r#"job=~"(""#,
            r#"{job="a""#,
        ] {
            assert!(bad.parse::<LabelSelector>().is_err(), "{bad:?}");
        }
    }
}
