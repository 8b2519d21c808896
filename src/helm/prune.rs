//! Cuts a workload document down to the mapping entries [`super::manifest`] reads, before it
//! is parsed.
//!
//! Parsing YAML costs per byte, and a workload document is mostly what the guard ignores
//! (labels, env, probes, resources, volumes, affinity): serde skips those fields but the
//! scanner still tokenises them. [`prune`] drops every mapping entry whose key is not one of
//! the fields the index deserialises anywhere ([`KEEP`]), with its whole subtree; serde
//! ignores such an entry at every level, so the parse of the pruned text yields the same
//! workload, at a third to a fifth of the cost.
//!
//! Only plain block YAML is pruned, where indentation alone says where a subtree ends: any
//! construct that can span lines in another way or that the line scan does not recognise (a
//! quoted scalar or flow collection not closed on its line, a multi-line plain scalar, tabs,
//! anchors, aliases, tags, complex keys, quoted keys, directives) makes [`prune`] answer
//! `None`, and the caller parses the whole document as before. A pruned text that does not
//! parse is likewise parsed again whole, so errors are the full parser's.

/// Every field name of `manifest::Doc`, `Meta`, `workload::Spec`, `Template` and
/// `RawContainer` (serialised names). An entry under any other key is ignored by serde.
const KEEP: [&str; 11] = [
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "spec",
    "template",
    "jobTemplate",
    "containers",
    "initContainers",
    "image",
];

/// How a line's value ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Value {
    /// `key:` or `-` with nothing after: the value, if any, is on the following lines.
    Empty,
    /// A scalar or flow collection complete on this line.
    Complete,
    /// A block scalar header (`|`, `>-`, …): the content is the following, deeper lines.
    Block,
}

/// One line of a block document, as far as structure goes.
#[derive(Debug)]
struct Line<'a> {
    /// Column of the last `- ` on the line, if any.
    dash: Option<usize>,
    /// Column and text of the mapping key, if the line has one.
    key: Option<(usize, &'a str)>,
    value: Value,
}

/// Constraint on the indentation of the next content line.
#[derive(Clone, Copy)]
enum Next {
    Any,
    /// At most this column (a deeper line would continue a plain scalar).
    AtMost(usize),
    /// Less than this column (after a bare scalar line).
    Below(usize),
}

/// The document without the entries serde would ignore, or `None` when it is not plain block
/// YAML (see the module documentation): then parse `doc` itself.
pub fn prune(doc: &str) -> Option<String> {
    // Lines are split at `\n` (a `\r\n` pair counts once): a lone carriage return is a line
    // break to YAML too, and the other break-like characters and a byte-order mark are rare
    // enough to leave to the full parser (found by the fuzzer).
    let lone_cr = doc
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'\r' && w[1] != b'\n')
        || doc.ends_with('\r');
    if lone_cr || doc.contains(['\u{85}', '\u{2028}', '\u{2029}', '\u{feff}']) {
        return None;
    }
    let mut out = String::with_capacity(doc.len() / 3);
    // Inside a block scalar: its parent's column, and whether its lines are kept.
    let mut block: Option<(usize, bool)> = None;
    // Inside a dropped entry: its key's column, and whether a compact sequence (`- ` at the
    // key's own column) belongs to it (the key had no value on its line).
    let mut dropping: Option<(usize, bool)> = None;
    let mut next = Next::Any;
    // Column after which a bare scalar line may stand (the previous line had an empty value).
    let mut open: Option<usize> = None;
    for raw in doc.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if let Some((parent, keep)) = block {
            if body.is_empty() || indent > parent {
                if keep {
                    out.push_str(line);
                    out.push('\n');
                }
                continue;
            }
            block = None;
        }
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if body.starts_with('\t') || body.starts_with("...") || body.starts_with("---") {
            return None;
        }
        match next {
            Next::AtMost(m) if indent > m => return None,
            Next::Below(m) if indent >= m => return None,
            _ => {}
        }
        if let Some((col, compact)) = dropping {
            let inside = indent > col || (compact && indent == col && is_dash(body));
            if !inside {
                dropping = None;
            }
        }
        let parsed = parse_line(indent, body)?;
        if parsed.key.is_none() && parsed.dash.is_none() {
            // A bare scalar is only the value of the `key:` or `-` just above.
            match open {
                Some(col) if indent > col => {}
                _ => return None,
            }
        }
        let last_col = parsed.key.map(|(c, _)| c).or(parsed.dash).unwrap_or(indent);
        let mut keep = dropping.is_none();
        if keep
            && let Some((col, key)) = parsed.key
            && !KEEP.contains(&key)
        {
            dropping = Some((col, parsed.value == Value::Empty));
            keep = false;
            // The dashes stay: the item keeps its other entries (or becomes null).
            let dashes = line[..col].trim_end();
            if !dashes.is_empty() {
                out.push_str(dashes);
                out.push('\n');
            }
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
        open = None;
        next = match parsed.value {
            Value::Empty => {
                open = Some(last_col);
                Next::Any
            }
            Value::Complete if parsed.key.is_none() && parsed.dash.is_none() => Next::Below(indent),
            Value::Complete => Next::AtMost(last_col),
            Value::Block => {
                block = Some((last_col, keep));
                Next::AtMost(last_col)
            }
        };
    }
    Some(out)
}

fn is_dash(body: &str) -> bool {
    body == "-" || body.starts_with("- ")
}

/// Splits a content line (`body` starts at column `indent`) into dashes, key and value.
fn parse_line(indent: usize, body: &str) -> Option<Line<'_>> {
    let mut rest = body;
    let mut col = indent;
    let mut dash = None;
    loop {
        if rest == "-" {
            return Some(Line {
                dash: Some(col),
                key: None,
                value: Value::Empty,
            });
        }
        let Some(after) = rest.strip_prefix("- ") else {
            break;
        };
        dash = Some(col);
        let trimmed = after.trim_start_matches(' ');
        col += 2 + (after.len() - trimmed.len());
        rest = trimmed;
        if rest.starts_with('\t') {
            return None;
        }
    }
    let (key, value) = match split_key(rest) {
        Some((key, value)) => {
            if key == "<<" {
                return None;
            }
            (Some((col, key)), value)
        }
        None => (None, rest),
    };
    Some(Line {
        dash,
        key,
        value: scan_value(value)?,
    })
}

/// `key: value` → (`key`, `value`) for a plain key; `None` when the text is not a mapping
/// entry with a plain key (a quoted or complex key is left to [`scan_value`], which rejects it).
fn split_key(text: &str) -> Option<(&str, &str)> {
    let first = text.chars().next()?;
    if "\"'[]{}|>&*!%@`?#,:-".contains(first) {
        return None;
    }
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'#' if bytes[i - 1] == b' ' => return None,
            // A tab in the key (`spec\t:`) is separation to YAML but not to this scan:
            // left to the parser (found by the fuzzer).
            b':' if i + 1 == bytes.len() || bytes[i + 1] == b' ' => {
                let key = text[..i].trim_end_matches(' ');
                if key.contains('\t') {
                    return None;
                }
                return Some((key, &text[i + 1..]));
            }
            _ => {}
        }
    }
    None
}

/// Whether `rest` (what follows a closed quoted scalar or flow collection) ends the line.
fn ends_line(rest: &str) -> bool {
    let t = rest.trim_start_matches(' ');
    t.is_empty() || (t.len() < rest.len() && t.starts_with('#'))
}

/// Classifies a value; `None` for anything that may continue on the next lines or that the
/// line scan does not model.
fn scan_value(text: &str) -> Option<Value> {
    // After a key, [`split_key`] leaves the space that followed the colon.
    let v = text.trim_start_matches(' ');
    let Some(first) = v.chars().next() else {
        return Some(Value::Empty);
    };
    match first {
        '#' => Some(Value::Empty),
        '|' | '>' => {
            let header = v[1..]
                .trim_start_matches(['+', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
            ends_line(header).then_some(Value::Block)
        }
        '"' | '\'' => {
            let end = quoted_end(v)?;
            ends_line(&v[end..]).then_some(Value::Complete)
        }
        '[' | '{' => {
            let end = flow_end(v)?;
            ends_line(&v[end..]).then_some(Value::Complete)
        }
        '&' | '*' | '!' | '%' | '@' | '`' | '?' | ',' | ']' | '}' | ':' | '\t' => None,
        _ => {
            // A plain scalar cannot hold `: ` (that would be a nested mapping).
            let plain = match v.find(" #") {
                Some(i) => &v[..i],
                None => v,
            };
            // Nor be a block sequence entry (`key: - x` is not YAML).
            let plain = plain.trim_end();
            let simple = !plain.contains(": ")
                && !plain.ends_with(':')
                && plain != "-"
                && !plain.starts_with("- ");
            simple.then_some(Value::Complete)
        }
    }
}

/// The byte offset just past the quoted scalar `v` starts with, if it closes on this line.
fn quoted_end(v: &str) -> Option<usize> {
    let bytes = v.as_bytes();
    let quote = bytes[0];
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The byte offset just past the flow collection `v` starts with, if it closes on this line.
fn flow_end(v: &str) -> Option<usize> {
    let bytes = v.as_bytes();
    let mut depth = 0usize;
    let mut token_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'[' | b'{' => {
                depth += 1;
                token_start = true;
            }
            b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
                token_start = false;
            }
            b',' => token_start = true,
            b' ' => {
                if bytes.get(i + 1) == Some(&b'#') {
                    return None;
                }
            }
            b'"' | b'\'' if token_start => {
                i += quoted_end(&v[i..])?;
                token_start = false;
                continue;
            }
            b'&' | b'*' | b'!' | b'?' | b'|' | b'>' | b'\t' if token_start => return None,
            // `a:b` is one plain scalar; only `: ` starts a value.
            b':' => token_start = bytes.get(i + 1) == Some(&b' '),
            _ => token_start = false,
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_the_index_reads() {
        let doc = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    a: b\n    c: \"d\"\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      annotations:\n        x: |\n          name: nope\n          image: nope\n    spec:\n      containers:\n      - env:\n        - name: A\n          value: '1'\n        name: app\n        image: \"nginx:1\" # pinned\n        args: [\"--a\", '--b: c']\n        command:\n        - sh\n        - -c\n        - |\n          echo hi\n      - name: side\n        image: busybox\n";
        let want = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    metadata:\n    spec:\n      containers:\n      -\n        name: app\n        image: \"nginx:1\" # pinned\n      - name: side\n        image: busybox\n";
        assert_eq!(prune(doc).as_deref(), Some(want));
    }

    #[test]
    fn keeps_block_scalars_of_kept_keys_and_flow_values() {
        let doc = "kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: 'x:1'}]\n  initContainers:\n    - name: i\n      image: >-\n        y:1\n    - resources: {}\n";
        let want = "kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: 'x:1'}]\n  initContainers:\n    - name: i\n      image: >-\n        y:1\n    -\n";
        assert_eq!(prune(doc).as_deref(), Some(want));
    }

    /// Anything that may span lines otherwise than by indentation, or that the scan does not
    /// model, is left to the full parser.
    #[test]
    fn leaves_what_it_cannot_model_to_the_parser() {
        let cases = [
            ("open double quote", "kind: Pod\nx: \"a\n  b\"\n"),
            // Found by the fuzzer: a lone carriage return breaks lines for YAML.
            (
                "lone carriage returns",
                "kind: CronJob\n\r\r\rmetadata:\n  name: cj\n",
            ),
            ("line separator", "kind: Pod\nmetadata:\u{2028}  name: p\n"),
            ("byte-order mark", "\u{feff}kind: Pod\n"),
            ("open single quote", "kind: Pod\nx: 'it''s\n  b'\n"),
            ("open flow", "kind: Pod\nx: [a,\n  b]\n"),
            ("comment inside flow", "kind: Pod\nx: [a, # c\n  b]\n"),
            ("multi-line plain", "kind: Pod\nx: a\n  b\n"),
            (
                "multi-line plain after empty key",
                "kind: Pod\nx:\n  a\n  b\n",
            ),
            ("bare scalar at key column", "kind: Pod\nx: a\ny\n"),
            ("anchor", "kind: Pod\nx: &a {b: c}\n"),
            ("alias", "kind: Pod\nx: *a\n"),
            ("merge key", "kind: Pod\nspec:\n  <<: {c: d}\n"),
            ("tag", "kind: Pod\nx: !!str a\n"),
            ("complex key", "kind: Pod\n? x\n: y\n"),
            ("quoted key", "kind: Pod\n\"spec\": {}\n"),
            ("tab indent", "kind: Pod\nspec:\n\tx: y\n"),
            // Found by the fuzzer: the key read as `spec\t` was dropped, YAML reads `spec`.
            (
                "tab before a key's colon",
                "kind: Pod\nspec\t:\n  containers: []\n",
            ),
            ("nested mapping in plain", "kind: Pod\nx: a: b\n"),
            ("document marker", "kind: Pod\n...\n"),
            ("bad block header", "kind: Pod\nx: |x\n  a\n"),
            ("no space after colon value", "kind: Pod\nx:[a]\n"),
            ("sequence as a plain value", "kind: Pod\nx: - a\n"),
            (
                "flow closed inside a quote",
                "kind: Pod\nx: {\"a\":\"]\"}\n",
            ),
        ];
        for (name, doc) in cases {
            assert_eq!(prune(doc), None, "{name}");
        }
    }

    #[test]
    fn block_scalar_content_is_not_structure() {
        // Quotes, dashes and keys inside a block scalar do not end or start anything.
        let doc = "kind: Job\nspec:\n  template:\n    spec:\n      containers:\n        - name: c\n          args:\n            - |\n              \"unclosed\n              image: evil\n            - x\n          image: ok:1\n";
        let want = "kind: Job\nspec:\n  template:\n    spec:\n      containers:\n        - name: c\n          image: ok:1\n";
        assert_eq!(prune(doc).as_deref(), Some(want));
    }

    #[test]
    fn compact_sequences_belong_to_their_key() {
        let doc = "kind: Pod\nspec:\n  volumes:\n  - name: v\n  - name: w\n  containers:\n  - name: c\n    image: i\n";
        let want = "kind: Pod\nspec:\n  containers:\n  - name: c\n    image: i\n";
        assert_eq!(prune(doc).as_deref(), Some(want));
    }
}
