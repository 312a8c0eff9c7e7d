//! Manifests, tags, referrers and the catalog over real HTTP.

mod common;

use common::*;
use reqwest::Method;

#[tokio::test]
async fn put_then_get_by_tag_and_digest_returns_exact_bytes() {
    let s = Server::start().await;
    let (body, d) = s.push_image("acme/app", "v1", "exact").await;
    for reference in ["v1", d.as_str()] {
        let r = s
            .req(Method::GET, &format!("/v2/acme/app/manifests/{reference}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(r.text().await.unwrap(), body);
        let r = s
            .req(Method::HEAD, &format!("/v2/acme/app/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-length"), body.len().to_string());
        assert_eq!(header(&r, "docker-content-digest"), d);
    }
}

#[tokio::test]
async fn put_response_headers() {
    let s = Server::start().await;
    let cd = s.push_blob("a", b"{}").await;
    let ld = s.push_blob("a", b"l").await;
    let body = image_manifest(&cd, 2, &ld, 1, "");
    let r = s.put_manifest("a", "latest", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 201);
    let d = sha256(body.as_bytes());
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "location"), format!("/v2/a/manifests/{d}"));
    assert!(r.headers().get("oci-subject").is_none());
}

#[tokio::test]
async fn put_by_digest_must_match() {
    let s = Server::start().await;
    let cd = s.push_blob("a", b"{}").await;
    let ld = s.push_blob("a", b"l").await;
    let body = image_manifest(&cd, 2, &ld, 1, "");
    let d = sha256(body.as_bytes());
    let r = s.put_manifest("a", &d, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 201);
    let wrong = sha256(b"other");
    let r = s.put_manifest("a", &wrong, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn missing_blobs_and_children_are_refused() {
    let s = Server::start().await;
    let cd = s.push_blob("a", b"{}").await;
    let missing = sha256(b"never pushed");
    let body = image_manifest(&cd, 2, &missing, 12, "");
    let r = s.put_manifest("a", "x", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");

    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{missing}","size":5}}]}}"#
    );
    let r = s.put_manifest("a", "idx", OCI_INDEX, &index).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = s
        .req(Method::GET, "/v2/a/manifests/idx")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn malformed_and_oversized_manifests_are_refused() {
    let s = Server::start().await;
    for (ct, body) in [
        (OCI_MANIFEST, "{not json"),
        (
            OCI_MANIFEST,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
        ),
        (OCI_MANIFEST, r#"{"schemaVersion":1}"#),
        (
            "text/plain",
            r#"{"schemaVersion":2,"mediaType":"text/plain"}"#,
        ),
    ] {
        let r = s.put_manifest("a", "bad", ct, body).await;
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(error_code(r).await, "MANIFEST_INVALID", "{body}");
    }
    let big = format!(
        "{{\"schemaVersion\":2,\"pad\":\"{}\"}}",
        "x".repeat(4 * 1024 * 1024)
    );
    let r = s.put_manifest("a", "big", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let r = s.put_manifest("a", "-bad-tag", OCI_MANIFEST, "{}").await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn unknown_manifests() {
    let s = Server::start().await;
    let r = s
        .req(Method::GET, "/v2/a/manifests/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = s
        .req(Method::HEAD, &format!("/v2/a/manifests/{}", sha256(b"x")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn index_and_docker_formats() {
    let s = Server::start().await;
    let (amd, amd_d) = s.push_image("multi", "amd64", "amd").await;
    let (arm, arm_d) = s.push_image("multi", "arm64", "arm").await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{amd_d}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{arm_d}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        amd.len(),
        arm.len()
    );
    let r = s.put_manifest("multi", "latest", OCI_INDEX, &index).await;
    assert_eq!(r.status(), 201);
    let r = s
        .req(Method::GET, "/v2/multi/manifests/latest")
        .header("accept", OCI_INDEX)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(r.text().await.unwrap(), index);
    // A client that only takes Docker manifests is not handed an OCI index.
    let r = s
        .req(Method::GET, "/v2/multi/manifests/latest")
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    // Docker schema 2 and manifest list.
    let cd = s.push_blob("dock", b"{\"c\":1}").await;
    let ld = s.push_blob("dock", b"layer").await;
    let dm = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{cd}","size":7}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{ld}","size":5}}]}}"#
    );
    assert_eq!(
        s.put_manifest("dock", "v1", DOCKER_MANIFEST, &dm)
            .await
            .status(),
        201
    );
    let dmd = sha256(dm.as_bytes());
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{dmd}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        dm.len()
    );
    assert_eq!(
        s.put_manifest("dock", "list", DOCKER_LIST, &list)
            .await
            .status(),
        201
    );
    let r = s
        .req(Method::GET, "/v2/dock/manifests/list")
        .header("accept", format!("{DOCKER_MANIFEST}, {DOCKER_LIST}"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), DOCKER_LIST);
    assert_eq!(r.text().await.unwrap(), list);
}

#[tokio::test]
async fn tags_list_with_pagination() {
    let s = Server::start().await;
    for tag in ["c", "a", "b", "d"] {
        s.push_image("t", tag, "same").await;
    }
    let r = s.req(Method::GET, "/v2/t/tags/list").send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["name"], "t");
    assert_eq!(v["tags"], serde_json::json!(["a", "b", "c", "d"]));

    let r = s
        .req(Method::GET, "/v2/t/tags/list?n=2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "link"),
        "</v2/t/tags/list?n=2&last=b>; rel=\"next\""
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    let r = s
        .req(Method::GET, "/v2/t/tags/list?n=2&last=b")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("link").is_none());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["c", "d"]));
    let r = s
        .req(Method::GET, "/v2/t/tags/list?n=0")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));

    let r = s
        .req(Method::GET, "/v2/never/pushed/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    let r = s
        .req(Method::GET, "/v2/t/tags/list?n=many")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn catalog_with_pagination() {
    let s = Server::start().await;
    for repo in ["zeta", "alpha/one", "alpha/two", "beta"] {
        s.push_blob(repo, repo.as_bytes()).await;
    }
    let r = s.req(Method::GET, "/v2/_catalog").send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["alpha/one", "alpha/two", "beta", "zeta"])
    );
    let r = s.req(Method::GET, "/v2/_catalog?n=3").send().await.unwrap();
    assert_eq!(
        header(&r, "link"),
        "</v2/_catalog?n=3&last=beta>; rel=\"next\""
    );
    let r = s
        .req(Method::GET, "/v2/_catalog?n=3&last=beta")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["zeta"]));
}

#[tokio::test]
async fn delete_tag_and_manifest() {
    let s = Server::start().await;
    let (_, d) = s.push_image("del", "one", "x").await;
    let r = s
        .put_manifest(
            "del",
            "two",
            OCI_MANIFEST,
            &s.req(Method::GET, "/v2/del/manifests/one")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), 201);

    // Deleting a tag keeps the manifest and the other tag.
    let r = s
        .req(Method::DELETE, "/v2/del/manifests/one")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        s.req(Method::GET, "/v2/del/manifests/one")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        s.req(Method::GET, "/v2/del/manifests/two")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        s.req(Method::GET, &format!("/v2/del/manifests/{d}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Deleting by digest removes the manifest and every tag on it.
    let r = s
        .req(Method::DELETE, &format!("/v2/del/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        s.req(Method::GET, &format!("/v2/del/manifests/{d}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        s.req(Method::GET, "/v2/del/manifests/two")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let v: serde_json::Value = s
        .req(Method::GET, "/v2/del/tags/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));
    let r = s
        .req(Method::DELETE, &format!("/v2/del/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn referrers_and_subject() {
    let s = Server::start().await;
    let (subject_body, subject) = s.push_image("r", "v1", "subject").await;
    let empty = s.push_blob("r", b"{}").await;
    let push_artifact = |artifact_type: &'static str, payload: &'static str| {
        let s = &s;
        let subject = subject.clone();
        let empty = empty.clone();
        let subject_len = subject_body.len();
        async move {
            let ld = s.push_blob("r", payload.as_bytes()).await;
            let body = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact_type}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{ld}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{subject_len}}},"annotations":{{"kind":"{artifact_type}"}}}}"#,
                payload.len()
            );
            let d = sha256(body.as_bytes());
            let r = s.put_manifest("r", &d, OCI_MANIFEST, &body).await;
            assert_eq!(r.status(), 201);
            assert_eq!(header(&r, "oci-subject"), subject);
            d
        }
    };
    let sig = push_artifact("application/vnd.example.sig", "signature").await;
    let sbom = push_artifact("application/vnd.example.sbom", "sbom").await;

    let r = s
        .req(Method::GET, &format!("/v2/r/referrers/{subject}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let listed: Vec<&str> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    let mut expected = vec![sig.as_str(), sbom.as_str()];
    expected.sort();
    assert_eq!(listed, expected);
    let sig_entry = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["digest"] == sig.as_str())
        .unwrap();
    assert_eq!(sig_entry["artifactType"], "application/vnd.example.sig");
    assert_eq!(sig_entry["mediaType"], OCI_MANIFEST);
    assert_eq!(
        sig_entry["annotations"]["kind"],
        "application/vnd.example.sig"
    );

    let r = s
        .req(
            Method::GET,
            &format!("/v2/r/referrers/{subject}?artifactType=application/vnd.example.sbom"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sbom.as_str());

    // Deleting a referrer removes it from the list.
    s.req(Method::DELETE, &format!("/v2/r/manifests/{sig}"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = s
        .req(Method::GET, &format!("/v2/r/referrers/{subject}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);

    // An unknown subject has no referrers; it is not a 404.
    let r = s
        .req(
            Method::GET,
            &format!("/v2/r/referrers/{}", sha256(b"nothing")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
}

/// What the OCI conformance suite asks: a manifest looked up by a
/// reference that is neither a tag nor a digest cannot exist, so it is not
/// found; putting one under such a reference is still a bad request.
#[tokio::test]
async fn a_lookup_by_an_impossible_reference_is_manifest_unknown() {
    let s = Server::start().await;
    let path = "/v2/acme/app/manifests/.INVALID_MANIFEST_NAME";
    for method in [Method::GET, Method::DELETE] {
        let r = s.req(method.clone(), path).send().await.unwrap();
        assert_eq!(r.status(), 404, "{method}");
        assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN", "{method}");
    }
    let r = s.req(Method::HEAD, path).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .req(Method::PUT, path)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
