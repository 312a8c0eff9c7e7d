#!/usr/bin/env python3
"""ORAS steps of Wharf's end-to-end tests (tests/e2e/clients.sh), written
with the ORAS Python SDK (PyPI `oras`, oras.provider.Registry), run by the
interpreter of the virtual environment scripts/install-deps.sh makes.

    oras_client.py (--plain-http | --ca FILE) --registry HOST:PORT STEP ...

Steps (each prints one JSON object on stdout):

  push --repo R --tag T --subject REF --file F --media-type MT
       --artifact-type AT --mode sdk|manifest
      Pushes F as an artifact whose `subject` is the manifest REF (a tag or
      digest in R). `sdk`: the SDK's own Registry.push(), which takes a
      subject but has no artifactType parameter, so the artifact's type is
      its config's media type (image-spec 1.1: the referrers API then
      reports config.mediaType). `manifest`: the SDK's lower-level
      upload_blob() and upload_manifest(), with the empty config and an
      explicit `artifactType`, as OCI 1.1 artifacts are written.
  referrers --repo R --digest D [--artifact-type AT]
      GET /v2/R/referrers/D[?artifactType=AT] through the SDK's session
      (the SDK has no referrers call of its own).
  pull --repo R --digest D --out DIR
      Registry.pull() of R@D into DIR; prints the files written.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import urllib.parse

import oras.defaults
import oras.oci
import oras.provider

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
CREATED = "2024-01-01T00:00:00Z"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def registry(args) -> oras.provider.Registry:
    tls = True
    if args.ca:
        tls = args.ca
    r = oras.provider.Registry(hostname=args.registry, insecure=args.plain_http, tls_verify=tls)
    # Loopback only: no proxy from the environment.
    r.session.trust_env = False
    return r


def check(response, what):
    if response.status_code not in (200, 201, 202):
        sys.exit(f"{what}: HTTP {response.status_code}: {response.text[:300]}")


def subject_of(reg, args):
    """The subject descriptor of REF, from the manifest's bytes as served."""
    url = f"{reg.prefix}://{args.registry}/v2/{args.repo}/manifests/{args.subject}"
    r = reg.do_request(url, "GET", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    check(r, f"GET subject {args.subject}")
    media_type = r.headers.get("Content-Type", OCI_MANIFEST).split(";")[0]
    return oras.oci.Subject(mediaType=media_type, digest=sha256(r.content), size=len(r.content))


def push(reg, args):
    subject = subject_of(reg, args)
    target = f"{args.registry}/{args.repo}:{args.tag}"
    annotations = {"org.opencontainers.image.created": CREATED}
    with tempfile.TemporaryDirectory() as tmp:
        if args.mode == "sdk":
            config = os.path.join(tmp, "config.json")
            with open(config, "wb") as f:
                f.write(b"{}")
            response = reg.push(
                target=target,
                files=[f"{args.file}:{args.media_type}"],
                manifest_config=f"{config}:{args.artifact_type}",
                manifest_annotations=annotations,
                subject=subject,
                disable_path_validation=True,
                quiet=True,
            )
            sent = None
        else:
            container = reg.get_container(target)
            layer = oras.oci.NewLayer(args.file, media_type=args.media_type)
            layer["annotations"] = {oras.defaults.annotation_title: os.path.basename(args.file)}
            check(reg.upload_blob(args.file, container, layer), "upload layer")
            empty = os.path.join(tmp, "empty.json")
            with open(empty, "wb") as f:
                f.write(b"{}")
            config = {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2}
            check(reg.upload_blob(empty, container, config), "upload empty config")
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": args.artifact_type,
                "config": config,
                "layers": [layer],
                "subject": {"mediaType": subject.mediaType, "digest": subject.digest, "size": subject.size},
                "annotations": annotations,
            }
            response = reg.upload_manifest(manifest, container)
            # requests sends json= as json.dumps() does: these bytes.
            sent = json.dumps(manifest).encode()
    check(response, "PUT manifest")
    digest = response.headers.get("Docker-Content-Digest")
    out = {
        "digest": digest,
        "oci_subject": response.headers.get("OCI-Subject"),
        "subject": {"mediaType": subject.mediaType, "digest": subject.digest, "size": subject.size},
        "status": response.status_code,
    }
    if sent is not None:
        out["sent_digest"] = sha256(sent)
        out["sent_size"] = len(sent)
    print(json.dumps(out))


def referrers(reg, args):
    url = f"{reg.prefix}://{args.registry}/v2/{args.repo}/referrers/{args.digest}"
    if args.artifact_type:
        url += "?artifactType=" + urllib.parse.quote(args.artifact_type, safe="")
    r = reg.do_request(url, "GET", headers={"Accept": OCI_INDEX})
    check(r, "GET referrers")
    print(
        json.dumps(
            {
                "status": r.status_code,
                "content_type": r.headers.get("Content-Type"),
                "filters_applied": r.headers.get("OCI-Filters-Applied"),
                "index": r.json(),
            }
        )
    )


def pull(reg, args):
    files = reg.pull(
        target=f"{args.registry}/{args.repo}@{args.digest}",
        outdir=args.out,
        allowed_media_type=[OCI_MANIFEST],
    )
    print(json.dumps({"files": files}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--plain-http", action="store_true")
    how.add_argument("--ca", help="CA file to verify the registry's certificate with")
    p.add_argument("--registry", required=True)
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("push")
    s.add_argument("--repo", required=True)
    s.add_argument("--tag", required=True)
    s.add_argument("--subject", required=True)
    s.add_argument("--file", required=True)
    s.add_argument("--media-type", required=True)
    s.add_argument("--artifact-type", required=True)
    s.add_argument("--mode", choices=["sdk", "manifest"], required=True)
    s = sub.add_parser("referrers")
    s.add_argument("--repo", required=True)
    s.add_argument("--digest", required=True)
    s.add_argument("--artifact-type")
    s = sub.add_parser("pull")
    s.add_argument("--repo", required=True)
    s.add_argument("--digest", required=True)
    s.add_argument("--out", required=True)
    args = p.parse_args()
    reg = registry(args)
    {"push": push, "referrers": referrers, "pull": pull}[args.step](reg, args)


if __name__ == "__main__":
    main()
