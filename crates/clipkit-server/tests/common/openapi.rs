//! A small JSON Schema validator for the subset utoipa generates (OpenAPI 3.1: `$ref`,
//! `type` including lists with `null`, `properties`/`required`/`additionalProperties`,
//! `items`, `oneOf`/`anyOf`/`allOf`, `enum`, `minimum`), enough to check that every response
//! the server sends is one its spec documents.

use serde_json::Value;

pub struct Spec {
    doc: Value,
}

impl Spec {
    pub fn new(doc: Value) -> Self {
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "not an OpenAPI 3 document"
        );
        Self { doc }
    }

    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// Checks `body` against the JSON schema documented for this response. Routes the spec
    /// does not have (a 404 for an unknown path, a 405) are checked against `ErrorBody`.
    pub fn check(
        &self,
        method: &str,
        route: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), String> {
        let Some(operation) = self.doc["paths"].get(route).and_then(|p| p.get(method)) else {
            if status >= 400 {
                return self.validate(
                    &serde_json::json!({"$ref": "#/components/schemas/ErrorBody"}),
                    body,
                    "$",
                );
            }
            return Err(format!("{method} {route} is not in the spec"));
        };
        let response = operation["responses"]
            .get(status.to_string())
            .or_else(|| operation["responses"].get("default"))
            .ok_or_else(|| format!("status {status} is not documented for {method} {route}"))?;
        let schema = response["content"]["application/json"]
            .get("schema")
            .ok_or_else(|| format!("{method} {route} {status} documents no JSON body"))?;
        self.validate(schema, body, "$")
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> Result<&'a Value, String> {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .ok_or_else(|| format!("unsupported $ref {r}"))?;
                let target = &self.doc["components"]["schemas"][name];
                if target.is_null() {
                    return Err(format!("dangling $ref {r}"));
                }
                self.resolve(target)
            }
            None => Ok(schema),
        }
    }

    pub fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        if schema.as_bool() == Some(true) || schema.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(());
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.validate(s, value, at)?;
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(|s| self.validate(s, value, at).is_ok()) {
                return Err(format!("{at}: matches none of anyOf"));
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let n = one
                .iter()
                .filter(|s| self.validate(s, value, at).is_ok())
                .count();
            if n != 1 {
                return Err(format!("{at}: matches {n} of oneOf, not exactly one"));
            }
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{at}: odd type {t}")),
            };
            if !types.iter().any(|ty| has_type(value, ty)) {
                return Err(format!("{at}: {value} is not of type {types:?}"));
            }
        }
        if let Some(e) = schema.get("enum").and_then(Value::as_array) {
            if !e.contains(value) {
                return Err(format!("{at}: {value} is not one of {e:?}"));
            }
        }
        if let (Some(min), Some(v)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) {
            if v < min {
                return Err(format!("{at}: {v} is below the minimum {min}"));
            }
        }
        if let Some(obj) = value.as_object() {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !obj.contains_key(r) {
                        return Err(format!("{at}: missing required `{r}`"));
                    }
                }
            }
            for (k, v) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => self.validate(s, v, &format!("{at}.{k}"))?,
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return Err(format!("{at}: `{k}` is not documented"))
                        }
                        Some(s @ Value::Object(_)) => self.validate(s, v, &format!("{at}.{k}"))?,
                        // Objects with declared properties must not carry undocumented ones.
                        _ if props.is_some() => {
                            return Err(format!("{at}: `{k}` is not documented"))
                        }
                        _ => {}
                    },
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
            for (i, v) in arr.iter().enumerate() {
                self.validate(items, v, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}

fn has_type(value: &Value, ty: &str) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}
