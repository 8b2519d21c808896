//! The default values of a chart about to be installed, read from a chart directory or a
//! packaged `.tgz` the way Helm assembles them — `values.yaml`, and each subchart's
//! `values.yaml` under its name (or alias) — without rendering a template.
//!
//! Only the image-valued paths of the result ever leave this module
//! ([`crate::values::image_paths`]): a chart's defaults may hold credentials too.
//!
//! Bounded: each file read is at most [`MAX_FILE`] bytes, a `.tgz` at most [`MAX_ARCHIVE`]
//! bytes decompressed and [`MAX_ENTRIES`] entries, subcharts nest at most [`MAX_DEPTH`] deep.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::values::coalesce::coalesce_values;
use crate::values::{ImageValue, image_paths};

/// Largest `values.yaml` or `Chart.yaml` read.
pub const MAX_FILE: u64 = 4 << 20;
/// Largest chart archive, decompressed.
pub const MAX_ARCHIVE: u64 = 64 << 20;
/// Most entries read from one archive.
pub const MAX_ENTRIES: usize = 20_000;
/// Deepest subchart nesting followed.
pub const MAX_DEPTH: usize = 8;

/// Why a chart could not be read. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChartError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

/// What a chart says about itself and its defaults.
#[derive(Debug, Clone)]
pub struct ChartDefaults {
    pub name: String,
    pub version: String,
    /// The image-valued paths of the chart's defaults, subcharts included.
    pub images: Vec<ImageValue>,
}

impl ChartDefaults {
    /// The default at `path`, if image-valued.
    pub fn default_at(&self, path: &str) -> Option<&str> {
        self.images
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default, Deserialize)]
struct ChartYaml {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

#[derive(Debug, Default, Deserialize)]
struct Dependency {
    #[serde(default)]
    name: String,
    #[serde(default)]
    alias: Option<String>,
}

/// A chart's files, from a directory or an archive: path relative to the chart root → bytes.
/// Only `Chart.yaml`, `values.yaml` and `charts/…` are kept.
type Files = BTreeMap<String, Vec<u8>>;

/// Reads a chart directory or a packaged `.tgz`.
pub fn read(path: &Path) -> Result<ChartDefaults, ChartError> {
    let io = |source| ChartError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let files = if meta.is_dir() {
        dir_files(path, 0)?
    } else {
        let f = std::fs::File::open(path).map_err(io)?;
        archive_files(f, &path.display().to_string())?
    };
    let values = assemble(&files, &path.display().to_string(), 0)?;
    let chart: ChartYaml = yaml(&files, "Chart.yaml", &path.display().to_string())?;
    Ok(ChartDefaults {
        name: chart.name,
        version: chart.version,
        images: image_paths(&values),
    })
}

fn dir_files(root: &Path, depth: usize) -> Result<Files, ChartError> {
    let mut files = Files::new();
    for name in ["Chart.yaml", "values.yaml"] {
        let p = root.join(name);
        if p.is_file() {
            files.insert(name.to_owned(), read_bounded(&p)?);
        }
    }
    let charts = root.join("charts");
    if depth < MAX_DEPTH && charts.is_dir() {
        let rd = std::fs::read_dir(&charts).map_err(|source| ChartError::Io {
            path: charts.clone(),
            source,
        })?;
        for entry in rd.filter_map(Result::ok) {
            let p = entry.path();
            let Some(file) = p.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if p.is_dir() {
                for (k, v) in dir_files(&p, depth + 1)? {
                    files.insert(format!("charts/{file}/{k}"), v);
                }
            } else if file.ends_with(".tgz") {
                files.insert(format!("charts/{file}"), read_archive_bytes(&p)?);
            }
        }
    }
    Ok(files)
}

fn read_bounded(p: &Path) -> Result<Vec<u8>, ChartError> {
    let f = std::fs::File::open(p).map_err(|source| ChartError::Io {
        path: p.to_owned(),
        source,
    })?;
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ChartError::Io {
            path: p.to_owned(),
            source,
        })?;
    if buf.len() as u64 > MAX_FILE {
        return Err(ChartError::Invalid {
            path: p.display().to_string(),
            why: format!("larger than {MAX_FILE} bytes"),
        });
    }
    Ok(buf)
}

fn read_archive_bytes(p: &Path) -> Result<Vec<u8>, ChartError> {
    let f = std::fs::File::open(p).map_err(|source| ChartError::Io {
        path: p.to_owned(),
        source,
    })?;
    let mut buf = Vec::new();
    f.take(MAX_ARCHIVE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ChartError::Io {
            path: p.to_owned(),
            source,
        })?;
    Ok(buf)
}

/// The files of a packaged chart (`<name>/Chart.yaml`, …), with the top directory stripped.
fn archive_files(input: impl Read, label: &str) -> Result<Files, ChartError> {
    let invalid = |why: String| ChartError::Invalid {
        path: label.to_owned(),
        why,
    };
    let gz = GzDecoder::new(input).take(MAX_ARCHIVE);
    let mut archive = tar::Archive::new(gz);
    let mut files = Files::new();
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("not a chart archive ({e})")))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(invalid(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(|e| invalid(format!("not a chart archive ({e})")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| invalid(format!("bad entry name ({e})")))?
            .to_string_lossy()
            .into_owned();
        // `<chart>/values.yaml`: the first component is the chart's own directory.
        let Some((_, rel)) = path.split_once('/') else {
            continue;
        };
        let wanted = rel == "Chart.yaml"
            || rel == "values.yaml"
            || (rel.starts_with("charts/")
                && (rel.ends_with("/Chart.yaml")
                    || rel.ends_with("/values.yaml")
                    || rel.ends_with(".tgz")));
        if !wanted || rel.split('/').count() > 2 * MAX_DEPTH + 1 {
            continue;
        }
        if entry.size() > MAX_ARCHIVE {
            return Err(invalid(format!("{rel} is too large")));
        }
        let mut buf = Vec::new();
        (&mut entry)
            .take(MAX_ARCHIVE)
            .read_to_end(&mut buf)
            .map_err(|e| invalid(format!("reading {rel} ({e})")))?;
        files.insert(rel.to_owned(), buf);
    }
    Ok(files)
}

fn yaml<T: for<'de> Deserialize<'de> + Default>(
    files: &Files,
    name: &str,
    label: &str,
) -> Result<T, ChartError> {
    let Some(bytes) = files.get(name) else {
        return Ok(T::default());
    };
    if bytes.len() as u64 > MAX_FILE {
        return Err(ChartError::Invalid {
            path: format!("{label}: {name}"),
            why: format!("larger than {MAX_FILE} bytes"),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ChartError::Invalid {
        path: format!("{label}: {name}"),
        why: "not UTF-8".into(),
    })?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let opts = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, opts).map_err(|e| ChartError::Invalid {
        path: format!("{label}: {name}"),
        why: e.location().map_or_else(
            || "YAML error".to_owned(),
            |l| format!("YAML error at line {}", l.line()),
        ),
    })
}

/// The chart's defaults with its subcharts' under their names (or aliases): what Helm's
/// `CoalesceValues` sees as `chart.Values` once dependencies are processed. A parent's values
/// for a subchart win over the subchart's own defaults.
fn assemble(files: &Files, label: &str, depth: usize) -> Result<Value, ChartError> {
    let mut values: Value = yaml::<Value>(files, "values.yaml", label)?;
    if values.is_null() {
        values = Value::Object(Map::new());
    }
    if depth >= MAX_DEPTH {
        return Ok(values);
    }
    let chart: ChartYaml = yaml(files, "Chart.yaml", label)?;
    // Subcharts: `charts/<dir>/…` and `charts/<name>-<version>.tgz`.
    let mut subs: Vec<Files> = Vec::new();
    let mut dirs: BTreeMap<String, Files> = BTreeMap::new();
    for (k, v) in files {
        let Some(rest) = k.strip_prefix("charts/") else {
            continue;
        };
        match rest.split_once('/') {
            Some((dir, inner)) => {
                dirs.entry(dir.to_owned())
                    .or_default()
                    .insert(inner.to_owned(), v.clone());
            }
            None if rest.ends_with(".tgz") => {
                subs.push(archive_files(
                    v.as_slice(),
                    &format!("{label}: charts/{rest}"),
                )?);
            }
            None => {}
        }
    }
    subs.extend(dirs.into_values());
    for sub in subs {
        let sub_chart: ChartYaml = yaml(&sub, "Chart.yaml", label)?;
        if sub_chart.name.is_empty() {
            continue;
        }
        let key = chart
            .dependencies
            .iter()
            .find(|d| d.name == sub_chart.name)
            .and_then(|d| d.alias.clone())
            .unwrap_or_else(|| sub_chart.name.clone());
        let sub_values = assemble(&sub, label, depth + 1)?;
        if let Value::Object(map) = &mut values {
            let parent = map.get(&key).cloned().unwrap_or(Value::Null);
            map.insert(key, coalesce_values(&sub_values, &parent));
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn tgz(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (name, body) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, body.as_bytes())
                .expect("append");
        }
        b.into_inner().expect("tar").finish().expect("gzip")
    }

    const PARENT_VALUES: &str = "image:\n  repository: bitnami/postgresql\n  tag: 15.5.0\nauth:\n  password: CANARY-chart-pw\ncache:\n  image:\n    tag: 7.4.0\n";
    const PARENT_CHART: &str = "apiVersion: v2\nname: postgresql\nversion: 14.0.1\ndependencies:\n  - name: redis\n    alias: cache\n";
    const SUB_VALUES: &str = "image:\n  repository: bitnami/redis\n  tag: 7.2.0\n";
    const SUB_CHART: &str = "apiVersion: v2\nname: redis\nversion: 19.0.0\n";

    fn check(d: &ChartDefaults) {
        assert_eq!(
            (d.name.as_str(), d.version.as_str()),
            ("postgresql", "14.0.1")
        );
        assert_eq!(d.default_at("image.tag"), Some("15.5.0"));
        // The parent's value for the aliased subchart wins; the subchart fills the rest.
        assert_eq!(d.default_at("cache.image.tag"), Some("7.4.0"));
        assert_eq!(
            d.default_at("cache.image.repository"),
            Some("bitnami/redis")
        );
        assert!(!format!("{d:?}").contains("CANARY"));
    }

    #[test]
    fn directory_and_archive_with_subcharts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("postgresql");
        std::fs::create_dir_all(root.join("charts/redis")).expect("mkdir");
        std::fs::write(root.join("Chart.yaml"), PARENT_CHART).expect("write");
        std::fs::write(root.join("values.yaml"), PARENT_VALUES).expect("write");
        std::fs::write(root.join("charts/redis/Chart.yaml"), SUB_CHART).expect("write");
        std::fs::write(root.join("charts/redis/values.yaml"), SUB_VALUES).expect("write");
        check(&read(&root).expect("dir"));

        // Packaged, with the subchart packaged inside it.
        let sub = tgz(&[
            ("redis/Chart.yaml", SUB_CHART),
            ("redis/values.yaml", SUB_VALUES),
        ]);
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (name, body) in [
            ("postgresql/Chart.yaml", PARENT_CHART.as_bytes()),
            ("postgresql/values.yaml", PARENT_VALUES.as_bytes()),
            (
                "postgresql/templates/x.yaml",
                b"{{ .Values.auth.password }}".as_slice(),
            ),
            ("postgresql/charts/redis-19.0.0.tgz", sub.as_slice()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, body).expect("append");
        }
        let bytes = b.into_inner().expect("tar").finish().expect("gzip");
        let path = dir.path().join("postgresql-14.0.1.tgz");
        std::fs::write(&path, bytes).expect("write");
        check(&read(&path).expect("tgz"));
    }

    #[test]
    fn bad_charts_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.tgz");
        std::fs::write(&path, b"CANARY not gzip").expect("write");
        let e = read(&path).expect_err("not a chart").to_string();
        assert!(e.contains("bad.tgz") && !e.contains("CANARY"), "{e}");
        let root = dir.path().join("c");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(root.join("values.yaml"), "password: CANARY\nimage: [").expect("write");
        let e = read(&root).expect_err("bad yaml").to_string();
        assert!(e.contains("values.yaml") && !e.contains("CANARY"), "{e}");
        assert!(read(&dir.path().join("missing")).is_err());
    }
}
