//! RFC 7644 §3.5.2 PATCH on a resource held as a JSON object, with the request shapes of
//! Entra ID and Okta: operation names in any case (`Replace`), `path`-less `add`/`replace`
//! whose value object may use paths as keys (`"name.givenName"`, an extension URN with the
//! attribute), `active` as the string `"True"`/`"False"` (normalised by the caller),
//! `emails[type eq "work"].value` that adds the element when none matches, and `remove` of
//! `members` with a value list (Entra) or a `members[value eq "…"]` path (Okta).

use serde_json::{Map, Value};

use super::filter::{parse_path, Path};
use super::{canonical, find_key, ScimError};

/// Operations in one PATCH at most.
pub const MAX_OPERATIONS: usize = 1000;

pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Applies a PatchOp body to `resource`. On error `resource` may be partly changed: callers
/// patch a copy and keep it only on success.
pub fn apply(resource: &mut Map<String, Value>, body: &Value) -> Result<(), ScimError> {
    let body = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the body is not a JSON object"))?;
    let ops = find_key(body, "Operations")
        .and_then(|k| body.get(&k))
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("Operations is missing or not an array"))?;
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::invalid_value("too many operations"));
    }
    for op in ops {
        let op = op
            .as_object()
            .ok_or_else(|| ScimError::invalid_syntax("an operation is not an object"))?;
        let name = field(op, "op")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| ScimError::invalid_syntax("an operation has no op"))?;
        let kind = match name.as_str() {
            "add" => Kind::Add,
            "replace" => Kind::Replace,
            "remove" => Kind::Remove,
            _ => {
                return Err(ScimError::invalid_syntax(
                    "op is not add, replace or remove",
                ))
            }
        };
        let value = field(op, "value");
        match field(op, "path").and_then(Value::as_str) {
            Some(text) => {
                let path = parse_path(text).ok_or_else(ScimError::invalid_path)?;
                at_path(resource, kind, &path, value)?;
            }
            None => {
                if kind == Kind::Remove {
                    return Err(ScimError::no_target("remove needs a path"));
                }
                let object = value.and_then(Value::as_object).ok_or_else(|| {
                    ScimError::invalid_value("an operation without path needs an object value")
                })?;
                for (key, v) in object {
                    if key.contains('.') || (key.starts_with("urn:") && is_attr_path(key)) {
                        let path = parse_path(key).ok_or_else(ScimError::invalid_path)?;
                        at_path(resource, kind, &path, Some(v))?;
                    } else {
                        let path = Path {
                            attr: key.clone(),
                            urn: None,
                            select: None,
                            sub: None,
                        };
                        at_path(resource, kind, &path, Some(v))?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Replace,
    Remove,
}

fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    find_key(o, name).and_then(|k| o.get(&k))
}

/// A key of a path-less value object that names an extension attribute
/// (`urn:…:User:department`), not a whole extension object (`urn:…:User`).
fn is_attr_path(key: &str) -> bool {
    key.rsplit(':')
        .next()
        .is_some_and(|last| last.chars().next().is_some_and(char::is_lowercase))
}

fn at_path(
    resource: &mut Map<String, Value>,
    kind: Kind,
    path: &Path,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let container: &mut Map<String, Value> = match &path.urn {
        Some(urn)
            if !urn.eq_ignore_ascii_case(super::USER_SCHEMA)
                && !urn.eq_ignore_ascii_case(super::GROUP_SCHEMA) =>
        {
            let key = find_key(resource, urn).unwrap_or_else(|| urn.clone());
            let entry = resource
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
            entry
                .as_object_mut()
                .ok_or_else(|| ScimError::invalid_value("the extension is not an object"))?
        }
        _ => resource,
    };
    let attr = find_key(container, &path.attr).unwrap_or_else(|| canonical(&path.attr));
    let need = |v: Option<&Value>| {
        v.cloned()
            .ok_or_else(|| ScimError::invalid_value("add and replace need a value"))
    };
    match (&path.select, &path.sub) {
        (None, None) => match kind {
            Kind::Remove => match (container.get_mut(&attr), value) {
                (Some(Value::Array(items)), Some(Value::Array(gone))) => {
                    items.retain(|e| !gone.iter().any(|g| same_value(e, g)));
                }
                _ => {
                    container.remove(&attr);
                }
            },
            Kind::Add => {
                let v = need(value)?;
                match (container.get_mut(&attr), v) {
                    (Some(Value::Array(items)), Value::Array(more)) => {
                        for m in more {
                            if !items.iter().any(|e| same_value(e, &m)) {
                                items.push(m);
                            }
                        }
                    }
                    (Some(Value::Object(o)), Value::Object(more)) => o.extend(more),
                    (_, v) => {
                        container.insert(attr, v);
                    }
                }
            }
            Kind::Replace => {
                let v = need(value)?;
                match (container.get_mut(&attr), v) {
                    (Some(Value::Object(o)), Value::Object(more)) => o.extend(more),
                    (_, v) => {
                        container.insert(attr, v);
                    }
                }
            }
        },
        (None, Some(sub)) => {
            if kind == Kind::Remove {
                if let Some(Value::Object(o)) = container.get_mut(&attr) {
                    if let Some(k) = find_key(o, sub) {
                        o.remove(&k);
                    }
                }
                return Ok(());
            }
            let v = need(value)?;
            let entry = container
                .entry(attr)
                .or_insert_with(|| Value::Object(Map::new()));
            let o = entry.as_object_mut().ok_or_else(ScimError::invalid_path)?;
            let k = find_key(o, sub).unwrap_or_else(|| sub.clone());
            o.insert(k, v);
        }
        (Some(select), sub) => {
            let entry = container
                .entry(attr)
                .or_insert_with(|| Value::Array(Vec::new()));
            let items = entry.as_array_mut().ok_or_else(ScimError::invalid_path)?;
            let matches = |e: &Value| {
                e.as_object().is_some_and(|o| {
                    field(o, &select.attr)
                        .and_then(Value::as_str)
                        .is_some_and(|s| s == select.value)
                })
            };
            match (kind, sub) {
                (Kind::Remove, None) => items.retain(|e| !matches(e)),
                (Kind::Remove, Some(sub)) => {
                    for e in items.iter_mut().filter(|e| matches(e)) {
                        if let Some(o) = e.as_object_mut() {
                            if let Some(k) = find_key(o, sub) {
                                o.remove(&k);
                            }
                        }
                    }
                }
                (_, sub) => {
                    let v = need(value)?;
                    let mut hit = false;
                    for e in items.iter_mut().filter(|e| matches(e)) {
                        hit = true;
                        let o = e.as_object_mut().ok_or_else(ScimError::invalid_path)?;
                        match (sub, &v) {
                            (Some(sub), v) => {
                                let k = find_key(o, sub).unwrap_or_else(|| sub.clone());
                                o.insert(k, v.clone());
                            }
                            (None, Value::Object(more)) => o.extend(more.clone()),
                            (None, _) => {
                                return Err(ScimError::invalid_value(
                                    "a filtered path without a sub-attribute needs an object",
                                ))
                            }
                        }
                    }
                    if !hit {
                        let mut o = Map::new();
                        o.insert(select.attr.clone(), Value::String(select.value.clone()));
                        match (sub, v) {
                            (Some(sub), v) => {
                                o.insert(sub.clone(), v);
                            }
                            (None, Value::Object(more)) => o.extend(more),
                            (None, _) => return Err(ScimError::no_target("no element matches")),
                        }
                        items.push(Value::Object(o));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Multi-valued elements are the same when their `value` sub-attributes are (members, emails);
/// otherwise when equal.
fn same_value(a: &Value, b: &Value) -> bool {
    match (
        a.get("value").and_then(Value::as_str),
        b.get("value").and_then(Value::as_str),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(start: Value, ops: Value) -> Value {
        let mut m = start.as_object().unwrap().clone();
        apply(
            &mut m,
            &json!({"schemas": [PATCH_SCHEMA], "Operations": ops}),
        )
        .unwrap();
        Value::Object(m)
    }

    #[test]
    fn entra_shapes() {
        let v = patched(
            json!({"userName": "a", "active": true}),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        );
        assert_eq!(v["active"], "False", "normalised by the caller");
        let v = patched(
            json!({"userName": "a"}),
            json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "a@x"},
                   {"op": "Replace", "value": {"name.givenName": "Al", "displayName": "Al B"}},
                   {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"}]),
        );
        assert_eq!(v["emails"][0], json!({"type": "work", "value": "a@x"}));
        assert_eq!(v["name"]["givenName"], "Al");
        assert_eq!(v["displayName"], "Al B");
        assert_eq!(
            v["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            "R&D"
        );
        let v = patched(
            json!({"members": [{"value": "u1"}, {"value": "u2"}]}),
            json!([{"op": "Remove", "path": "members", "value": [{"value": "u1"}]}]),
        );
        assert_eq!(v["members"], json!([{"value": "u2"}]));
    }

    #[test]
    fn okta_shapes() {
        let v = patched(
            json!({"userName": "a", "active": true}),
            json!([{"op": "replace", "value": {"active": false}}]),
        );
        assert_eq!(v["active"], false);
        let v = patched(
            json!({"members": [{"value": "u1"}]}),
            json!([{"op": "add", "path": "members", "value": [{"value": "u2", "display": "b"}, {"value": "u1"}]},
                   {"op": "remove", "path": "members[value eq \"u1\"]"}]),
        );
        assert_eq!(v["members"], json!([{"value": "u2", "display": "b"}]));
    }

    #[test]
    fn bad_operations_are_scim_errors() {
        let mut m = Map::new();
        for (body, scim_type) in [
            (
                json!({"Operations": [{"op": "move", "path": "a"}]}),
                "invalidSyntax",
            ),
            (json!({"Operations": [{"op": "remove"}]}), "noTarget"),
            (
                json!({"Operations": [{"op": "add", "path": "a[", "value": 1}]}),
                "invalidPath",
            ),
            (
                json!({"Operations": [{"op": "add", "value": 1}]}),
                "invalidValue",
            ),
            (json!({"nothing": 1}), "invalidSyntax"),
        ] {
            let e = apply(&mut m, &body).unwrap_err();
            assert_eq!(e.scim_type, Some(scim_type), "{body}");
            assert_eq!(e.status, 400);
        }
    }
}
