//! The RFC 7644 §4 discovery documents: `ServiceProviderConfig`, `ResourceTypes` and
//! `Schemas`, stating what this service provider does (PATCH yes; bulk, sort, change
//! password and ETags no; filter in the `eq`/`and` subset with at most `MAX_PAGE` results).

use serde_json::{json, Value};

use super::{GROUP_SCHEMA, LIST_SCHEMA, MAX_PAGE, USER_SCHEMA};

const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RT_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

pub fn service_provider_config() -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/sipward/sipward/blob/main/docs/lifecycle.md",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_PAGE},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "A static bearer token per identity provider (scim.token_file)",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": "/scim/v2/ServiceProviderConfig"},
    })
}

fn resource_type(name: &str) -> Value {
    let (endpoint, schema, extensions) = match name {
        "User" => (
            "/Users",
            USER_SCHEMA,
            json!([{"schema": ENTERPRISE_SCHEMA, "required": false}]),
        ),
        _ => ("/Groups", GROUP_SCHEMA, json!([])),
    };
    json!({
        "schemas": [RT_SCHEMA],
        "id": name,
        "name": name,
        "endpoint": endpoint,
        "schema": schema,
        "schemaExtensions": extensions,
        "meta": {"resourceType": "ResourceType", "location": format!("/scim/v2/ResourceTypes/{name}")},
    })
}

pub fn resource_types(id: Option<&str>) -> Option<Value> {
    match id {
        Some(n @ ("User" | "Group")) => Some(resource_type(n)),
        Some(_) => None,
        None => Some(list(vec![resource_type("User"), resource_type("Group")])),
    }
}

fn attr(name: &str, kind: &str, multi: bool, required: bool, uniqueness: &str) -> Value {
    json!({
        "name": name, "type": kind, "multiValued": multi, "required": required,
        "caseExact": false, "mutability": "readWrite", "returned": "default",
        "uniqueness": uniqueness,
    })
}

fn schema(id: &str) -> Option<Value> {
    let (name, attributes) = match id {
        USER_SCHEMA => (
            "User",
            vec![
                attr("userName", "string", false, true, "server"),
                attr("externalId", "string", false, false, "none"),
                attr("active", "boolean", false, false, "none"),
                attr("displayName", "string", false, false, "none"),
                attr("name", "complex", false, false, "none"),
                attr("emails", "complex", true, false, "none"),
                json!({"name": "groups", "type": "complex", "multiValued": true, "required": false,
                       "caseExact": false, "mutability": "readOnly", "returned": "default", "uniqueness": "none"}),
            ],
        ),
        GROUP_SCHEMA => (
            "Group",
            vec![
                attr("displayName", "string", false, true, "none"),
                attr("externalId", "string", false, false, "none"),
                attr("members", "complex", true, false, "none"),
            ],
        ),
        ENTERPRISE_SCHEMA => (
            "EnterpriseUser",
            vec![
                attr("employeeNumber", "string", false, false, "none"),
                attr("department", "string", false, false, "none"),
            ],
        ),
        _ => return None,
    };
    Some(json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": id,
        "name": name,
        "attributes": attributes,
        "meta": {"resourceType": "Schema", "location": format!("/scim/v2/Schemas/{id}")},
    }))
}

pub fn schemas(id: Option<&str>) -> Option<Value> {
    match id {
        Some(id) => schema(id),
        None => Some(list(
            [USER_SCHEMA, GROUP_SCHEMA, ENTERPRISE_SCHEMA]
                .iter()
                .filter_map(|s| schema(s))
                .collect(),
        )),
    }
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}
