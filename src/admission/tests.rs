use serde_json::{Value, json};

use super::*;
use crate::policy::Mode;
use crate::store::Index;

fn review(body: &[u8]) -> (Reviewed, Value) {
    let r = review_body(
        Webhook::Validate,
        body,
        &Index::default(),
        &Settings::new(Mode::Enforce),
        "t",
    );
    let json: Value = serde_json::from_slice(&r.to_json()).expect("response is JSON");
    (r, json)
}

fn wrap(request: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request
    }))
    .expect("json")
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "shop"},
           "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1"}]}}}})
}

fn request(op: &str, object: Option<Value>) -> Value {
    let mut r = json!({
        "uid": "u-1",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": "web", "namespace": "shop", "operation": op,
        "userInfo": {"username": "alice"},
        "oldObject": deployment("web"),
    });
    if let Some(o) = object {
        r["object"] = o;
    }
    r
}

#[test]
fn rfc3339_known_instants() {
    let at = |s: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
    assert_eq!(at(0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(at(1_795_687_200), "2026-11-26T10:00:00Z");
    assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59Z");
    assert_eq!(at(u64::MAX / 4), "9999-12-31T23:59:59Z");
    let micros = |s: u64, us: u64| {
        let mut out = String::new();
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(s)
            + std::time::Duration::from_micros(us);
        crate::text::write_rfc3339_micros(&mut out, t).expect("writes");
        out
    };
    assert_eq!(micros(0, 7), "1970-01-01T00:00:00.000007Z");
    assert_eq!(
        micros(1_795_687_259, 999_999),
        "2026-11-26T10:00:59.999999Z"
    );
}

#[test]
fn unreadable_bodies_get_a_reasoned_invalid_review() {
    let cases: [(&[u8], &str, &str); 5] = [
        (b"", "truncated", ""),
        (b"{not json CANARY", "syntax", ""),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "no request",
            "",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":"x","password":"CANARY"}}"#,
            "shape",
            "u-1",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-2","operation":"CANARY"}}"#,
            "request.",
            "u-2",
        ),
    ];
    for (body, want, uid) in cases {
        let (r, rsp) = review(body);
        assert!(matches!(r.outcome, Outcome::Invalid(_)), "{:?}", r.outcome);
        let rsp = &rsp["response"];
        assert_eq!(rsp["allowed"], false);
        assert_eq!(rsp["uid"], uid, "the uid is salvaged from the one parse");
        assert_eq!(rsp["status"]["code"], 400);
        let msg = rsp["status"]["message"].as_str().expect("message");
        assert!(msg.contains(want), "{msg}");
        assert!(!rsp.to_string().contains("CANARY"));
    }
}

/// Issue: reviews that are not AdmissionReview v1 were judged as if they were.
#[test]
fn only_admission_v1_reviews_are_judged() {
    let good = request("UPDATE", Some(deployment("web")));
    let cases = [
        (
            "v2",
            json!({"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview", "request": good}),
        ),
        (
            "v1beta1",
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": good}),
        ),
        (
            "ConfigMap",
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "ConfigMap", "request": good}),
        ),
        ("no apiVersion/kind", json!({"request": good})),
        (
            "apiVersion a number",
            json!({"apiVersion": 1, "kind": "AdmissionReview", "request": good}),
        ),
        (
            "escape in kind",
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "\u{1b}[31mX", "request": good}),
        ),
    ];
    for (name, body) in cases {
        let (r, rsp) = review(&serde_json::to_vec(&body).expect("json"));
        assert!(
            matches!(r.outcome, Outcome::Invalid(ReviewError::NotV1 { .. })),
            "{name}"
        );
        assert_eq!(rsp["response"]["status"]["code"], 400, "{name}");
        assert_eq!(rsp["response"]["uid"], "u-1", "{name}");
        assert_eq!(rsp["apiVersion"], API_VERSION);
        assert!(!rsp.to_string().contains('\u{1b}'), "{name}");
    }
    let mut no_uid = request("UPDATE", Some(deployment("web")));
    no_uid["uid"] = json!("");
    let (r, rsp) = review(&wrap(no_uid));
    assert!(matches!(r.outcome, Outcome::Invalid(ReviewError::NoUid)));
    assert_eq!(rsp["response"]["status"]["code"], 400);
    let (r, _) = review(&wrap(request("UPDATE", Some(deployment("web")))));
    assert!(matches!(r.outcome, Outcome::Judged(_)), "{:?}", r.outcome);
}

/// Issue: an UPDATE without a usable object was allowed silently.
#[test]
fn workload_writes_without_a_usable_object_say_what_was_not_checked() {
    let mut pod = deployment("web");
    pod["kind"] = json!("Pod");
    let cases = [
        ("no object", request("UPDATE", None), "carries no object"),
        (
            "null object",
            request("UPDATE", Some(Value::Null)),
            "carries no object",
        ),
        (
            "create without object",
            request("CREATE", None),
            "carries no object",
        ),
        (
            "kind mismatch",
            request("UPDATE", Some(pod)),
            "is not a Deployment",
        ),
        (
            "spec unreadable",
            request(
                "UPDATE",
                Some(json!({"kind": "Deployment", "spec": "CANARY"})),
            ),
            "not a valid Deployment spec",
        ),
    ];
    for (name, req, want) in cases {
        let (r, rsp) = review(&wrap(req));
        assert!(
            matches!(r.outcome, Outcome::NotChecked(NotChecked::Unreadable(_))),
            "{name}: {:?}",
            r.outcome
        );
        assert_eq!(r.outcome.label(), "not-checked");
        let rsp = &rsp["response"];
        assert_eq!(rsp["allowed"], true, "{name}");
        let w = rsp["warnings"][0].as_str().expect("a warning");
        assert!(w.contains("not checked") && w.contains(want), "{name}: {w}");
        assert!(!rsp.to_string().contains("CANARY"));
    }
    // DELETE carries no object: nothing to check, nothing to say.
    let (r, rsp) = review(&wrap(request("DELETE", None)));
    assert!(r.outcome.allowed());
    assert!(rsp["response"].get("warnings").is_none());
}

#[test]
fn kinds_not_judged_are_allowed_and_not_checked() {
    let mut req = request(
        "UPDATE",
        Some(json!({"kind": "Service", "metadata": {"name": "web"}})),
    );
    req["kind"] = json!({"group": "", "version": "v1", "kind": "Service"});
    let (r, rsp) = review(&wrap(req));
    assert!(matches!(
        r.outcome,
        Outcome::NotChecked(NotChecked::NotGuarded)
    ));
    assert_eq!(rsp["response"]["allowed"], true);
    assert_eq!(r.outcome.label(), "not-checked");
}

#[test]
fn the_event_reference_comes_from_the_one_parse() {
    let body = wrap(
        json!({"uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "namespace": "web", "name": "", "operation": "UPDATE",
        "object": {"metadata": {"name": "api", "uid": "1234"}},
        "oldObject": {"metadata": {"name": "api", "uid": "1234"}}}),
    );
    let m = prepare(&body, &Settings::new(Mode::Audit)).meta;
    assert_eq!(m.api_version, "apps/v1");
    assert_eq!(m.object_uid.as_deref(), Some("1234"));
    assert_eq!(m.name, "api", "the object's name when the request has none");
}

/// The typed pass reads exactly what the careful reading reads, or leaves the body to it.
#[test]
fn the_typed_pass_agrees_with_the_careful_reading() {
    use crate::demo::fixtures::Edit;
    let mut bases = vec![
        wrap(request("UPDATE", Some(deployment("web")))),
        wrap(request("CREATE", Some(deployment("web")))),
        wrap(request("DELETE", None)),
    ];
    let edit = Edit::kubectl_set_image(
        crate::workload::WorkloadKind::StatefulSet,
        "shop",
        "web",
        "web",
        &[("app", "nginx:1"), ("sidecar", "envoy:1.30")],
        &[("app", "nginx:2"), ("sidecar", "envoy:1.30")],
    );
    for e in [
        edit.clone(),
        edit.clone().by_helm(),
        edit.with_break_glass("CANARY reason"),
    ] {
        bases.push(serde_json::to_vec(&e.review("u-2")).expect("json"));
    }
    type Mutation<'a> = (&'a str, &'a dyn Fn(&mut Value));
    let mutations: Vec<Mutation<'_>> = vec![
        ("as is", &|_| {}),
        ("name null", &|r| r["request"]["name"] = Value::Null),
        ("name number", &|r| r["request"]["name"] = json!(5)),
        ("uid number", &|r| r["request"]["uid"] = json!(5)),
        ("uid empty", &|r| r["request"]["uid"] = json!("")),
        ("no kind", &|r| r["request"]["kind"] = Value::Null),
        ("kind Secret", &|r| {
            r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Secret"})
        }),
        ("kind Service", &|r| {
            r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Service"})
        }),
        ("operation unknown", &|r| {
            r["request"]["operation"] = json!("PATCH")
        }),
        ("dryRun string", &|r| r["request"]["dryRun"] = json!("yes")),
        ("dryRun true", &|r| r["request"]["dryRun"] = json!(true)),
        ("userInfo list", &|r| {
            r["request"]["userInfo"] = json!(["alice"])
        }),
        ("options fieldManager", &|r| {
            r["request"]["options"] = json!({"fieldManager": "helm"})
        }),
        ("options number", &|r| {
            r["request"]["options"] = json!({"fieldManager": 5})
        }),
        ("subResource scale", &|r| {
            r["request"]["subResource"] = json!("scale")
        }),
        ("object null", &|r| r["request"]["object"] = Value::Null),
        ("object list", &|r| {
            r["request"]["object"] = json!(["Deployment", {}, {}])
        }),
        ("object string", &|r| {
            r["request"]["object"] = json!("CANARY")
        }),
        ("object empty", &|r| r["request"]["object"] = json!({})),
        ("object of another kind", &|r| {
            r["request"]["object"]["kind"] = json!("Pod")
        }),
        ("image number", &|r| {
            if let Some(c) = r.pointer_mut("/request/object/spec/template/spec/containers/0") {
                c["image"] = json!(5);
            }
        }),
        ("annotations with a number", &|r| {
            r["request"]["object"]["metadata"]["annotations"] = json!({"a": 1});
        }),
        ("labels as list", &|r| {
            r["request"]["object"]["metadata"]["labels"] = json!(["x"])
        }),
        ("managedFields object", &|r| {
            r["request"]["object"]["metadata"]["managedFields"] = json!({"manager": "x"});
        }),
        ("oldObject null", &|r| {
            r["request"]["oldObject"] = Value::Null
        }),
        ("api version v1beta1", &|r| {
            r["apiVersion"] = json!("admission.k8s.io/v1beta1")
        }),
        ("no request", &|r| r["request"] = Value::Null),
    ];
    let settings = Settings::new(Mode::Enforce);
    let (mut typed, mut total) = (0, 0);
    for base in &bases {
        let base: Value = serde_json::from_slice(base).expect("json");
        for (name, mutate) in &mutations {
            let mut r = base.clone();
            mutate(&mut r);
            let body = serde_json::to_vec(&r).expect("json");
            // The same body with text-level twists the typed pass must leave alone.
            let text = String::from_utf8(body.clone()).expect("utf-8");
            let twisted = [
                body.clone(),
                text.replacen("\"request\":{", "\"request\":{\"uid\":\"dup\",", 1)
                    .into_bytes(),
                text.replacen("admission.k8s.io/v1", "admission.k8s.io\\/v1", 1)
                    .into_bytes(),
                text.replacen("\"nginx:", "\"ngin\\u0078:", 1).into_bytes(),
                text.replacen("\"apps/v1\"", "\"apps/\u{fffd}\"", 1)
                    .replace('\u{fffd}', "\u{0}")
                    .into_bytes()
                    .into_iter()
                    .map(|b| if b == 0 { 0xff } else { b })
                    .collect(),
            ];
            for (k, body) in twisted.iter().enumerate() {
                total += 1;
                let agree = readings_agree(body, &settings);
                if *name == "as is" && k == 0 {
                    assert_eq!(
                        agree,
                        Some(true),
                        "a well-formed review takes the typed pass"
                    );
                }
                match agree {
                    Some(true) => typed += 1,
                    Some(false) => panic!("{name} (twist {k}): the readings differ"),
                    None => {}
                }
            }
        }
    }
    assert!(typed > 0 && typed < total, "typed {typed} of {total}");
}

#[test]
fn release_records_and_unusual_bodies_are_left_to_the_careful_reading() {
    let settings = Settings::new(Mode::Enforce);
    // A workload review: the one-pass reading takes it, and prepares what `prepare` does.
    let body = wrap(request("UPDATE", Some(deployment("web"))));
    let typed = prepare_typed(&body, &settings).expect("typed");
    assert_eq!(
        format!("{typed:?}"),
        format!("{:?}", prepare(&body, &settings))
    );
    // A Secret (a release record's decode grows with the release inside, so the server sends
    // it to the blocking pool), a ConfigMap and a malformed body: not taken.
    let mut secret = request(
        "CREATE",
        Some(json!({"kind": "Secret", "metadata": {"name": "x"}})),
    );
    secret["kind"] = json!({"group": "", "version": "v1", "kind": "Secret"});
    let mut config_map = secret.clone();
    config_map["kind"]["kind"] = json!("ConfigMap");
    for body in [wrap(secret), wrap(config_map), b"{\"request\": 5}".to_vec()] {
        assert!(
            prepare_typed(&body, &settings).is_none(),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}
