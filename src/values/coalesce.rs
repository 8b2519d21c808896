//! Helm's value-merging rules, ported from Helm's Go source so that helm-guard can replay what
//! `helm upgrade` stored in a release without running Helm.
//!
//! # What is ported, and from where
//!
//! * `coalesce_tables` is `CoalesceTables(dst, src)` =
//!   `coalesceTablesFullKey(printf, dst, src, "", false)` from `pkg/chart/common/util/coalesce.go`
//!   (Helm 4, helm/helm `main`) and `pkg/chartutil/coalesce.go` (Helm 3). `dst` is
//!   authoritative: keys missing in `dst` are copied from `src`, nested maps are merged
//!   recursively, scalars and arrays in `dst` win, and a map never replaces a scalar (or the
//!   reverse) — Helm only logs a warning there and keeps `dst`.
//! * `coalesce_values` is `CoalesceValues(chart, vals)` for a chart **without loaded
//!   subcharts**. That is exactly the case Helm itself is in when it replays a stored release:
//!   `chart.Chart.dependencies` is not serialised into the release record, so in
//!   `Upgrade.reuseValues` the call `CoalesceValues(current.Chart, current.Config)` walks no
//!   subcharts (`coalesceDeps` iterates over nothing) and never merges globals.
//! * `reuse_values` is `Upgrade.reuseValues` (`pkg/action/upgrade.go`, identical in Helm 3.14+
//!   and Helm 4; see `shared/helm-format.md` §5): what the new revision stores as `config` and
//!   as `chart.values` for each of the four value modes.
//!
//! # `null` handling (the part Helm changed several times)
//!
//! A `null` in `dst` means "delete this key from the lower layer". Current Helm (Helm 4 `main`,
//! PR helm/helm#31979, and the Helm 3 backports of #30777/#31644 in 3.19/3.20.1) records which
//! `src` keys were non-null *before* merging and deletes the `dst` key only when `src` carried a
//! non-null value there; a `null` over a missing or `null` `src` value is kept. Helm 3.13–3.18
//! deleted the `dst` key whenever the key existed in `src` at all. The two rules differ only when
//! both sides hold `null` at the same key, which never changes what a template sees (a missing
//! key and a `null` both render as empty) and never touches an image value; we follow the
//! current rule. Comparisons that must hold across Helm versions (the `--reuse-values`
//! fingerprint in `crate::values`) ignore `null` leaves for this reason.
//!
//! At the top level, `coalesceValues` deletes a `null` user key whenever the chart has that key
//! (any value, even `null`); that rule has been stable since Helm 3.13 and is ported as is.
//!
//! Go's `CoalesceTables` also mutates `src` (it injects `dst`'s `null` keys into it) and shares
//! sub-maps between the two; here `src` is borrowed immutably and copied, which yields the same
//! `dst`.

use serde_json::{Map, Value};

/// The four ways `helm upgrade` can treat the values of the release being upgraded.
///
/// Precedence when several flags are given (flag help of `helm upgrade`):
/// `--reset-values` > `--reuse-values` > `--reset-then-reuse-values` > default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpgradeValues {
    /// No flag: the old `config` is copied verbatim, but only when no `-f`/`--set` was given.
    Default,
    /// `--reuse-values`: old config under the new values, and the *old* coalesced values
    /// replace the new chart's defaults.
    ReuseValues,
    /// `--reset-then-reuse-values` (Helm ≥ 3.14): old config under the new values, new chart
    /// defaults kept.
    ResetThenReuseValues,
    /// `--reset-values`: the old config is ignored.
    ResetValues,
}

/// Merges `src` into `dst`; `dst` is authoritative (Helm's `CoalesceTables`).
///
/// * key only in `src`: copied into `dst` (including a `null`);
/// * `null` in `dst` over a non-null `src` value: the key is deleted from `dst`
///   (this is how `--set key=null` removes a default);
/// * `null` in `dst` over a `null` (or absent) `src` value: kept;
/// * both maps: merged recursively;
/// * anything else: `dst` wins unchanged (Helm logs a type-mismatch warning when one side
///   is a map and the other a non-null scalar).
pub fn coalesce_tables(dst: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (key, val) in src {
        match dst.get_mut(key) {
            None => {
                dst.insert(key.clone(), val.clone());
            }
            Some(Value::Null) => {
                // Helm: `ok && !merge && dv == nil && srcOriginalNonNil[key]` → delete.
                if !val.is_null() {
                    dst.remove(key);
                }
            }
            Some(Value::Object(dv)) => {
                if let Value::Object(sv) = val {
                    coalesce_tables(dv, sv);
                }
                // A non-map `src` under a map `dst`: Helm warns and keeps `dst`.
            }
            Some(_) => {
                // Scalar or array in `dst` wins; a map in `src` under a scalar `dst` is
                // ignored with a warning in Helm.
            }
        }
    }
}

/// Owned variant of [`coalesce_tables`] for values held as `serde_json::Value`s; a non-object
/// side is treated as an empty map, as Helm treats a nil map.
pub fn coalesce_table_values(dst: &Value, src: &Value) -> Value {
    let mut out = as_map(dst);
    if let Value::Object(src) = src {
        coalesce_tables(&mut out, src);
    }
    Value::Object(out)
}

/// `chartutil.CoalesceValues(chart, config)` for a chart without loaded subcharts: the values a
/// template would see (before `.Release`/`.Capabilities` are added), user `config` over the
/// chart's `values`.
pub fn coalesce_values(chart_values: &Value, config: &Value) -> Value {
    // CoalesceValues deep-copies `vals` first and turns a nil map into an empty one.
    let mut v = as_map(config);
    let Value::Object(chart) = chart_values else {
        return Value::Object(v);
    };
    // `coalesceValues(printf, chart, v, "", false)`: iterate over the chart's defaults.
    for (key, val) in chart {
        match v.get_mut(key) {
            Some(Value::Null) => {
                // "When the YAML value is null and we are coalescing instead of merging,
                // we remove the value's key" — whatever the chart default is.
                v.remove(key);
            }
            Some(Value::Object(dest)) => {
                if let Value::Object(src) = val {
                    // Top-level chart (prefix ""), no dependencies: merge stays false and no
                    // nil-cleaning of the chart default happens.
                    coalesce_tables(dest, src);
                }
                // A map over a scalar/null default: Helm keeps the user's map.
            }
            Some(_) => {}
            None => {
                v.insert(key.clone(), val.clone());
            }
        }
    }
    Value::Object(v)
}

/// `Upgrade.reuseValues`: returns `(stored_config, stored_chart_values)` of the new revision.
///
/// * `current_config`, `current_chart_values`: `config` and `chart.values` of the revision
///   being upgraded (Helm's `current`: the last `deployed` revision, else the last one).
/// * `new_chart_values`: the new chart's `values.yaml` (as Helm would store it).
/// * `new_cli_values`: what `-f`/`--set`/... merged into (an empty map when none were given).
pub fn reuse_values(
    mode: UpgradeValues,
    current_config: &Value,
    current_chart_values: &Value,
    new_chart_values: &Value,
    new_cli_values: &Value,
) -> (Value, Value) {
    let new_vals = Value::Object(as_map(new_cli_values));
    match mode {
        UpgradeValues::ResetValues => (new_vals, new_chart_values.clone()),
        UpgradeValues::ReuseValues => {
            // "We have to regenerate the old coalesced values" and they become the new
            // chart's values: the new chart's own defaults are discarded.
            let old_vals = coalesce_values(current_chart_values, current_config);
            let stored = coalesce_table_values(&new_vals, current_config);
            (stored, old_vals)
        }
        UpgradeValues::ResetThenReuseValues => (
            coalesce_table_values(&new_vals, current_config),
            new_chart_values.clone(),
        ),
        UpgradeValues::Default => {
            // `if len(newVals) == 0 && len(current.Config) > 0 { newVals = current.Config }`
            let cli_empty = new_vals.as_object().is_none_or(Map::is_empty);
            let old_nonempty = current_config.as_object().is_some_and(|m| !m.is_empty());
            if cli_empty && old_nonempty {
                (current_config.clone(), new_chart_values.clone())
            } else {
                (new_vals, new_chart_values.clone())
            }
        }
    }
}

fn as_map(v: &Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ct(dst: Value, src: Value) -> Value {
        coalesce_table_values(&dst, &src)
    }

    #[test]
    fn coalesce_tables_table() {
        // (name, dst, src, expected)
        let cases = [
            ("empty both", json!({}), json!({}), json!({})),
            (
                "missing keys copied from src",
                json!({"a": 1}),
                json!({"b": 2}),
                json!({"a": 1, "b": 2}),
            ),
            (
                "dst scalar wins",
                json!({"a": 1}),
                json!({"a": 2}),
                json!({"a": 1}),
            ),
            (
                "dst array replaces, never merges",
                json!({"a": [1]}),
                json!({"a": [1, 2, 3]}),
                json!({"a": [1]}),
            ),
            (
                "nested maps merge",
                json!({"image": {"tag": "11"}}),
                json!({"image": {"tag": "15", "repository": "bitnami/postgresql"}}),
                json!({"image": {"tag": "11", "repository": "bitnami/postgresql"}}),
            ),
            (
                "null in dst deletes a non-null src key",
                json!({"image": {"tag": null}}),
                json!({"image": {"tag": "15", "repository": "r"}}),
                json!({"image": {"repository": "r"}}),
            ),
            (
                "null in dst with no src key is kept",
                json!({"x": null}),
                json!({"y": 1}),
                json!({"x": null, "y": 1}),
            ),
            (
                "null over null is kept (Helm 4 / 3.20 srcOriginalNonNil rule)",
                json!({"x": null}),
                json!({"x": null}),
                json!({"x": null}),
            ),
            (
                "null in src copied when dst lacks the key",
                json!({}),
                json!({"x": null}),
                json!({"x": null}),
            ),
            (
                "null in src does not override dst",
                json!({"x": 1}),
                json!({"x": null}),
                json!({"x": 1}),
            ),
            (
                "map in src does not replace scalar in dst",
                json!({"image": "repo:1"}),
                json!({"image": {"tag": "2"}}),
                json!({"image": "repo:1"}),
            ),
            (
                "scalar in src does not replace map in dst",
                json!({"image": {"tag": "1"}}),
                json!({"image": "repo:2"}),
                json!({"image": {"tag": "1"}}),
            ),
            (
                "map in src fills a null dst? no: null deletes",
                json!({"image": null}),
                json!({"image": {"tag": "2"}}),
                json!({}),
            ),
            (
                "deep three levels",
                json!({"a": {"b": {"c": 1}}}),
                json!({"a": {"b": {"c": 2, "d": 3}, "e": 4}}),
                json!({"a": {"b": {"c": 1, "d": 3}, "e": 4}}),
            ),
            (
                "non-object src ignored",
                json!({"a": 1}),
                json!([1, 2]),
                json!({"a": 1}),
            ),
            (
                "non-object dst as empty",
                json!("x"),
                json!({"a": 1}),
                json!({"a": 1}),
            ),
        ];
        for (name, dst, src, want) in cases {
            assert_eq!(ct(dst, src), want, "{name}");
        }
    }

    #[test]
    fn coalesce_tables_does_not_touch_src() {
        let src = json!({"a": {"b": 1}});
        let before = src.clone();
        let _ = ct(json!({"a": {"b": null}, "c": null}), src.clone());
        assert_eq!(src, before);
    }

    #[test]
    fn coalesce_values_table() {
        // (name, chart values, config, expected)
        let cases = [
            (
                "defaults only",
                json!({"image": {"tag": "15"}}),
                json!({}),
                json!({"image": {"tag": "15"}}),
            ),
            (
                "config over defaults",
                json!({"image": {"tag": "15", "repository": "pg"}, "replicas": 1}),
                json!({"image": {"tag": "11"}}),
                json!({"image": {"tag": "11", "repository": "pg"}, "replicas": 1}),
            ),
            (
                "top-level null deletes even a null default",
                json!({"a": null, "b": 1}),
                json!({"a": null, "b": null}),
                json!({}),
            ),
            (
                "top-level null with no default kept",
                json!({}),
                json!({"a": null}),
                json!({"a": null}),
            ),
            (
                "nested null deletes default",
                json!({"image": {"digest": "sha256:aa", "tag": "1"}}),
                json!({"image": {"digest": null}}),
                json!({"image": {"tag": "1"}}),
            ),
            (
                "user map over scalar default kept",
                json!({"image": "pg:15"}),
                json!({"image": {"tag": "11"}}),
                json!({"image": {"tag": "11"}}),
            ),
            (
                "user scalar over map default kept",
                json!({"image": {"tag": "15"}}),
                json!({"image": "pg:11"}),
                json!({"image": "pg:11"}),
            ),
            (
                "null chart values",
                Value::Null,
                json!({"a": 1}),
                json!({"a": 1}),
            ),
            ("null config", json!({"a": 1}), Value::Null, json!({"a": 1})),
            (
                "subchart-shaped keys are plain maps here",
                json!({"cache": {"image": {"tag": "7.0"}}, "global": {"imageRegistry": ""}}),
                json!({"global": {"imageRegistry": "mirror.local"}}),
                json!({"cache": {"image": {"tag": "7.0"}}, "global": {"imageRegistry": "mirror.local"}}),
            ),
        ];
        for (name, chart, config, want) in cases {
            assert_eq!(coalesce_values(&chart, &config), want, "{name}");
        }
    }

    #[test]
    fn reuse_values_table() {
        let old_chart = json!({"image": {"repository": "pg", "tag": "11.0"}, "replicas": 1});
        let new_chart = json!({"image": {"repository": "pg", "tag": "15.0"}, "replicas": 1});
        let old_config = json!({"image": {"tag": "11.9"}, "auth": {"password": "x"}});
        let cli = json!({"replicas": 3});
        let none = json!({});
        use UpgradeValues::*;
        // (mode, cli, expected config, expected chart values)
        let cases = [
            (Default, &none, old_config.clone(), new_chart.clone()),
            (Default, &cli, cli.clone(), new_chart.clone()),
            (
                ReuseValues,
                &none,
                old_config.clone(),
                json!({"image": {"repository": "pg", "tag": "11.9"}, "replicas": 1,
                       "auth": {"password": "x"}}),
            ),
            (
                ReuseValues,
                &cli,
                json!({"image": {"tag": "11.9"}, "auth": {"password": "x"}, "replicas": 3}),
                json!({"image": {"repository": "pg", "tag": "11.9"}, "replicas": 1,
                       "auth": {"password": "x"}}),
            ),
            (
                ResetThenReuseValues,
                &none,
                old_config.clone(),
                new_chart.clone(),
            ),
            (
                ResetThenReuseValues,
                &cli,
                json!({"image": {"tag": "11.9"}, "auth": {"password": "x"}, "replicas": 3}),
                new_chart.clone(),
            ),
            (ResetValues, &none, json!({}), new_chart.clone()),
            (ResetValues, &cli, cli.clone(), new_chart.clone()),
        ];
        for (mode, cli, want_cfg, want_chart) in cases {
            let (cfg, chart) = reuse_values(mode, &old_config, &old_chart, &new_chart, cli);
            assert_eq!(cfg, want_cfg, "{mode:?} config, cli={cli}");
            assert_eq!(chart, want_chart, "{mode:?} chart values, cli={cli}");
        }
    }

    #[test]
    fn reuse_values_edge_cases() {
        let chart = json!({"image": {"tag": "15"}});
        // Default mode with an empty old config and no CLI values stores an empty config.
        let (cfg, _) = reuse_values(
            UpgradeValues::Default,
            &json!({}),
            &chart,
            &chart,
            &json!({}),
        );
        assert_eq!(cfg, json!({}));
        // Missing (null) old config behaves like an empty one.
        let (cfg, _) = reuse_values(
            UpgradeValues::ResetThenReuseValues,
            &Value::Null,
            &chart,
            &chart,
            &json!({"a": 1}),
        );
        assert_eq!(cfg, json!({"a": 1}));
        // `--set image.tag=null` with --reset-then-reuse-values drops a persisted pin.
        let (cfg, _) = reuse_values(
            UpgradeValues::ResetThenReuseValues,
            &json!({"image": {"tag": "11"}, "x": 1}),
            &chart,
            &chart,
            &json!({"image": {"tag": null}}),
        );
        assert_eq!(cfg, json!({"image": {}, "x": 1}));
        assert_eq!(
            coalesce_values(&chart, &cfg),
            json!({"image": {"tag": "15"}, "x": 1})
        );
    }
}
