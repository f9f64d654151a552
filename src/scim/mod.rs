//! The SCIM 2.0 service provider's core (RFC 7643, RFC 7644; docs/lifecycle.md): the
//! directory of provisioned Users and Groups of one IdP, held as JSON objects, and the
//! operations the HTTP layer (`api::scim`) maps to routes. Every operation takes `now` and
//! returns the resource to answer with plus the [`Transition`]s it caused: a user that
//! stopped being active (deactivated or deleted) must lose its devices and bindings, one that
//! became active again may get credentials again. This module decides; it does no I/O and
//! must not name the token API, the store or the location service.
//!
//! Bounds: at most `max_users` users and `max_groups` groups per provider (each resource is
//! at most one request body large), list pages of at most [`MAX_PAGE`] resources, filters and
//! paths of at most `filter::MAX_FILTER_BYTES`. A `password` attribute is never kept.

pub mod discovery;
pub mod filter;
pub mod patch;

use std::collections::HashMap;

use serde_json::{json, Map, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Most resources in one list page (a larger `count` is lowered to it, RFC 7644 §3.4.2.4).
pub const MAX_PAGE: usize = 200;
/// Longest `userName` or group `displayName`.
pub const MAX_NAME_BYTES: usize = 256;

/// An RFC 7644 §3.12 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    pub fn invalid_syntax(detail: &str) -> Self {
        Self::new(400, Some("invalidSyntax"), detail)
    }
    pub fn invalid_value(detail: &str) -> Self {
        Self::new(400, Some("invalidValue"), detail)
    }
    pub fn invalid_filter() -> Self {
        Self::new(
            400,
            Some("invalidFilter"),
            "only `attribute eq \"value\"` comparisons joined by `and` are supported",
        )
    }
    pub fn invalid_path() -> Self {
        Self::new(400, Some("invalidPath"), "the path is not supported")
    }
    pub fn no_target(detail: &str) -> Self {
        Self::new(400, Some("noTarget"), detail)
    }
    pub fn uniqueness(detail: &str) -> Self {
        Self::new(409, Some("uniqueness"), detail)
    }
    pub fn mutability(detail: &str) -> Self {
        Self::new(400, Some("mutability"), detail)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(404, None, format!("{what} not found"))
    }
    pub fn unauthorized() -> Self {
        Self::new(401, None, "a valid SCIM bearer token is required")
    }

    /// The error body.
    pub fn body(&self) -> Value {
        let mut v = json!({"schemas": [ERROR_SCHEMA], "status": self.status.to_string(), "detail": self.detail});
        if let Some(t) = self.scim_type {
            v["scimType"] = json!(t);
        }
        v
    }
}

/// Who a SCIM user is on the token API side: the mapping (`user_match`) picks the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub user_name: String,
    pub external_id: Option<String>,
}

/// What a change means for the user's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Deactivated or deleted: revoke every device and binding, refuse new credentials.
    Deprovision(Subject),
    /// Active again (or re-created): credentials may be issued again.
    Reactivate(Subject),
}

/// A change's result: the resource to answer with (`None` for DELETE) and its transitions.
#[derive(Debug, Default)]
pub struct Changed {
    pub resource: Option<Value>,
    pub transitions: Vec<Transition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
    fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }
    fn schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }
}

#[derive(Debug, Clone)]
struct Resource {
    attrs: Map<String, Value>,
    created: u64,
    modified: u64,
    version: u64,
}

/// One provider's Users and Groups.
#[derive(Debug)]
pub struct Directory {
    users: HashMap<String, Resource>,
    /// Lowercased `userName` → id (`userName` is unique, case-insensitively: RFC 7643 §4.1.1).
    user_names: HashMap<String, String>,
    groups: HashMap<String, Resource>,
    max_users: usize,
    max_groups: usize,
}

/// The attribute names SCIM clients send in varying case, canonical spelling.
const CORE_NAMES: &[&str] = &[
    "userName",
    "externalId",
    "active",
    "displayName",
    "name",
    "emails",
    "phoneNumbers",
    "addresses",
    "title",
    "nickName",
    "profileUrl",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "members",
    "roles",
    "entitlements",
    "ims",
    "photos",
    "x509Certificates",
];
/// Read-only or server-set attributes a client's body may carry and we ignore.
const IGNORED: &[&str] = &["schemas", "id", "meta", "groups", "password"];

/// The canonical spelling of a core attribute name (others as given).
pub fn canonical(name: &str) -> String {
    CORE_NAMES
        .iter()
        .find(|c| c.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |c| (*c).to_owned())
}

/// The key of `o` that equals `name` case-insensitively (attribute names are, RFC 7643 §2.1).
pub fn find_key(o: &Map<String, Value>, name: &str) -> Option<String> {
    o.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

fn rfc3339(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A body's attributes, canonical and without what the server sets.
fn attributes(body: &Value) -> Result<Map<String, Value>, ScimError> {
    let o = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the body is not a JSON object"))?;
    Ok(o.iter()
        .filter(|(k, _)| !IGNORED.iter().any(|i| i.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (canonical(k), v.clone()))
        .collect())
}

/// `active` as a boolean: JSON `true`/`false`, or Entra's strings `"True"`/`"False"`.
fn normalise_active(attrs: &mut Map<String, Value>) -> Result<bool, ScimError> {
    let active = match attrs.get("active") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(_) => return Err(ScimError::invalid_value("active must be a boolean")),
    };
    attrs.insert("active".into(), Value::Bool(active));
    Ok(active)
}

fn string_attr(attrs: &Map<String, Value>, name: &str) -> Result<Option<String>, ScimError> {
    match attrs.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_NAME_BYTES => Ok(Some(s.clone())),
        Some(_) => Err(ScimError::invalid_value(&format!(
            "{name} must be a string of at most {MAX_NAME_BYTES} bytes"
        ))),
    }
}

fn subject(attrs: &Map<String, Value>) -> Subject {
    Subject {
        user_name: attrs
            .get("userName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        external_id: attrs
            .get("externalId")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

fn active(attrs: &Map<String, Value>) -> bool {
    attrs.get("active") != Some(&Value::Bool(false))
}

/// The transitions between a user's state before (`None`: did not exist) and after (`None`:
/// deleted). A subject is refused while its user is inactive, and after its user is deleted
/// (until a user with that subject is created active again).
fn transitions(before: Option<(Subject, bool)>, after: Option<(Subject, bool)>) -> Vec<Transition> {
    let blocked_before = before.as_ref().filter(|(_, a)| !a).map(|(s, _)| s);
    let blocked_after = match &after {
        None => before.as_ref().map(|(s, _)| s),
        Some((s, a)) => (!a).then_some(s),
    };
    let mut out = Vec::new();
    if let Some(s) = blocked_before {
        if blocked_after != Some(s) {
            out.push(Transition::Reactivate(s.clone()));
        }
    }
    if let Some((s, true)) = &after {
        let unchanged = before.as_ref().is_some_and(|(b, a)| *a && b == s);
        if !unchanged && blocked_before != Some(s) {
            out.push(Transition::Reactivate(s.clone()));
        }
    }
    if let Some(s) = blocked_after {
        if blocked_before != Some(s) {
            out.push(Transition::Deprovision(s.clone()));
        }
    }
    out
}

impl Directory {
    pub fn new(max_users: usize, max_groups: usize) -> Directory {
        Directory {
            users: HashMap::new(),
            user_names: HashMap::new(),
            groups: HashMap::new(),
            max_users,
            max_groups,
        }
    }

    fn map(&self, kind: Kind) -> &HashMap<String, Resource> {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    /// The resource as answered: schemas, id, attributes, (users) groups, meta.
    fn render(&self, kind: Kind, id: &str, r: &Resource, excluded: &[String]) -> Value {
        let mut o = Map::new();
        let mut schemas = vec![Value::String(kind.schema().into())];
        schemas.extend(
            r.attrs
                .keys()
                .filter(|k| k.starts_with("urn:"))
                .map(|k| Value::String(k.clone())),
        );
        o.insert("schemas".into(), Value::Array(schemas));
        o.insert("id".into(), Value::String(id.into()));
        for (k, v) in &r.attrs {
            if !excluded.iter().any(|e| e.eq_ignore_ascii_case(k)) {
                o.insert(k.clone(), v.clone());
            }
        }
        if kind == Kind::User && !excluded.iter().any(|e| e.eq_ignore_ascii_case("groups")) {
            let groups: Vec<Value> = self
                .groups
                .iter()
                .filter(|(_, g)| members(&g.attrs).any(|m| m == id))
                .map(|(gid, g)| json!({"value": gid, "display": g.attrs.get("displayName"), "type": "direct"}))
                .collect();
            if !groups.is_empty() {
                o.insert("groups".into(), Value::Array(groups));
            }
        }
        o.insert(
            "meta".into(),
            json!({
                "resourceType": kind.as_str(),
                "created": rfc3339(r.created),
                "lastModified": rfc3339(r.modified),
                "location": format!("/scim/v2/{}/{id}", kind.endpoint()),
                "version": format!("W/\"{}\"", r.version),
            }),
        );
        Value::Object(o)
    }

    pub fn get(&self, kind: Kind, id: &str, excluded: &[String]) -> Result<Value, ScimError> {
        let r = self
            .map(kind)
            .get(id)
            .ok_or_else(|| ScimError::not_found(kind.as_str()))?;
        Ok(self.render(kind, id, r, excluded))
    }

    /// A ListResponse: `filter` (the supported subset), 1-based `start_index`, `count`.
    pub fn list(
        &self,
        kind: Kind,
        filter: Option<&str>,
        start_index: usize,
        count: Option<usize>,
        excluded: &[String],
    ) -> Result<Value, ScimError> {
        let filter = match filter {
            Some(f) => Some(filter::parse_filter(f).ok_or_else(ScimError::invalid_filter)?),
            None => None,
        };
        let mut hits: Vec<(&String, &Resource)> = self
            .map(kind)
            .iter()
            .filter(|(id, r)| {
                filter.as_ref().is_none_or(|f| {
                    f.0.iter().all(|eq| {
                        let actual = if eq.attr.eq_ignore_ascii_case("id") {
                            Some(id.as_str())
                        } else {
                            find_key(&r.attrs, &eq.attr)
                                .and_then(|k| r.attrs.get(&k))
                                .and_then(Value::as_str)
                        };
                        // userName is case-insensitive; other strings compare exactly.
                        actual.is_some_and(|a| match eq.attr.eq_ignore_ascii_case("userName") {
                            true => a.eq_ignore_ascii_case(&eq.value),
                            false => a == eq.value,
                        })
                    })
                })
            })
            .collect();
        hits.sort_by_key(|(_, r)| (r.created, r.version));
        let total = hits.len();
        let start = start_index.max(1);
        let count = count.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        let page: Vec<Value> = hits
            .into_iter()
            .skip(start - 1)
            .take(count)
            .map(|(id, r)| self.render(kind, id, r, excluded))
            .collect();
        Ok(json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": page.len(),
            "Resources": page,
        }))
    }

    /// Checks a user's attributes after a create, replace or patch; `id` is the user's own id.
    fn check_user(
        &self,
        attrs: &mut Map<String, Value>,
        id: Option<&str>,
    ) -> Result<(), ScimError> {
        normalise_active(attrs)?;
        let Some(name) = string_attr(attrs, "userName")?.filter(|n| !n.trim().is_empty()) else {
            return Err(ScimError::invalid_value("userName is required"));
        };
        string_attr(attrs, "externalId")?;
        if let Some(other) = self.user_names.get(&name.to_lowercase()) {
            if Some(other.as_str()) != id {
                return Err(ScimError::uniqueness("userName is taken"));
            }
        }
        Ok(())
    }

    fn check_group(&self, attrs: &mut Map<String, Value>) -> Result<(), ScimError> {
        if string_attr(attrs, "displayName")?.is_none_or(|n| n.trim().is_empty()) {
            return Err(ScimError::invalid_value("displayName is required"));
        }
        match attrs.get("members") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                if items.len() > self.max_users {
                    return Err(ScimError::invalid_value("too many members"));
                }
                for m in items {
                    let Some(v) = m.get("value").and_then(Value::as_str) else {
                        return Err(ScimError::invalid_value("a member needs a value"));
                    };
                    if !self.users.contains_key(v) {
                        return Err(ScimError::invalid_value("a member is not a known user"));
                    }
                }
            }
            Some(_) => return Err(ScimError::invalid_value("members must be an array")),
        }
        Ok(())
    }

    pub fn create(&mut self, kind: Kind, body: &Value, now: u64) -> Result<Changed, ScimError> {
        let mut attrs = attributes(body)?;
        match kind {
            Kind::User => {
                if self.users.len() >= self.max_users {
                    return Err(ScimError::invalid_value(
                        "the directory holds max_users users",
                    ));
                }
                self.check_user(&mut attrs, None)?;
            }
            Kind::Group => {
                if self.groups.len() >= self.max_groups {
                    return Err(ScimError::invalid_value(
                        "the directory holds max_groups groups",
                    ));
                }
                self.check_group(&mut attrs)?;
            }
        }
        let id = new_id();
        let r = Resource {
            attrs,
            created: now,
            modified: now,
            version: 1,
        };
        self.store(kind, id, r, None)
    }

    /// Puts `r` under `id` and reports the transitions from `before`.
    fn store(
        &mut self,
        kind: Kind,
        id: String,
        r: Resource,
        before: Option<(Subject, bool)>,
    ) -> Result<Changed, ScimError> {
        let mut transitions_out = Vec::new();
        if kind == Kind::User {
            let after = subject(&r.attrs);
            if let Some((old, _)) = &before {
                self.user_names.remove(&old.user_name.to_lowercase());
            }
            self.user_names
                .insert(after.user_name.to_lowercase(), id.clone());
            transitions_out = transitions(before, Some((after, active(&r.attrs))));
        }
        let resource = self.render(kind, &id, &r, &[]);
        match kind {
            Kind::User => self.users.insert(id, r),
            Kind::Group => self.groups.insert(id, r),
        };
        Ok(Changed {
            resource: Some(resource),
            transitions: transitions_out,
        })
    }

    fn existing(&self, kind: Kind, id: &str) -> Result<Resource, ScimError> {
        self.map(kind)
            .get(id)
            .cloned()
            .ok_or_else(|| ScimError::not_found(kind.as_str()))
    }

    /// PUT: the body replaces every attribute.
    pub fn replace(
        &mut self,
        kind: Kind,
        id: &str,
        body: &Value,
        now: u64,
    ) -> Result<Changed, ScimError> {
        let old = self.existing(kind, id)?;
        let mut attrs = attributes(body)?;
        self.finish(kind, id, old, &mut attrs, now)
    }

    /// PATCH: RFC 7644 §3.5.2 operations on a copy, kept only when all apply.
    pub fn patch(
        &mut self,
        kind: Kind,
        id: &str,
        body: &Value,
        now: u64,
    ) -> Result<Changed, ScimError> {
        let old = self.existing(kind, id)?;
        let mut attrs = old.attrs.clone();
        patch::apply(&mut attrs, body)?;
        for ignored in IGNORED {
            if let Some(k) = find_key(&attrs, ignored) {
                attrs.remove(&k);
            }
        }
        self.finish(kind, id, old, &mut attrs, now)
    }

    fn finish(
        &mut self,
        kind: Kind,
        id: &str,
        old: Resource,
        attrs: &mut Map<String, Value>,
        now: u64,
    ) -> Result<Changed, ScimError> {
        match kind {
            Kind::User => self.check_user(attrs, Some(id))?,
            Kind::Group => self.check_group(attrs)?,
        }
        let before = (kind == Kind::User).then(|| (subject(&old.attrs), active(&old.attrs)));
        let r = Resource {
            attrs: std::mem::take(attrs),
            created: old.created,
            modified: now,
            version: old.version + 1,
        };
        self.store(kind, id.to_owned(), r, before)
    }

    pub fn delete(&mut self, kind: Kind, id: &str) -> Result<Changed, ScimError> {
        let old = match kind {
            Kind::User => self.users.remove(id),
            Kind::Group => self.groups.remove(id),
        }
        .ok_or_else(|| ScimError::not_found(kind.as_str()))?;
        let mut out = Changed::default();
        if kind == Kind::User {
            let s = subject(&old.attrs);
            self.user_names.remove(&s.user_name.to_lowercase());
            for g in self.groups.values_mut() {
                if let Some(Value::Array(items)) = g.attrs.get_mut("members") {
                    items.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
                }
            }
            out.transitions = transitions(Some((s, active(&old.attrs))), None);
        }
        Ok(out)
    }

    /// The displayNames of the groups the user named `user_name` is a member of (roles).
    pub fn groups_of(&self, user_name: &str) -> Vec<String> {
        let Some(id) = self.user_names.get(&user_name.to_lowercase()) else {
            return Vec::new();
        };
        self.groups
            .values()
            .filter(|g| members(&g.attrs).any(|m| m == id))
            .filter_map(|g| g.attrs.get("displayName").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }
}

fn members(attrs: &Map<String, Value>) -> impl Iterator<Item = &str> {
    attrs
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("value").and_then(Value::as_str))
}

#[cfg(test)]
mod tests;
