/*!
JSON arrays as Python's `json.dump(w.tolist())` writes them.

A document is either a list of arrays (`layer.get_weights()` order) or an object of named arrays. Each array
is a rectangular nesting of number lists. serde_json limits recursion depth, so hostile nesting is an error,
not a stack overflow. Python's non-standard `NaN`/`Infinity` tokens are accepted, as `json.dump` writes them.
*/

use super::RawArray;
use serde_json::Value;

/// What the top level of a JSON weights document holds.
pub enum Document {
    /// `[kernel, recurrent_kernel, bias]` style: arrays in order.
    List(Vec<RawArray>),
    /// `{"kernel": ..., ...}` style: arrays by name, in document order.
    Named(Vec<(String, RawArray)>),
}

/// Parses a JSON document of arrays.
pub fn parse(bytes: &[u8]) -> Result<Document, String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err("file is empty; expected JSON".into());
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text =
        std::str::from_utf8(bytes).map_err(|_| "is not UTF-8 text; expected JSON".to_string())?;
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(first) => {
            // Python's json.dump writes NaN, Infinity and -Infinity; standard JSON has no such tokens.
            let patched = replace_python_tokens(text);
            serde_json::from_str(&patched).map_err(|_| format!("is not valid JSON: {first}"))?
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => {
            Err("is an empty JSON list; expected arrays".into())
        }
        Value::Array(items) if items.is_empty() => {
            Err("is an empty JSON list; expected arrays".into())
        }
        Value::Array(items) => {
            if items.iter().all(|v| v.is_number() || is_special(v)) {
                // A single flat array, e.g. a bias on its own.
                return Ok(Document::List(vec![to_array(
                    &Value::Array(items),
                    "array",
                )?]));
            }
            let arrays = items
                .iter()
                .enumerate()
                .map(|(i, v)| to_array(v, &format!("array #{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Document::List(arrays))
        }
        Value::Object(map) => {
            let mut named = Vec::with_capacity(map.len());
            for (k, v) in map.iter() {
                named.push((k.clone(), to_array(v, &format!("'{k}'"))?));
            }
            Ok(Document::Named(named))
        }
        other => Err(format!(
            "top level is a {}; expected a list of arrays or an object of named arrays",
            kind(&other)
        )),
    }
}

const NAN_TOKEN: &str = "\"__rnntrace_nan__\"";
const INF_TOKEN: &str = "\"__rnntrace_inf__\"";
const NINF_TOKEN: &str = "\"__rnntrace_ninf__\"";

fn replace_python_tokens(text: &str) -> String {
    text.replace("-Infinity", NINF_TOKEN)
        .replace("Infinity", INF_TOKEN)
        .replace("NaN", NAN_TOKEN)
}

fn special_value(v: &Value) -> Option<f64> {
    match v.as_str()? {
        "__rnntrace_nan__" => Some(f64::NAN),
        "__rnntrace_inf__" => Some(f64::INFINITY),
        "__rnntrace_ninf__" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn is_special(v: &Value) -> bool {
    special_value(v).is_some()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// Converts a rectangular nesting of lists of numbers into an array.
pub fn to_array(v: &Value, label: &str) -> Result<RawArray, String> {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Value::Array(items) = cur {
        shape.push(items.len());
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    let mut data = Vec::new();
    flatten(v, &shape, 0, label, &mut data)?;
    Ok(RawArray::new(shape, data, "json"))
}

fn flatten(
    v: &Value,
    shape: &[usize],
    depth: usize,
    label: &str,
    out: &mut Vec<f64>,
) -> Result<(), String> {
    match v {
        Value::Array(items) => {
            if depth >= shape.len() || items.len() != shape[depth] {
                return Err(format!(
                    "{label} is ragged: lists at depth {depth} have different lengths"
                ));
            }
            for item in items {
                flatten(item, shape, depth + 1, label, out)?;
            }
            Ok(())
        }
        Value::Number(n) if depth == shape.len() => {
            out.push(n.as_f64().unwrap_or(f64::NAN));
            Ok(())
        }
        other if depth == shape.len() && is_special(other) => {
            out.push(special_value(other).unwrap_or(f64::NAN));
            Ok(())
        }
        Value::Number(_) => Err(format!(
            "{label} is ragged: a number stands where a list was expected"
        )),
        other => Err(format!(
            "{label} holds a {} where a number was expected",
            kind(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_nan_tokens_are_read() {
        let Document::List(a) = parse(b"[[1.0, NaN], [-Infinity, 2]]").unwrap() else {
            panic!()
        };
        assert!(a[0].data[1].is_nan() && a[1].data[0] == f64::NEG_INFINITY);
    }

    #[test]
    fn ragged_and_deep_nesting_are_errors() {
        assert!(parse(b"[[[1, 2], [3]]]").is_err());
        assert!(parse(b"{\"kernel\": [[1, 2], [3, \"x\"]]}").is_err());
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
