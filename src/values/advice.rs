//! The advice for a stale pin: the lines `helm upgrade` prints on stderr, and the exact
//! command that makes the release follow the chart again.

use std::fmt;

use super::pins::{Advice, StalePin};
use crate::text;

impl StalePin {
    /// The explanation for `helm upgrade`'s stderr: what is pinned since when, and the command
    /// that makes the release follow the chart. Each line is at most [`text::WARNING_MAX`]
    /// bytes and, unless a value is very long, at most [`text::WARNING_SOFT`].
    pub fn warning_lines(&self, release: &str, chart_ref_hint: &str) -> Vec<String> {
        vec![self.summary_line(), self.fix_line(release, chart_ref_hint)]
    }

    fn summary_line(&self) -> String {
        let full = self.summary_with(|s| s.to_string());
        if full.len() <= text::WARNING_SOFT {
            return full;
        }
        // Shorten long values (digests) in this line only; the fix line stays exact.
        text::warning(&self.summary_with(|s| abbreviate(s, 24)))
    }

    fn summary_with(&self, show: impl Fn(&str) -> String) -> String {
        let head = format!(
            "{}={} pinned since revision {}",
            clean(&self.path),
            show(&self.pinned),
            self.since_revision
        );
        let version = clean(&self.chart_version);
        let tail = if self.reuse_values {
            format!("--reuse-values discarded chart {version} defaults")
        } else {
            match self.chart_default.as_deref() {
                Some("") => format!("chart {version} default is empty"),
                Some(d) => format!("chart {version} default is {}", show(d)),
                None => format!("chart {version} has no default there"),
            }
        };
        format!("{head}; {tail}")
    }

    fn fix_line(&self, release: &str, chart_ref_hint: &str) -> String {
        let base = format!(
            "to follow the chart: helm upgrade {} {}",
            shell_word(&clean(release)),
            clean(chart_ref_hint)
        );
        let line = match self.advice {
            Advice::ResetValues => format!("{base} --reset-values"),
            Advice::ResetThenReuseValues => {
                let value = match self.chart_default.as_deref() {
                    Some(d) if !d.is_empty() && !self.reuse_values => d,
                    _ => "null",
                };
                let arg = format!("{}={}", self.path, escape_set_value(value));
                format!(
                    "{base} --reset-then-reuse-values --set {}",
                    shell_word(&arg)
                )
            }
        };
        text::warning(&line)
    }
}

impl fmt::Display for StalePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary_line())
    }
}

/// The command that drops a persisted value at `path` and keeps the other persisted values:
/// Helm deletes a user key set to `null`, so the chart's default applies again.
pub fn drop_command(release: &str, path: &str) -> String {
    format!(
        "helm upgrade {} <chart> --reset-then-reuse-values --set {}",
        shell_word(&clean(release)),
        shell_word(&format!("{}=null", clean(path)))
    )
}

/// `--set` splits values on `,` and treats `\` as an escape.
pub(super) fn escape_set_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Single-quotes a word for POSIX shells when it holds anything beyond a safe set.
fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '=' | '+')
        });
    if safe || s.starts_with('<') && s.ends_with('>') {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Caller-supplied text as it may go into a warning: control characters escaped.
fn clean(s: &str) -> String {
    text::printable(s).into_owned()
}

/// Keeps the first `max` bytes of a long value, marking the cut.
pub(super) fn abbreviate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    format!("{}{}", text::clip(s, max), text::ELLIPSIS)
}
