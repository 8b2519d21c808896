//! Temporary stand-in until the real port of Helm's coalesce rules lands.
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeValues {
    Default,
    ReuseValues,
    ResetThenReuseValues,
    ResetValues,
}

pub fn coalesce_tables(dst: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Object(d)), Value::Object(s)) => coalesce_tables(d, s),
            (Some(_), _) => {}
            (None, v) => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

pub fn coalesce_values(chart_values: &Value, config: &Value) -> Value {
    let mut out = config.as_object().cloned().unwrap_or_default();
    if let Some(c) = chart_values.as_object() {
        coalesce_tables(&mut out, c);
    }
    Value::Object(out)
}

pub fn reuse_values(
    mode: UpgradeValues,
    current_config: &Value,
    current_chart_values: &Value,
    new_chart_values: &Value,
    new_cli_values: &Value,
) -> (Value, Value) {
    let empty = |v: &Value| v.as_object().is_none_or(|m| m.is_empty());
    let merged = || {
        let mut n = new_cli_values.as_object().cloned().unwrap_or_default();
        if let Some(c) = current_config.as_object() {
            coalesce_tables(&mut n, c);
        }
        Value::Object(n)
    };
    match mode {
        UpgradeValues::ResetValues => (new_cli_values.clone(), new_chart_values.clone()),
        UpgradeValues::ReuseValues => (merged(), coalesce_values(current_chart_values, current_config)),
        UpgradeValues::ResetThenReuseValues => (merged(), new_chart_values.clone()),
        UpgradeValues::Default if empty(new_cli_values) && !empty(current_config) => {
            (current_config.clone(), new_chart_values.clone())
        }
        UpgradeValues::Default => (new_cli_values.clone(), new_chart_values.clone()),
    }
}
