//! Issue 20, the identity lifecycle. The SCIM 2.0 service provider: The Entra ID and Okta provisioning sequences
//! (as their SCIM documentation shows the requests) against the real binary, checked against
//! RFC 7644 (status codes, `meta`, `ListResponse`, error `schemas`/`status`/`scimType`); and
//! deprovisioning a user with three registered devices (real token exchanges with the test
//! IdP in `tests/idp`, real REGISTERs): every binding gone and every credential refused when
//! the SCIM response arrives, measured and reported. The audit trail: exactly one line per
//! action with the right actor and outcome, no token, password or raw `sub`, read back through
//! `GET /admin/v1/audit` with filters and cursor pages; break-glass use logged and counted.
//!
//! Without Node or `tests/idp/node_modules` the tests are skipped loudly, or fail when
//! `CI=true`.

mod common;
mod token;

use std::time::Instant;

use common::*;
use serde_json::{json, Value};
use token::*;

const SCIM_TOKEN: &str = "scim-token-for-the-test-idp-0123456789";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// A token server for `setup` with a `[[scim]]` entry for the test IdP; `binary`: the real
/// `sipward` binary, else in-process.
fn scim_server(idp: &Idp, setup: &Setup<'_>, binary: bool) -> TokenServer {
    scim_server_with(idp, setup, binary, "")
}

/// [`scim_server_with`] with `user_match` chosen.
fn scim_server_matching(idp: &Idp, setup: &Setup<'_>, user_match: &str) -> TokenServer {
    scim_server_with(idp, setup, false, &format!("#user_match={user_match}"))
}

/// [`scim_server`] with `extra` config text appended (e.g. an `[audit]` section; `{dir}` is
/// the server's folder), or, when `extra` is `#user_match=…`, that `user_match` instead.
fn scim_server_with(idp: &Idp, setup: &Setup<'_>, binary: bool, extra: &str) -> TokenServer {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("scim.token");
    std::fs::write(&token_file, format!("{SCIM_TOKEN}\n")).unwrap();
    let ports = match binary {
        true => {
            let port = free_port();
            Ports {
                udp: port,
                tcp: port,
                http: free_port(),
            }
        }
        false => Ports::default(),
    };
    let mut config = config_text(&idp.issuer, setup, dir.path(), ports);
    config.push_str(&format!(
        "\n[[scim]]\nissuer = \"test-idp\"\ntoken_file = \"{}\"\nuser_match = \"user_name\"\n",
        token_file.display()
    ));
    if let Some(m) = extra.strip_prefix("#user_match=") {
        config = config.replace(
            "user_match = \"user_name\"",
            &format!("user_match = \"{m}\""),
        );
    } else {
        config.push_str(&extra.replace("{dir}", &dir.path().display().to_string()));
    }
    let path = dir.path().join("sipward.toml");
    std::fs::write(&path, &config).unwrap();
    let server = match binary {
        true => Server::start_with_file(path, dir, ports.udp, ports.http, None),
        false => Server::in_process(path, dir),
    };
    TokenServer { server, config }
}

fn scim(s: &TokenServer, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
    scim_as(s, Some(SCIM_TOKEN), method, path, body)
}

fn scim_as(
    s: &TokenServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/scim+json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    http(s.server.http, method, path, &headers, &body)
}

/// An RFC 7644 §3.12 error: the status, the Error schema, `status` as a string, `scimType`.
fn assert_error(r: &HttpResponse, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/scim+json"));
    let v = r.json();
    assert_eq!(v["schemas"], json!([ERROR]), "{v}");
    assert_eq!(v["status"], status.to_string());
    assert_eq!(v["scimType"].as_str(), scim_type, "{v}");
}

/// A resource answer: status, content type, schemas, id, `meta` of RFC 7643 §3.1.
fn assert_resource(r: &HttpResponse, status: u16, kind: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/scim+json"));
    let v = r.json();
    let schema = if kind == "User" { USER } else { GROUP };
    assert!(
        v["schemas"].as_array().unwrap().contains(&json!(schema)),
        "{v}"
    );
    let id = v["id"].as_str().expect("id");
    let meta = &v["meta"];
    assert_eq!(meta["resourceType"], kind);
    assert!(
        meta["location"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{id}")),
        "{meta}"
    );
    for t in ["created", "lastModified"] {
        let text = meta[t].as_str().unwrap();
        assert!(text.len() >= 20 && text.contains('T'), "{t}: {text}");
    }
    assert!(meta["version"].as_str().unwrap().starts_with("W/\""));
    v
}

fn assert_list(r: &HttpResponse, total: usize) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["schemas"], json!([LIST]));
    assert_eq!(v["totalResults"], total, "{v}");
    assert_eq!(v["startIndex"], 1);
    assert_eq!(v["itemsPerPage"], v["Resources"].as_array().unwrap().len());
    v
}

fn filter(attr: &str, value: &str) -> String {
    // `userName eq "…"` with the spaces and quotes percent-encoded, as the IdPs send it.
    format!("{attr}%20eq%20%22{}%22", value.replace('@', "%40"))
}

#[test]
fn entra_and_okta_provisioning_sequences_conform_to_rfc7644() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = scim_server(&idp, &Setup::default(), true);

    // Authentication: none, or a wrong token, is 401 with a SCIM error.
    let r = scim_as(&s, None, "GET", "/scim/v2/Users", None);
    assert_error(&r, 401, None);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert_error(
        &scim_as(
            &s,
            Some("wrong-token-0123456789abcdef"),
            "GET",
            "/scim/v2/Users",
            None,
        ),
        401,
        None,
    );
    assert_error(
        &scim_as(&s, Some(ADMIN_TOKEN), "GET", "/scim/v2/Users", None),
        401,
        None,
    );

    // Discovery.
    let r = scim(&s, "GET", "/scim/v2/ServiceProviderConfig", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let spc = r.json();
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["filter"]["supported"], true);
    assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let rt = assert_list(&scim(&s, "GET", "/scim/v2/ResourceTypes", None), 2);
    assert_eq!(rt["Resources"][0]["endpoint"], "/Users");
    assert_eq!(
        scim(&s, "GET", "/scim/v2/ResourceTypes/Group", None).json()["schema"],
        GROUP
    );
    assert_list(&scim(&s, "GET", "/scim/v2/Schemas", None), 3);
    let r = scim(&s, "GET", &format!("/scim/v2/Schemas/{USER}"), None);
    assert_eq!(r.json()["attributes"][0]["name"], "userName");
    assert_error(
        &scim(&s, "GET", "/scim/v2/Schemas/urn:nope", None),
        404,
        None,
    );

    // ---- Entra ID (learn.microsoft.com: "Tutorial: Develop a sample SCIM endpoint", the
    // request/response examples of the provisioning service) ----
    let name = "Test_User_ab6490ee@example.test";
    assert_list(
        &scim(
            &s,
            "GET",
            &format!("/scim/v2/Users?filter={}", filter("userName", name)),
            None,
        ),
        0,
    );
    let create = json!({
        "schemas": [USER, ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": name,
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": "Test_User_fd0ea19b@example.test"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": [],
        ENTERPRISE: {"department": "Sales"},
    });
    let user = assert_resource(
        &scim(&s, "POST", "/scim/v2/Users", Some(&create)),
        201,
        "User",
    );
    let id = user["id"].as_str().unwrap().to_owned();
    assert_eq!(user["userName"], name);
    assert_eq!(user["active"], true);
    assert_eq!(user[ENTERPRISE]["department"], "Sales");
    assert_error(
        &scim(&s, "POST", "/scim/v2/Users", Some(&create)),
        409,
        Some("uniqueness"),
    );
    let l = assert_list(
        &scim(
            &s,
            "GET",
            &format!("/scim/v2/Users?filter={}", filter("userName", name)),
            None,
        ),
        1,
    );
    assert_eq!(l["Resources"][0]["id"], id.as_str());
    assert_list(
        &scim(
            &s,
            "GET",
            &format!(
                "/scim/v2/Users?filter={}",
                filter("externalId", "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef")
            ),
            None,
        ),
        1,
    );
    assert_resource(
        &scim(&s, "GET", &format!("/scim/v2/Users/{id}"), None),
        200,
        "User",
    );
    assert_error(
        &scim(&s, "GET", "/scim/v2/Users/5171a35d82074e068ce2", None),
        404,
        None,
    );
    assert_error(
        &scim(
            &s,
            "GET",
            "/scim/v2/Users?filter=userName%20sw%20%22T%22",
            None,
        ),
        400,
        Some("invalidFilter"),
    );
    // Update: filtered path, path-less replace with dotted keys.
    let r = scim(
        &s,
        "PATCH",
        &format!("/scim/v2/Users/{id}"),
        Some(&json!({
            "schemas": [PATCH],
            "Operations": [
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@example.test"},
                {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
                {"op": "Replace", "value": {"displayName": "Updated Name", "name.givenName": "updatedGiven"}},
            ]
        })),
    );
    let v = assert_resource(&r, 200, "User");
    assert_eq!(v["emails"][0]["value"], "updatedEmail@example.test");
    assert_eq!(v["name"]["familyName"], "updatedFamilyName");
    assert_eq!(v["name"]["givenName"], "updatedGiven");
    assert_eq!(v["displayName"], "Updated Name");
    assert_ne!(v["meta"]["version"], user["meta"]["version"]);
    // Deactivate and reactivate with Entra's string booleans.
    let set_active = |value: &str| json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": value}]});
    let v = assert_resource(
        &scim(
            &s,
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(&set_active("False")),
        ),
        200,
        "User",
    );
    assert_eq!(v["active"], false);
    let v = assert_resource(
        &scim(
            &s,
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(&set_active("True")),
        ),
        200,
        "User",
    );
    assert_eq!(v["active"], true);
    // Groups: query by displayName without members, create, add and remove a member.
    assert_list(
        &scim(
            &s,
            "GET",
            &format!(
                "/scim/v2/Groups?excludedAttributes=members&filter={}",
                filter("displayName", "Group1DisplayName")
            ),
            None,
        ),
        0,
    );
    let g = assert_resource(
        &scim(
            &s,
            "POST",
            "/scim/v2/Groups",
            Some(&json!({
                "schemas": [GROUP], "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                "displayName": "Group1DisplayName", "meta": {"resourceType": "Group"}, "members": []
            })),
        ),
        201,
        "Group",
    );
    let gid = g["id"].as_str().unwrap().to_owned();
    let r = scim(
        &s,
        "PATCH",
        &format!("/scim/v2/Groups/{gid}"),
        Some(&json!({
            "schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"$ref": null, "value": id}]}]
        })),
    );
    let v = assert_resource(&r, 200, "Group");
    assert_eq!(v["members"][0]["value"], id.as_str());
    let v = scim(&s, "GET", &format!("/scim/v2/Users/{id}"), None).json();
    assert_eq!(v["groups"][0]["value"], gid.as_str(), "{v}");
    let l = assert_list(
        &scim(
            &s,
            "GET",
            &format!(
                "/scim/v2/Groups?excludedAttributes=members&filter={}",
                filter("displayName", "Group1DisplayName")
            ),
            None,
        ),
        1,
    );
    assert!(l["Resources"][0].get("members").is_none(), "{l}");
    let r = scim(
        &s,
        "PATCH",
        &format!("/scim/v2/Groups/{gid}"),
        Some(&json!({
            "schemas": [PATCH], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": id}]}]
        })),
    );
    assert_eq!(assert_resource(&r, 200, "Group")["members"], json!([]));
    assert_error(
        &scim(
            &s,
            "PATCH",
            &format!("/scim/v2/Groups/{gid}"),
            Some(&json!({
                "schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"value": "no-such-user"}]}]
            })),
        ),
        400,
        Some("invalidValue"),
    );
    assert_error(
        &scim(
            &s,
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(&json!({
                "schemas": [PATCH], "Operations": [{"op": "Remove"}]
            })),
        ),
        400,
        Some("noTarget"),
    );
    let r = scim_as(&s, Some(SCIM_TOKEN), "POST", "/scim/v2/Users", None);
    assert_error(&r, 400, Some("invalidSyntax"));
    // Delete.
    let r = scim(&s, "DELETE", &format!("/scim/v2/Users/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(r.body.is_empty());
    assert_error(
        &scim(&s, "GET", &format!("/scim/v2/Users/{id}"), None),
        404,
        None,
    );
    assert_error(
        &scim(&s, "DELETE", &format!("/scim/v2/Users/{id}"), None),
        404,
        None,
    );
    assert_eq!(
        scim(&s, "DELETE", &format!("/scim/v2/Groups/{gid}"), None).status,
        204
    );

    // ---- Okta (developer.okta.com: "SCIM 2.0 protocol reference", the request shapes) ----
    let okta_name = "isaac.brock@example.test";
    assert_list(
        &scim(
            &s,
            "GET",
            &format!(
                "/scim/v2/Users?filter={}&startIndex=1&count=100",
                filter("userName", okta_name)
            ),
            None,
        ),
        0,
    );
    let create = json!({
        "schemas": [USER], "userName": okta_name,
        "name": {"givenName": "Isaac", "familyName": "Brock"},
        "emails": [{"primary": true, "value": okta_name, "type": "work"}],
        "displayName": "Isaac Brock", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [], "password": "1mz050nq", "active": true
    });
    let user = assert_resource(
        &scim(&s, "POST", "/scim/v2/Users", Some(&create)),
        201,
        "User",
    );
    assert!(
        user.get("password").is_none(),
        "a password is never kept or echoed"
    );
    let id = user["id"].as_str().unwrap().to_owned();
    assert_resource(
        &scim(&s, "GET", &format!("/scim/v2/Users/{id}"), None),
        200,
        "User",
    );
    let mut put = create.clone();
    put["id"] = json!(id);
    put["name"]["familyName"] = json!("Brock2");
    let v = assert_resource(
        &scim(&s, "PUT", &format!("/scim/v2/Users/{id}"), Some(&put)),
        200,
        "User",
    );
    assert_eq!(v["name"]["familyName"], "Brock2");
    assert!(v.get("password").is_none());
    let okta_active = |active: bool| json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": active}}]});
    let v = assert_resource(
        &scim(
            &s,
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(&okta_active(false)),
        ),
        200,
        "User",
    );
    assert_eq!(v["active"], false);
    let v = assert_resource(
        &scim(
            &s,
            "PATCH",
            &format!("/scim/v2/Users/{id}"),
            Some(&okta_active(true)),
        ),
        200,
        "User",
    );
    assert_eq!(v["active"], true);
    // Group push: create with members, rename, remove a member by filter, delete.
    let g = assert_resource(
        &scim(
            &s,
            "POST",
            "/scim/v2/Groups",
            Some(&json!({
                "schemas": [GROUP], "displayName": "Test SCIMv2",
                "members": [{"value": id, "display": okta_name}]
            })),
        ),
        201,
        "Group",
    );
    let gid = g["id"].as_str().unwrap().to_owned();
    let v = assert_resource(
        &scim(
            &s,
            "PATCH",
            &format!("/scim/v2/Groups/{gid}"),
            Some(&json!({
                "schemas": [PATCH], "Operations": [{"op": "replace", "value": {"id": gid, "displayName": "Test SCIMv2 renamed"}}]
            })),
        ),
        200,
        "Group",
    );
    assert_eq!(v["displayName"], "Test SCIMv2 renamed");
    assert_eq!(v["id"], gid.as_str());
    let v = assert_resource(
        &scim(
            &s,
            "PATCH",
            &format!("/scim/v2/Groups/{gid}"),
            Some(&json!({
                "schemas": [PATCH], "Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]
            })),
        ),
        200,
        "Group",
    );
    assert_eq!(v["members"], json!([]));
    assert_list(&scim(&s, "GET", "/scim/v2/Groups", None), 1);
    assert_eq!(
        scim(&s, "DELETE", &format!("/scim/v2/Groups/{gid}"), None).status,
        204
    );
    assert_eq!(
        scim(&s, "DELETE", &format!("/scim/v2/Users/{id}"), None).status,
        204
    );
    assert_list(&scim(&s, "GET", "/scim/v2/Users", None), 0);
    assert!(
        !s.server.stderr().contains(SCIM_TOKEN),
        "the token is never logged"
    );
}

#[test]
fn scim_deactivation_removes_every_binding_and_refuses_every_credential_at_once() {
    let setup = Setup {
        // No leeway: a token minted a second after the reactivation is newer than the revoke.
        token_api: "leeway_secs = 0",
        ..Setup::default()
    };
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = scim_server(&idp, &setup, false);
    let user = scim(
        &s,
        "POST",
        "/scim/v2/Users",
        Some(&json!({
            "schemas": [USER], "userName": "alice@example.test", "externalId": "alice", "active": true
        })),
    );
    assert_eq!(user.status, 201, "{}", user.body);
    let id = user.json()["id"].as_str().unwrap().to_owned();

    let token = idp.token_for("alice");
    let creds: Vec<Credential> = ["laptop", "phone", "desk"]
        .iter()
        .map(|d| s.credential(&token, d))
        .collect();
    let mut clients = Vec::new();
    for (n, cred) in creds.iter().enumerate() {
        let mut c = Client::new(Proto::Udp, s.server.udp);
        let mut reg = Register::new("alice");
        reg.contact = Some(format!("<sip:alice@127.0.0.1:{}>", 5100 + n));
        assert_eq!(
            register_with(&mut c, &reg, cred, "SHA-256", None).status(),
            200
        );
        clients.push((c, reg));
    }
    assert_eq!(s.bindings_of("alice").len(), 3);
    // bob is not touched.
    let bob = s.credential(&idp.token_for("bob"), "bob-phone");

    let off = json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    let r = scim(&s, "PATCH", &format!("/scim/v2/Users/{id}"), Some(&off));
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{}", r.body);
    // Checked once each, no retry: the state must already hold when the response arrives.
    let bindings = s.bindings_of("alice");
    let bindings_checked = answered.elapsed();
    assert!(bindings.is_empty(), "{bindings:?}");
    for ((c, reg), cred) in clients.iter_mut().zip(&creds) {
        reg.cseq += 2;
        let r = register_with(c, reg, cred, "SHA-256", None);
        assert_eq!(r.status(), 401, "a deprovisioned device: {}", r.text);
    }
    let registers_checked = answered.elapsed();
    eprintln!(
        "FIGURE scim deactivation: bindings checked empty {:.1} ms and 3 REGISTERs refused {:.1} ms after the SCIM response",
        bindings_checked.as_secs_f64() * 1e3,
        registers_checked.as_secs_f64() * 1e3
    );
    // The bound of the issue is 100 ms; asserted generously (a loaded CI machine), the
    // figure above is the measurement.
    assert!(registers_checked.as_secs() < 5, "{registers_checked:?}");
    assert_eq!(s.metric("sipward_devices_revoked_total{by=\"scim\"}"), 3.0);
    assert_eq!(
        s.metric("sipward_devices_active"),
        1.0,
        "bob's device stays"
    );
    // New credentials are refused, even with a token minted after the revoke time (which
    // the store's revoke cutoff alone would let through).
    let deprovisioned_at = now();
    while now() <= deprovisioned_at {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = s.exchange(&idp.token_for("alice"), "laptop");
    assert_eq!(r.status, 403, "{}", r.body);
    // bob still registers.
    let mut c = Client::new(Proto::Udp, s.server.udp);
    assert_eq!(
        register_with(&mut c, &Register::new("bob"), &bob, "MD5", None).status(),
        200
    );

    // Reactivated: a token minted after the revoke gets a credential again.
    let on =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": true}}]});
    assert_eq!(
        scim(&s, "PATCH", &format!("/scim/v2/Users/{id}"), Some(&on)).status,
        200
    );
    let revoked_at = now();
    while now() <= revoked_at {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let fresh = s.credential(&idp.token_for("alice"), "laptop");
    let (c, reg) = &mut clients[0];
    reg.cseq += 2;
    assert_eq!(register_with(c, reg, &fresh, "SHA-256", None).status(), 200);

    // DELETE deprovisions too.
    let r = scim(&s, "DELETE", &format!("/scim/v2/Users/{id}"), None);
    assert_eq!(r.status, 204);
    assert!(s.bindings_of("alice").is_empty());
    assert_eq!(s.exchange(&idp.token_for("alice"), "phone").status, 403);
    assert_eq!(s.metric("sipward_devices_revoked_total{by=\"scim\"}"), 4.0);
}

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn every_action_writes_exactly_one_audit_line_with_its_actor_and_outcome() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = scim_server_with(
        &idp,
        &Setup::default(),
        false,
        "\n[audit]\nfile = \"{dir}/audit.log\"\n",
    );
    let path = std::path::PathBuf::from(
        s.config
            .lines()
            .find_map(|l| l.strip_prefix("file = \""))
            .unwrap()
            .trim_end_matches('"'),
    );
    let alice = idp.token_for("alice");
    let first = s.credential(&alice, "laptop");
    let renewed = s.credential(&alice, "laptop");
    assert_eq!(
        s.http("DELETE", "/v1/sip/devices/laptop", Some(&alice), "")
            .status,
        200
    );
    let bob = s.credential(&idp.token_for("bob"), "desk");
    let r = s.http(
        "POST",
        "/admin/v1/users/bob@example.test/revoke",
        Some(ADMIN_TOKEN),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let admin = idp.mint(
        "root",
        &Mint {
            groups: Some("sipward-admins"),
            ..Mint::default()
        },
    );
    let r = s.http(
        "POST",
        "/admin/v1/users/dave@example.test/revoke",
        Some(&admin),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let carol = scim(
        &s,
        "POST",
        "/scim/v2/Users",
        Some(&json!({"schemas": [USER], "userName": "carol"})),
    );
    assert_eq!(carol.status, 201);
    let carol_id = carol.json()["id"].as_str().unwrap().to_owned();
    let off =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": false}}]});
    assert_eq!(
        scim(
            &s,
            "PATCH",
            &format!("/scim/v2/Users/{carol_id}"),
            Some(&off)
        )
        .status,
        200
    );
    assert_eq!(s.exchange(&idp.token_for("carol"), "phone").status, 403);
    let r = scim(
        &s,
        "POST",
        "/scim/v2/Users",
        Some(&json!({"schemas": [USER], "userName": "CAROL"})),
    );
    assert_eq!(r.status, 409);

    let lines = audit_lines(&path);
    let of =
        |action: &str| -> Vec<&Value> { lines.iter().filter(|l| l["action"] == action).collect() };
    let user_actor = |l: &Value| {
        let a = l["actor"].as_str().unwrap();
        assert!(a.starts_with("user:test-idp:"), "{a}");
        a.to_owned()
    };
    let issue = of("credential.issue");
    assert_eq!(issue.len(), 3, "alice, bob, carol refused: {issue:?}");
    assert_eq!(
        (issue[0]["outcome"].as_str(), issue[0]["device"].as_str()),
        (Some("success"), Some("laptop"))
    );
    assert_eq!(issue[0]["target"], "sip:alice@example.test");
    assert_eq!(issue[1]["target"], "sip:bob@example.test");
    assert_eq!(issue[2]["outcome"], "refused", "carol after deprovisioning");
    assert_eq!(issue[2]["target"], "sip:carol@example.test");
    let renew = of("credential.renew");
    assert_eq!(renew.len(), 1);
    assert_eq!(
        user_actor(renew[0]),
        user_actor(issue[0]),
        "the same hashed subject"
    );
    let revoke = of("credential.revoke");
    assert_eq!(revoke.len(), 1);
    assert_eq!(
        (revoke[0]["outcome"].as_str(), revoke[0]["device"].as_str()),
        (Some("success"), Some("laptop"))
    );
    assert_eq!(user_actor(revoke[0]), user_actor(issue[0]));
    let user_revoke = of("user.revoke");
    assert_eq!(user_revoke.len(), 2);
    assert_eq!(user_revoke[0]["actor"], "admin-token");
    assert_eq!(user_revoke[0]["target"], "sip:bob@example.test");
    assert!(
        user_revoke[1]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin:test-idp:"),
        "{}",
        user_revoke[1]
    );
    let glass = of("admin.break_glass");
    assert_eq!(glass.len(), 1, "only the admin-token request: {glass:?}");
    assert_eq!(glass[0]["target"], "revoke_user");
    assert_eq!(of("scim.user.create").len(), 2);
    assert_eq!(of("scim.user.create")[1]["outcome"], "refused");
    let patch = of("scim.user.patch");
    assert_eq!(patch.len(), 1);
    assert_eq!(
        (patch[0]["actor"].as_str(), patch[0]["target"].as_str()),
        (Some("scim:test-idp"), Some(carol_id.as_str()))
    );
    let deprovision = of("user.deprovision");
    assert_eq!(deprovision.len(), 1);
    assert_eq!(deprovision[0]["actor"], "scim:test-idp");
    assert!(
        of("user.reactivate").is_empty(),
        "creating a user lifts nothing"
    );
    for l in &lines {
        assert!(l["time"].as_str().unwrap().contains('T'));
        assert!(!l["request_id"].as_str().unwrap().is_empty());
        for raw_sub in [
            "user:test-idp:alice",
            "user:test-idp:bob",
            "user:test-idp:root",
        ] {
            assert_ne!(l["actor"], raw_sub);
        }
    }
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [
        alice.as_str(),
        &admin,
        ADMIN_TOKEN,
        SCIM_TOKEN,
        &first.password,
        &renewed.password,
        &bob.password,
    ] {
        assert!(
            !text.contains(secret),
            "a token or password in the audit trail"
        );
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The reader: filters, cursor pages, who may read.
    let r = s.http(
        "GET",
        "/admin/v1/audit?action=credential.issue&outcome=refused",
        Some(&admin),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let mut cursor = 0u64;
    let mut paged = 0;
    loop {
        let r = s.http(
            "GET",
            &format!("/admin/v1/audit?limit=3&cursor={cursor}"),
            Some(&admin),
            "",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        paged += v["items"].as_array().unwrap().len();
        match v["next_cursor"].as_u64() {
            Some(c) => cursor = c,
            None => break,
        }
    }
    // Each page's own role decision is written before it reads: the last page ends at the
    // file's end.
    assert_eq!(paged, audit_lines(&path).len());
    assert_eq!(
        s.http("GET", "/admin/v1/audit", Some(&idp.token_for("alice")), "")
            .status,
        403
    );
    assert_eq!(s.http("GET", "/admin/v1/audit", None, "").status, 401);
    let before = s.metric("sipward_admin_break_glass_total");
    assert_eq!(
        s.http(
            "GET",
            "/admin/v1/audit?action=admin.break_glass",
            Some(ADMIN_TOKEN),
            ""
        )
        .status,
        200
    );
    assert_eq!(s.metric("sipward_admin_break_glass_total"), before + 1.0);
    assert_eq!(
        of("admin.break_glass").len() + 1,
        audit_lines(&path)
            .iter()
            .filter(|l| l["action"] == "admin.break_glass")
            .count()
    );
    assert!(s.server.stderr().contains("break-glass"), "logged at WARN");
}

/// The test IdP sends a logout token (`o` overrides its claims) to the server; returns the
/// server's status.
fn idp_logout(idp: &Idp, s: &TokenServer, o: Value) -> (u16, String) {
    let mut body = o;
    body["target"] = json!(format!("http://{}/oidc/backchannel-logout", s.server.http));
    let r = http(
        idp.addr,
        "POST",
        "/test/lifecycle/backchannel-logout",
        &[("Content-Type", "application/json")],
        &body.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    (
        v["status"].as_u64().unwrap() as u16,
        v["jti"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn backchannel_logout_from_the_test_idp_revokes_and_bad_logout_tokens_are_refused() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = scim_server_with(
        &idp,
        &Setup::default(),
        false,
        "\n[audit]\nfile = \"{dir}/audit.log\"\n\n[[backchannel_logout]]\nissuer = \"test-idp\"\nrevoke_devices_on_logout = true\n",
    );
    let alice = idp.token_for("alice");
    let laptop = s.credential(&alice, "laptop");
    let _phone = s.credential(&alice, "phone");
    let bob = s.credential(&idp.token_for("bob"), "desk");
    let mut ca = Client::new(Proto::Udp, s.server.udp);
    let mut reg_a = Register::new("alice");
    assert_eq!(
        register_with(&mut ca, &reg_a, &laptop, "SHA-256", None).status(),
        200
    );
    let mut cb = Client::new(Proto::Udp, s.server.udp);
    let mut reg_b = Register::new("bob");
    assert_eq!(
        register_with(&mut cb, &reg_b, &bob, "SHA-256", None).status(),
        200
    );

    // Every bad logout token for bob is refused with 400 and revokes nothing.
    let bad = [
        (
            "wrong aud",
            json!({"sub": "bob", "aud": "some-other-client"}),
        ),
        (
            "nonce present",
            json!({"sub": "bob", "aud": "softphone", "nonce": "n-0S6_WzA2Mj"}),
        ),
        (
            "unsigned",
            json!({"sub": "bob", "aud": "softphone", "alg": "none"}),
        ),
        (
            "no events claim",
            json!({"sub": "bob", "aud": "softphone", "events": false}),
        ),
        ("neither sub nor sid", json!({"aud": "softphone"})),
        (
            "expired",
            json!({"sub": "bob", "aud": "softphone", "exp_in": -600}),
        ),
    ];
    for (what, o) in bad {
        let (status, _) = idp_logout(&idp, &s, o);
        assert_eq!(status, 400, "{what}");
    }
    reg_b.cseq += 2;
    assert_eq!(
        register_with(&mut cb, &reg_b, &bob, "SHA-256", None).status(),
        200,
        "bob untouched"
    );
    assert_eq!(s.bindings_of("bob").len(), 1);

    // A real logout for alice (RS256 this time): every device revoked, bindings gone.
    let (status, jti) = idp_logout(
        &idp,
        &s,
        json!({"sub": "alice", "sid": "s-1", "aud": "softphone", "alg": "RS256"}),
    );
    assert_eq!(status, 200);
    assert!(s.bindings_of("alice").is_empty());
    assert_eq!(
        s.metric("sipward_devices_revoked_total{by=\"logout\"}"),
        2.0
    );
    reg_a.cseq += 2;
    assert_eq!(
        register_with(&mut ca, &reg_a, &laptop, "SHA-256", None).status(),
        401
    );
    // The same jti again (a replay, even freshly signed): refused.
    let (status, _) = idp_logout(
        &idp,
        &s,
        json!({"sub": "bob", "aud": "softphone", "jti": jti}),
    );
    assert_eq!(status, 400, "replayed jti");
    reg_b.cseq += 2;
    assert_eq!(
        register_with(&mut cb, &reg_b, &bob, "SHA-256", None).status(),
        200,
        "bob untouched"
    );
    // sid only: accepted, nothing to revoke (no sessions are kept).
    let (status, _) = idp_logout(&idp, &s, json!({"sid": "s-2", "aud": "softphone"}));
    assert_eq!(status, 200);
    assert_eq!(s.bindings_of("bob").len(), 1);

    // Audit: one line per logout, refusals included, the right actor.
    let path = std::path::PathBuf::from(
        s.config
            .lines()
            .find_map(|l| l.strip_prefix("file = \""))
            .unwrap()
            .trim_end_matches('"'),
    );
    let lines = audit_lines(&path);
    let logouts: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "user.logout")
        .collect();
    assert_eq!(logouts.len(), 9, "{logouts:?}");
    assert_eq!(
        logouts.iter().filter(|l| l["outcome"] == "refused").count(),
        7
    );
    let ok: Vec<&&Value> = logouts
        .iter()
        .filter(|l| l["outcome"] == "success")
        .collect();
    assert_eq!(ok[0]["actor"], "backchannel:test-idp");
    assert!(ok[0]["target"]
        .as_str()
        .unwrap()
        .starts_with("user:test-idp:"));
    assert!(!ok[0]["target"].as_str().unwrap().contains("alice"));
}

#[test]
fn roles_from_groups_and_scim_groups_and_the_break_glass_token() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = scim_server_with(
        &idp,
        &Setup::default(),
        false,
        "\n[audit]\nfile = \"{dir}/audit.log\"\n\n[[roles]]\nissuer = \"test-idp\"\nclaim = \"groups\"\nadmin = [\"sipward-ops\"]\nauditor = [\"sipward-auditors\"]\n",
    );
    let with_groups = |user: &str, groups: &str| {
        idp.mint(
            user,
            &Mint {
                groups: Some(groups),
                ..Mint::default()
            },
        )
    };
    let _alice = s.credential(&idp.token_for("alice"), "laptop");
    let read = |token: &str| {
        let b = s.http("GET", "/admin/v1/bindings", Some(token), "").status;
        let a = s.http("GET", "/admin/v1/audit", Some(token), "").status;
        (b, a)
    };
    let revoke = |token: &str, user: &str| {
        s.http(
            "POST",
            &format!("/admin/v1/users/{user}@example.test/revoke"),
            Some(token),
            "",
        )
        .status
    };

    // A plain user: 403 on every admin endpoint.
    let user = idp.token_for("paul");
    assert_eq!(read(&user), (403, 403));
    assert_eq!(revoke(&user, "alice"), 403);
    // An auditor (groups claim) reads but cannot revoke.
    let auditor = with_groups("audrey", "staff,sipward-auditors");
    assert_eq!(read(&auditor), (200, 200));
    assert_eq!(revoke(&auditor, "alice"), 403);
    // An auditor by SCIM group membership only (no groups claim in the token).
    let erin = scim(
        &s,
        "POST",
        "/scim/v2/Users",
        Some(&json!({"schemas": [USER], "userName": "erin"})),
    );
    let erin_id = erin.json()["id"].as_str().unwrap().to_owned();
    let g = scim(
        &s,
        "POST",
        "/scim/v2/Groups",
        Some(
            &json!({"schemas": [GROUP], "displayName": "sipward-auditors", "members": [{"value": erin_id}]}),
        ),
    );
    assert_eq!(g.status, 201, "{}", g.body);
    let erin_token = idp.token_for("erin");
    assert_eq!(read(&erin_token), (200, 200));
    assert_eq!(revoke(&erin_token, "alice"), 403);
    // Removed from the SCIM group: back to user.
    let gid = g.json()["id"].as_str().unwrap().to_owned();
    let r = scim(
        &s,
        "PATCH",
        &format!("/scim/v2/Groups/{gid}"),
        Some(&json!({
            "schemas": [PATCH], "Operations": [{"op": "remove", "path": format!("members[value eq \"{erin_id}\"]")}]
        })),
    );
    assert_eq!(r.status, 200);
    assert_eq!(read(&erin_token), (403, 403));
    // An admin by group ([[roles]] admin) reads and revokes.
    let ops = with_groups("olga", "sipward-ops");
    assert_eq!(read(&ops), (200, 200));
    assert_eq!(revoke(&ops, "alice"), 200);
    // The break-glass token works everywhere, and each use is logged and counted.
    let before = s.metric("sipward_admin_break_glass_total");
    assert_eq!(read(ADMIN_TOKEN), (200, 200));
    assert_eq!(revoke(ADMIN_TOKEN, "bob"), 200);
    assert_eq!(s.metric("sipward_admin_break_glass_total"), before + 3.0);
    assert!(s.server.stderr().contains("break-glass"));

    let path = std::path::PathBuf::from(
        s.config
            .lines()
            .find_map(|l| l.strip_prefix("file = \""))
            .unwrap()
            .trim_end_matches('"'),
    );
    let lines = audit_lines(&path);
    let decisions: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "role.decision")
        .collect();
    // paul 3, audrey 3, erin 3 + 2, olga 3.
    assert_eq!(decisions.len(), 14, "{decisions:?}");
    let outcomes = |o: &str| decisions.iter().filter(|l| l["outcome"] == o).count();
    assert_eq!(
        (outcomes("user"), outcomes("auditor"), outcomes("admin")),
        (5, 6, 3)
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["action"] == "admin.break_glass")
            .count(),
        3
    );
    for l in &decisions {
        assert!(l["actor"].as_str().unwrap().starts_with("user:test-idp:"));
    }
}

#[test]
fn the_audit_file_is_reopened_on_sighup_for_logrotate() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = scim_server_with(
        &idp,
        &Setup::default(),
        true,
        "\n[audit]\nfile = \"{dir}/audit.log\"\n",
    );
    let path = std::path::PathBuf::from(
        s.config
            .lines()
            .find_map(|l| l.strip_prefix("file = \""))
            .unwrap()
            .trim_end_matches('"'),
    );
    let read_bindings = || {
        let (status, _) = s
            .server
            .http_get("/admin/v1/bindings", Some(ADMIN_TOKEN))
            .unwrap();
        assert_eq!(status, 200);
    };
    read_bindings();
    assert_eq!(audit_lines(&path).len(), 1);
    // logrotate: move the file away, then SIGHUP.
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &s.server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while !s.server.stderr().contains("SIGHUP: audit file reopened") {
        assert!(
            Instant::now() < deadline,
            "no reopen logged:\n{}",
            s.server.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    read_bindings();
    let new_lines = audit_lines(&path);
    assert_eq!(
        new_lines.len(),
        1,
        "the line after the reopen goes to the new file"
    );
    assert_eq!(new_lines[0]["action"], "admin.break_glass");
    assert_eq!(
        audit_lines(&rotated).len(),
        1,
        "the rotated file keeps its line"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn external_id_matching_deprovisions_the_subject_of_the_token() {
    let setup = Setup {
        token_api: "leeway_secs = 0",
        ..Setup::default()
    };
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = scim_server_matching(&idp, &setup, "external_id");
    assert!(s.config.contains("user_match = \"external_id\""));
    // The SCIM userName says nothing here: externalId is the token's sub ("alice").
    let r = scim(
        &s,
        "POST",
        "/scim/v2/Users",
        Some(&json!({
            "schemas": [USER], "userName": "Alice Example", "externalId": "alice", "active": true
        })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let token = idp.token_for("alice");
    let creds = [
        s.credential(&token, "laptop"),
        s.credential(&token, "phone"),
    ];
    let mut c = Client::new(Proto::Udp, s.server.udp);
    let mut reg = Register::new("alice");
    assert_eq!(
        register_with(&mut c, &reg, &creds[0], "SHA-256", None).status(),
        200
    );
    let off = json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    assert_eq!(
        scim(&s, "PATCH", &format!("/scim/v2/Users/{id}"), Some(&off)).status,
        200
    );
    assert!(s.bindings_of("alice").is_empty());
    assert_eq!(s.metric("sipward_devices_revoked_total{by=\"scim\"}"), 2.0);
    reg.cseq += 2;
    assert_eq!(
        register_with(&mut c, &reg, &creds[1], "SHA-256", None).status(),
        401
    );
    let at = now();
    while now() <= at {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        s.exchange(&idp.token_for("alice"), "laptop").status,
        403,
        "refused by subject"
    );
    // bob is another subject.
    assert_eq!(s.exchange(&idp.token_for("bob"), "desk").status, 201);
}

#[test]
fn backchannel_logout_with_revoke_off_is_checked_and_recorded_only() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = scim_server_with(
        &idp,
        &Setup::default(),
        false,
        "\n[[backchannel_logout]]\nissuer = \"test-idp\"\nclient_id = \"softphone\"\nrevoke_devices_on_logout = false\n",
    );
    let cred = s.credential(&idp.token_for("alice"), "laptop");
    let mut c = Client::new(Proto::Udp, s.server.udp);
    let mut reg = Register::new("alice");
    assert_eq!(
        register_with(&mut c, &reg, &cred, "SHA-256", None).status(),
        200
    );
    let (status, _) = idp_logout(&idp, &s, json!({"sub": "alice", "aud": "softphone"}));
    assert_eq!(status, 200);
    assert_eq!(s.bindings_of("alice").len(), 1, "nothing revoked");
    reg.cseq += 2;
    assert_eq!(
        register_with(&mut c, &reg, &cred, "SHA-256", None).status(),
        200
    );
    // Still validated: a wrong audience is refused.
    let (status, _) = idp_logout(&idp, &s, json!({"sub": "alice", "aud": "other"}));
    assert_eq!(status, 400);
}
