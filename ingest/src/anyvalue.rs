//! Rendering OTLP `AnyValue`s as the text stored in attribute maps and log
//! bodies: strings as-is, ints in decimal, booleans `true`/`false`, bytes in
//! base64 and arrays / key-value lists as JSON.

use arrow::array::{MapBuilder, StringBuilder};
use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use serde_json::{Map, Number, Value as Json};

pub type AttrBuilder = MapBuilder<StringBuilder, StringBuilder>;

pub fn new_attr_builder() -> AttrBuilder {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

/// The text form of a value; `None` for an empty `AnyValue`.
pub fn to_text(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::IntValue(i) => Some(i.to_string()),
        // A string-table index only means something inside profiles.
        Value::StringValueStrindex(i) => Some(i.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        Value::BytesValue(b) => Some(base64::engine::general_purpose::STANDARD.encode(b)),
        v @ (Value::ArrayValue(_) | Value::KvlistValue(_)) => Some(value_to_json(v).to_string()),
    }
}

/// The JSON form of a value, nesting arrays and maps natively.
pub fn to_json(value: Option<&AnyValue>) -> Json {
    match value.and_then(|v| v.value.as_ref()) {
        Some(v) => value_to_json(v),
        None => Json::Null,
    }
}

fn value_to_json(value: &Value) -> Json {
    match value {
        Value::StringValue(s) => Json::String(s.clone()),
        Value::BoolValue(b) => Json::Bool(*b),
        Value::IntValue(i) => Json::Number((*i).into()),
        Value::StringValueStrindex(i) => Json::Number((*i).into()),
        Value::DoubleValue(d) => Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(d.to_string())),
        Value::BytesValue(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::ArrayValue(a) => Json::Array(a.values.iter().map(|v| to_json(Some(v))).collect()),
        Value::KvlistValue(kv) => attributes_json(&kv.values),
    }
}

/// Key-value pairs as a JSON object (used inside span events and links).
pub fn attributes_json(attrs: &[KeyValue]) -> Json {
    let mut map = Map::with_capacity(attrs.len());
    for kv in attrs {
        map.insert(kv.key.clone(), to_json(kv.value.as_ref()));
    }
    Json::Object(map)
}

/// A value on its way to the text stored for it: the common scalar types
/// borrowed as they are, anything else already rendered. Read the same way
/// from a decoded `AnyValue` and from one still in the protobuf body.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Text<'a> {
    #[default]
    Null,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Rendered(String),
}

impl<'a> Text<'a> {
    pub fn of(value: Option<&'a AnyValue>) -> Text<'a> {
        match value.and_then(|v| v.value.as_ref()) {
            None => Text::Null,
            Some(Value::StringValue(s)) => Text::Str(s),
            Some(Value::BoolValue(b)) => Text::Bool(*b),
            Some(Value::IntValue(i)) => Text::Int(*i),
            Some(Value::DoubleValue(d)) => Text::Double(*d),
            Some(_) => to_text(value).map_or(Text::Null, Text::Rendered),
        }
    }
}

/// Appends the text form of a value ([`to_text`]), or null for an empty
/// one, writing straight into `builder`: attribute values are most of what
/// ingest converts, and a `String` per value was a tenth of span ingest.
pub fn append(builder: &mut StringBuilder, text: &Text<'_>) {
    use std::fmt::Write;
    match text {
        Text::Null => builder.append_null(),
        Text::Str(s) => builder.append_value(s),
        Text::Bool(b) => builder.append_value(if *b { "true" } else { "false" }),
        Text::Int(i) => {
            // Writing to a builder cannot fail: it only extends a buffer.
            let _ = write!(builder, "{i}");
            builder.append_value("");
        }
        Text::Double(d) => {
            let _ = write!(builder, "{d}");
            builder.append_value("");
        }
        Text::Rendered(text) => builder.append_value(text),
    }
}

/// Appends one row's attributes (as one map entry list) to `builder`.
pub fn append_attributes<'a>(
    builder: &mut AttrBuilder,
    attrs: impl IntoIterator<Item = &'a KeyValue>,
) {
    append_pairs(
        builder,
        attrs
            .into_iter()
            .map(|kv| (kv.key.as_str(), Text::of(kv.value.as_ref()))),
    );
}

/// Appends one row's attributes, given as keys and [`Text`]s.
pub fn append_pairs<'t, T: std::borrow::Borrow<Text<'t>>>(
    builder: &mut AttrBuilder,
    pairs: impl IntoIterator<Item = (&'t str, T)>,
) {
    for (key, text) in pairs {
        builder.keys().append_value(key);
        append(builder.values(), text.borrow());
    }
    // Appending a non-null map can only fail if keys and values disagree in
    // length, which the two appends above rule out.
    let _ = builder.append(true);
}

/// The `service` column: the `service.name` resource attribute, or
/// `unknown_service` when it is absent or empty (see the README).
pub fn service_name(resource_attrs: &[KeyValue]) -> String {
    resource_attrs
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| to_text(kv.value.as_ref()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown_service".to_string())
}

/// The `instance` column: the first `service.instance.id` resource
/// attribute as text, as `resource_attributes['service.instance.id']`
/// reads it; none when absent.
pub fn instance_id(resource_attrs: &[KeyValue]) -> Option<String> {
    resource_attrs
        .iter()
        .find(|kv| kv.key == loupe_storage::INSTANCE_KEY)
        .and_then(|kv| to_text(kv.value.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn av(v: Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    #[test]
    fn renders_every_value_type_as_text() {
        let cases = [
            (Value::StringValue("x".into()), "x"),
            (Value::BoolValue(true), "true"),
            (Value::IntValue(-42), "-42"),
            (Value::DoubleValue(1.5), "1.5"),
            (Value::BytesValue(vec![1, 2, 255]), "AQL/"),
            (
                Value::ArrayValue(ArrayValue {
                    values: vec![av(Value::IntValue(1)), av(Value::StringValue("a".into()))],
                }),
                r#"[1,"a"]"#,
            ),
            (
                Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        value: Some(av(Value::BoolValue(false))),
                        ..Default::default()
                    }],
                }),
                r#"{"k":false}"#,
            ),
        ];
        let mut appended = StringBuilder::new();
        for (value, text) in &cases {
            assert_eq!(to_text(Some(&av(value.clone()))).as_deref(), Some(*text));
            append(&mut appended, &Text::of(Some(&av(value.clone()))));
        }
        assert_eq!(to_text(Some(&AnyValue { value: None })), None);
        append(&mut appended, &Text::of(Some(&AnyValue { value: None })));
        append(&mut appended, &Text::of(None));
        // Appended in place, the same texts, each its own row.
        let appended = appended.finish();
        let texts: Vec<Option<&str>> = appended.iter().collect();
        let mut expected: Vec<Option<&str>> = cases.iter().map(|(_, t)| Some(*t)).collect();
        expected.extend([None, None]);
        assert_eq!(texts, expected);
    }

    #[test]
    fn service_defaults_to_unknown_service() {
        assert_eq!(service_name(&[]), "unknown_service");
        let kv = KeyValue {
            key: "service.name".into(),
            value: Some(av(Value::StringValue("cart".into()))),
            ..Default::default()
        };
        assert_eq!(service_name(&[kv]), "cart");
    }
}
