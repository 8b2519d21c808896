//! Values paths written the way `helm --set` reads them (`a.b\\.c[0].d`), so a path can be
//! pasted into the fix command: [`join_path`] and [`split_path`] invert each other exactly.

/// One step of a values path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// A map key (unescaped).
    Key(String),
    /// A list index.
    Index(usize),
}

/// Escapes a map key for use in a path (`--set` syntax).
pub fn escape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '\\' | '.' | '[' | ']' | '=' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Joins segments into a path: `a.b\.c[0].d`.
pub fn join_path(segments: &[PathSegment]) -> String {
    let mut out = String::new();
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            PathSegment::Key(k) => {
                // By position, not by what was written: a leading empty key still needs its
                // dot (`.image` is not `image`; found by the `values` fuzz target).
                if i > 0 {
                    out.push('.');
                }
                out.push_str(&escape_key(k));
            }
            PathSegment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Splits a path written by [`join_path`] back into segments; `None` when it is malformed.
pub fn split_path(path: &str) -> Option<Vec<PathSegment>> {
    let mut segs = Vec::new();
    let mut chars = path.chars().peekable();
    // A key is expected at the start and after every '.'.
    let mut expect_key = true;
    while chars.peek().is_some() {
        if expect_key {
            let mut key = String::new();
            while let Some(&c) = chars.peek() {
                match c {
                    '\\' => {
                        chars.next();
                        key.push(chars.next()?);
                    }
                    '.' | '[' => break,
                    ']' | '=' | ',' => return None,
                    _ => {
                        key.push(c);
                        chars.next();
                    }
                }
            }
            segs.push(PathSegment::Key(key));
            expect_key = false;
        }
        match chars.next() {
            None => break,
            Some('.') => {
                expect_key = true;
                if chars.peek().is_none() {
                    // Trailing '.' means a final empty key.
                    segs.push(PathSegment::Key(String::new()));
                }
            }
            Some('[') => {
                let mut digits = String::new();
                loop {
                    match chars.next()? {
                        ']' => break,
                        d if d.is_ascii_digit() => digits.push(d),
                        _ => return None,
                    }
                }
                segs.push(PathSegment::Index(digits.parse().ok()?));
            }
            Some(_) => return None,
        }
    }
    Some(segs)
}
