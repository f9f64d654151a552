use serde_json::json;

use super::*;

fn user(d: &mut Directory, name: &str, ext: &str) -> (String, Vec<Transition>) {
    let c = d
        .create(
            Kind::User,
            &json!({"schemas": [USER_SCHEMA], "userName": name, "externalId": ext, "active": true, "password": "p4ss"}),
            100,
        )
        .unwrap();
    let r = c.resource.unwrap();
    assert!(r.get("password").is_none(), "a password is never kept");
    (r["id"].as_str().unwrap().to_owned(), c.transitions)
}

fn subject(name: &str, ext: &str) -> Subject {
    Subject {
        user_name: name.into(),
        external_id: Some(ext.into()),
    }
}

#[test]
fn deactivate_reactivate_and_delete_give_the_right_transitions() {
    let mut d = Directory::new(10, 10);
    let (id, t) = user(&mut d, "alice@example.test", "e1");
    assert_eq!(
        t,
        vec![Transition::Reactivate(subject("alice@example.test", "e1"))]
    );
    let off = json!({"Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    let c = d.patch(Kind::User, &id, &off, 101).unwrap();
    assert_eq!(c.resource.unwrap()["active"], false);
    assert_eq!(
        c.transitions,
        vec![Transition::Deprovision(subject("alice@example.test", "e1"))]
    );
    // Again: no new transition.
    assert!(d
        .patch(Kind::User, &id, &off, 102)
        .unwrap()
        .transitions
        .is_empty());
    let on = json!({"Operations": [{"op": "replace", "value": {"active": true}}]});
    let c = d.patch(Kind::User, &id, &on, 103).unwrap();
    assert_eq!(
        c.transitions,
        vec![Transition::Reactivate(subject("alice@example.test", "e1"))]
    );
    let c = d.delete(Kind::User, &id).unwrap();
    assert_eq!(
        c.transitions,
        vec![Transition::Deprovision(subject("alice@example.test", "e1"))]
    );
    assert_eq!(d.delete(Kind::User, &id).unwrap_err().status, 404);
}

#[test]
fn user_names_are_unique_case_insensitively_and_filters_find_them() {
    let mut d = Directory::new(2, 10);
    let (id, _) = user(&mut d, "Bob@example.test", "e2");
    let e = d
        .create(Kind::User, &json!({"userName": "bob@EXAMPLE.test"}), 1)
        .unwrap_err();
    assert_eq!((e.status, e.scim_type), (409, Some("uniqueness")));
    let l = d
        .list(
            Kind::User,
            Some(r#"userName eq "bob@example.test""#),
            1,
            None,
            &[],
        )
        .unwrap();
    assert_eq!(l["totalResults"], 1);
    assert_eq!(l["Resources"][0]["id"], id.as_str());
    let l = d
        .list(Kind::User, Some(r#"userName eq "nobody""#), 1, None, &[])
        .unwrap();
    assert_eq!(l["totalResults"], 0);
    let e = d
        .list(Kind::User, Some("userName sw \"b\""), 1, None, &[])
        .unwrap_err();
    assert_eq!(e.scim_type, Some("invalidFilter"));
    user(&mut d, "carol@example.test", "e3");
    let e = d
        .create(Kind::User, &json!({"userName": "dave"}), 1)
        .unwrap_err();
    assert_eq!(e.status, 400, "max_users");
}

#[test]
fn groups_hold_known_members_and_a_deleted_user_leaves_them() {
    let mut d = Directory::new(10, 10);
    let (id, _) = user(&mut d, "alice@example.test", "e1");
    let g = d
        .create(
            Kind::Group,
            &json!({"displayName": "sipward-admins", "members": [{"value": id}]}),
            1,
        )
        .unwrap()
        .resource
        .unwrap();
    assert_eq!(d.groups_of("ALICE@example.test"), vec!["sipward-admins"]);
    let gid = g["id"].as_str().unwrap();
    let e = d
        .patch(Kind::Group, gid, &json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": "nope"}]}]}), 2)
        .unwrap_err();
    assert_eq!(e.scim_type, Some("invalidValue"));
    assert_eq!(
        d.get(Kind::User, &id, &[]).unwrap()["groups"][0]["display"],
        "sipward-admins"
    );
    d.delete(Kind::User, &id).unwrap();
    assert!(d.get(Kind::Group, gid, &[]).unwrap()["members"]
        .as_array()
        .unwrap()
        .is_empty());
}
