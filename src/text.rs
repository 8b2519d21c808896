//! Text shown to people: one place for the limits and the shaping of every line that leaves the
//! process as a warning, a denial message, an annotation or an Event note.
//!
//! Three rules, because the text mixes our words with strings from the request (image
//! references, container names, the break-glass reason, user names) that anyone can write:
//!
//! - **Bounded.** The API server truncates a warning past 256 bytes and keeps 4 KiB of them in
//!   total; an annotation set counts against a 256 KiB budget per object. [`clip`] cuts on a
//!   character boundary, [`warning`] fits one warning line with an ellipsis.
//! - **Printable.** A terminal interprets `ESC[31m`; U+202E reverses what follows. [`shown`]
//!   escapes control and bidirectional-format characters (`\u{1b}`) and caps the length, so a
//!   hostile image reference reaches kubectl as inert text.
//! - **One ellipsis.** `…` marks every cut.

use std::borrow::Cow;

/// Longest warning the API server passes on untruncated.
pub const WARNING_MAX: usize = 256;
/// A warning line that fits a terminal next to kubectl's or Helm's prefix.
pub const WARNING_SOFT: usize = 120;
/// The mark of a cut.
pub const ELLIPSIS: char = '…';
/// Longest request-supplied string (an image, a container name) quoted in any message.
pub const FIELD_MAX: usize = 200;

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` in at most `max` bytes, ending with [`ELLIPSIS`] when cut.
pub fn abbreviate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let keep = max.saturating_sub(ELLIPSIS.len_utf8());
    Cow::Owned(format!("{}{ELLIPSIS}", clip(s, keep)))
}

/// One warning line the API server will not truncate: ≤ [`WARNING_MAX`] bytes.
pub fn warning(s: &str) -> String {
    abbreviate(s, WARNING_MAX).into_owned()
}

/// [`warning`] of a string already owned: no copy when it needs no change.
pub fn warning_owned(s: String) -> String {
    match abbreviate(&s, WARNING_MAX) {
        Cow::Owned(changed) => changed,
        Cow::Borrowed(_) => s,
    }
}

/// Whether a character must not reach a terminal as itself: C0/C1 controls, and the Unicode
/// format characters that reorder or hide text (bidi embeddings and isolates, zero-width
/// characters, the byte-order mark).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}' | '\u{061C}')
}

/// `s` with unsafe characters escaped as `\u{..}`.
pub fn printable(s: &str) -> Cow<'_, str> {
    // Printable ASCII throughout (every image, name and namespace): no character to decode.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A request-supplied string as it may appear in a message: printable, at most `max` bytes.
pub fn shown(s: &str, max: usize) -> String {
    abbreviate(&printable(s), max).into_owned()
}

/// A request-supplied field (image, container, name) as quoted in messages.
pub fn field(s: &str) -> String {
    shown(s, FIELD_MAX)
}

/// An error and its causes on one line, each said once: libraries (kube among them) often put
/// their source's text in their own message too, so a plain `{:#}` repeats it.
pub fn error_chain<'a>(
    causes: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut out = String::new();
    for cause in causes {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// RFC 3339 UTC time of `t`, second precision (the format of `managedFields` times).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = [0u8; 20];
    stamp(&mut out, secs);
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes `t` as RFC 3339 UTC with microseconds (the log lines' timestamps), allocating nothing.
pub fn write_rfc3339_micros(
    w: &mut impl std::fmt::Write,
    t: std::time::SystemTime,
) -> std::fmt::Result {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut out = [0u8; 27];
    stamp(&mut out, since.as_secs());
    out[19] = b'.';
    digits(&mut out[20..26], u64::from(since.subsec_micros()));
    out[26] = b'Z';
    w.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SSZ` into the first 20 bytes of `out`: digits written directly, as
/// `format!` with widths costs ~0.3 µs per request on the hot path (profiled).
fn stamp(out: &mut [u8], secs: u64) {
    // Years past 9999 do not fit RFC 3339's four digits: the latest instant it can write.
    let (y, mo, d, h, m, s) = civil(secs.min(LAST_RFC3339));
    let field = |v: i64| u64::try_from(v).unwrap_or(0);
    digits(&mut out[0..4], field(y));
    out[4] = b'-';
    digits(&mut out[5..7], field(mo));
    out[7] = b'-';
    digits(&mut out[8..10], field(d));
    out[10] = b'T';
    digits(&mut out[11..13], h);
    out[13] = b':';
    digits(&mut out[14..16], m);
    out[16] = b':';
    digits(&mut out[17..19], s);
    out[19] = b'Z';
}

/// 9999-12-31T23:59:59Z.
const LAST_RFC3339: u64 = 253_402_300_799;

/// `v` as zero-padded decimal filling `out` (its lowest digits if it is too long).
fn digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `(year, month, day, hour, minute, second)` of a Unix time, UTC.
fn civil(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm), valid for the Unix era onwards.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (y, mo, d, h, m, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_and_abbreviate_respect_char_boundaries() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(abbreviate("abcdef", 10), "abcdef");
        let a = abbreviate("ééééé", 7);
        assert!(a.len() <= 7 && a.ends_with(ELLIPSIS), "{a}");
        assert_eq!(warning(&"x".repeat(1000)).len(), WARNING_MAX);
    }

    #[test]
    fn hostile_characters_are_escaped() {
        let cases = [
            ("nginx:1.27", "nginx:1.27"),
            ("evil\u{1b}[31m:1", "evil\\u{1b}[31m:1"),
            ("a\u{202e}b", "a\\u{202e}b"),
            ("a\nb\tc", "a\\u{a}b\\u{9}c"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("\u{feff}bom", "\\u{feff}bom"),
        ];
        for (input, want) in cases {
            assert_eq!(printable(input), want, "{input:?}");
        }
        let long = shown(&format!("\u{1b}{}", "a".repeat(1 << 20)), FIELD_MAX);
        assert!(long.len() <= FIELD_MAX && long.starts_with("\\u{1b}"));
    }

    #[test]
    fn each_cause_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("failed to infer config: {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("no kubeconfig")]
        struct Inner;
        let e = anyhow::Error::new(Outer(Inner)).context("connecting to the Kubernetes API");
        assert_eq!(
            error_chain(e.chain()),
            "connecting to the Kubernetes API: failed to infer config: no kubeconfig"
        );
    }
}
