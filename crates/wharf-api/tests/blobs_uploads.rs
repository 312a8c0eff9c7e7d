//! The blob and upload endpoints over real HTTP, including every error path.

mod common;

use common::*;
use reqwest::Method;

#[tokio::test]
async fn base_endpoint_answers_with_api_version() {
    let s = Server::start().await;
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
}

#[tokio::test]
async fn monolithic_upload_then_get_and_head() {
    let s = Server::start().await;
    let d = s.push_blob("acme/app", b"hello blob").await;
    let r = s
        .req(Method::HEAD, &format!("/v2/acme/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), "10");
    assert_eq!(header(&r, "docker-content-digest"), d);
    let r = s
        .req(Method::GET, &format!("/v2/acme/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello blob");
}

#[tokio::test]
async fn post_then_put_with_body() {
    let s = Server::start().await;
    let r = s
        .req(Method::POST, "/v2/a/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-0");
    let loc = header(&r, "location");
    assert!(loc.starts_with("/v2/a/blobs/uploads/"), "{loc}");
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    let d = sha256(b"one shot");
    let r = s
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .body("one shot")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/a/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d);
    let r = s
        .req(Method::GET, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"one shot");
}

#[tokio::test]
async fn chunked_upload_with_status_and_out_of_order_chunk() {
    let s = Server::start().await;
    let r = s
        .req(Method::POST, "/v2/a/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = s
        .req(Method::PATCH, &loc)
        .header("content-range", "0-4")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-4");
    assert_eq!(header(&r, "location"), loc);

    // A chunk that does not start at the end: 416, nothing written.
    let r = s
        .req(Method::PATCH, &loc)
        .header("content-range", "9-10")
        .body("xx")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range"), "0-4");
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");

    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range"), "0-4");
    assert_eq!(header(&r, "location"), loc);

    // A chunk without Content-Range is appended at the end.
    let r = s
        .req(Method::PATCH, &loc)
        .body(" world")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-10");

    let d = sha256(b"hello world");
    let r = s
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .req(Method::GET, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello world");
    // The session is over.
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn content_range_length_must_match_body() {
    let s = Server::start().await;
    let loc = header(
        &s.req(Method::POST, "/v2/a/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    let r = s
        .req(Method::PATCH, &loc)
        .header("content-range", "0-9")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let s = Server::start().await;
    let wrong = sha256(b"something else");
    let r = s
        .req(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={wrong}"),
        )
        .body("actual bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    for d in [wrong, sha256(b"actual bytes")] {
        let r = s
            .req(Method::HEAD, &format!("/v2/a/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }

    // Same through a session: mismatch ends it.
    let loc = header(
        &s.req(Method::POST, "/v2/a/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    s.req(Method::PATCH, &loc).body("abc").send().await.unwrap();
    let r = s
        .req(Method::PUT, &format!("{loc}?digest={}", sha256(b"abd")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(s.req(Method::GET, &loc).send().await.unwrap().status(), 404);
    assert_eq!(
        s.req(Method::HEAD, &format!("/v2/a/blobs/{}", sha256(b"abc")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn bad_digests_are_refused() {
    let s = Server::start().await;
    let loc = header(
        &s.req(Method::POST, "/v2/a/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    for q in [
        "",
        "?digest=sha256:abc",
        "?digest=md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        let r = s
            .req(Method::PUT, &format!("{loc}{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(error_code(r).await, "DIGEST_INVALID");
    }
    // A lookup by something that is no digest asks for what cannot exist:
    // not found, as any missing blob (a body for GET and DELETE, none for
    // HEAD); the referrers API keeps its 400.
    for m in [Method::GET, Method::DELETE] {
        let r = s
            .req(m.clone(), "/v2/a/blobs/sha256:short")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{m}");
        assert_eq!(error_code(r).await, "BLOB_UNKNOWN", "{m}");
    }
    let r = s
        .req(Method::HEAD, "/v2/a/blobs/sha256:short")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .req(Method::GET, "/v2/a/referrers/sha256:short")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn cancel_ends_the_session() {
    let s = Server::start().await;
    let loc = header(
        &s.req(Method::POST, "/v2/a/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    s.req(Method::PATCH, &loc)
        .body("partial")
        .send()
        .await
        .unwrap();
    let r = s.req(Method::DELETE, &loc).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = s.req(Method::DELETE, &loc).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn upload_ids_belong_to_their_repository() {
    let s = Server::start().await;
    let loc = header(
        &s.req(Method::POST, "/v2/a/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    let id = loc.rsplit('/').next().unwrap();
    let r = s
        .req(Method::PATCH, &format!("/v2/b/blobs/uploads/{id}"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = s
        .req(Method::GET, "/v2/a/blobs/uploads/no-such-id")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn range_requests() {
    let s = Server::start().await;
    let d = s.push_blob("a", b"0123456789").await;
    let get = |range: &'static str| {
        s.req(Method::GET, &format!("/v2/a/blobs/{d}"))
            .header("range", range)
            .send()
    };
    let r = get("bytes=2-5").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 2-5/10");
    assert_eq!(header(&r, "content-length"), "4");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"2345");
    let r = get("bytes=7-").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"789");
    let r = get("bytes=-2").await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"89");
    let r = get("bytes=8-100").await.unwrap();
    assert_eq!(header(&r, "content-range"), "bytes 8-9/10");
    let r = get("bytes=10-").await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), "bytes */10");
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    // Unparseable ranges are ignored: the whole blob.
    let r = get("lines=1-2").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 10);
}

#[tokio::test]
async fn delete_blob_and_unknown_blob() {
    let s = Server::start().await;
    let d = s.push_blob("a", b"to delete").await;
    let r = s
        .req(Method::DELETE, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = s
        .req(Method::GET, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = s
        .req(Method::HEAD, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .req(Method::DELETE, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn blobs_are_per_repository() {
    let s = Server::start().await;
    let d = s.push_blob("a", b"only in a").await;
    let r = s
        .req(Method::HEAD, &format!("/v2/b/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn cross_repository_mount() {
    let s = Server::start().await;
    let d = s.push_blob("src/repo", b"mount me").await;
    let r = s
        .req(
            Method::POST,
            &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/dst/repo/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d);
    let r = s
        .req(Method::GET, &format!("/v2/dst/repo/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"mount me");

    // Not mountable (source lacks it, or no source given): a normal upload.
    let other = sha256(b"nowhere");
    for q in [
        format!("?mount={other}&from=src/repo"),
        format!("?mount={d}"),
    ] {
        let r = s
            .req(Method::POST, &format!("/v2/third/blobs/uploads/{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{q}");
        assert!(header(&r, "location").starts_with("/v2/third/blobs/uploads/"));
    }
}

#[tokio::test]
async fn sha512_blobs() {
    use sha2::Digest as _;
    let s = Server::start().await;
    let body = b"a sha512 blob";
    let d = format!("sha512:{}", hex::encode(sha2::Sha512::digest(body)));
    let r = s
        .req(Method::POST, &format!("/v2/a/blobs/uploads/?digest={d}"))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .req(Method::GET, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.unwrap().as_ref(), body);
}

#[tokio::test]
async fn upload_session_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path()).await;
    let loc = header(
        &s.req(Method::POST, "/v2/a/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    s.req(Method::PATCH, &loc)
        .body("first half, ")
        .send()
        .await
        .unwrap();
    s.stop().await;

    let s = Server::start_in(dir.path()).await;
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range"), "0-11");
    let r = s
        .req(Method::PATCH, &loc)
        .header("content-range", "12-22")
        .body("second half")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let d = sha256(b"first half, second half");
    let r = s
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    s.stop().await;
}

#[tokio::test]
async fn names_are_checked() {
    let s = Server::start().await;
    for path in [
        "/v2/UPPER/tags/list",
        "/v2/a/../b/tags/list",
        "/v2/a%2fb/tags/list",
        "/v2/a/%2e%2e/b/tags/list",
        "/v2/-a/blobs/uploads/",
    ] {
        let (status, body) = s.raw_get(path).await;
        assert_eq!(status, 400, "{path}");
        assert!(body.contains("\"NAME_INVALID\""), "{path}: {body}");
    }
    let long = format!("/v2/{}/tags/list", "a".repeat(256));
    let r = s.req(Method::GET, &long).send().await.unwrap();
    assert_eq!(error_code(r).await, "NAME_INVALID");
}

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let s = Server::start().await;
    let r = s.req(Method::GET, "/v2/a/whatever/x").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    let r = s.req(Method::POST, "/v2/a/tags/list").send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    let r = s.req(Method::GET, "/").send().await.unwrap();
    assert_eq!(r.status(), 404);
}
