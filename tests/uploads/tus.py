#!/usr/bin/env python3
"""Command-line tus 1.0 upload driver built on the real tuspy client (tusclient).

LexiFlow's integration tests spawn it; see README.md in this folder for the CLI contract.

stdout: exactly one JSON line at the end
  {"url": ..., "offset": N, "completed": bool, "resumed": bool}   exit 0
  {"error": "...", "status": <HTTP status or null>}               exit 1 (upload failed),
                                                                  exit 2 (bad arguments),
                                                                  exit 4 (--resume found nothing)
stderr: diagnostics only.
"""
import argparse
import json
import os
import sys

from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError
from tusclient.fingerprint.fingerprint import Fingerprint
from tusclient.storage.filestorage import FileStorage


def emit(obj, code):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    sys.exit(code)


def fail(message, status=None, code=1):
    emit({"error": str(message), "status": status}, code)


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def metadata_pair(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expects key=value, got %r" % text)
    return key, value


def non_negative(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0: %r" % text)
    return n


def positive(text):
    n = non_negative(text)
    if n == 0:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def parse_args(argv):
    p = Parser(prog="tus.py", add_help=False)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--token")
    p.add_argument("--file", required=True)
    p.add_argument("--chunk-size", type=positive, default=5000000)
    p.add_argument("--metadata", type=metadata_pair, action="append", default=[])
    p.add_argument("--store")
    p.add_argument("--abort-after", type=non_negative)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checksum")
    args = p.parse_args(argv)
    if args.resume and not args.store:
        raise UsageError("--resume needs --store")
    if args.checksum is not None and args.checksum.lower() != "sha1":
        raise UsageError("--checksum: tuspy only implements sha1, got %r" % args.checksum)
    return args


def log(msg):
    sys.stderr.write("tus.py: %s\n" % msg)
    sys.stderr.flush()


def main(argv):
    try:
        args = parse_args(argv)
    except UsageError as e:
        fail(str(e), None, 2)
    if not os.path.isfile(args.file):
        fail("cannot read --file: %s" % args.file, None, 2)
    size = os.path.getsize(args.file)

    headers = {"Authorization": "Bearer %s" % args.token} if args.token is not None else {}
    client = tus_client.TusClient(args.endpoint, headers=headers)

    storage = None
    key = None
    resumed = False
    if args.store:
        storage = FileStorage(args.store)
        with open(args.file, "rb") as fs:
            key = Fingerprint().get_fingerprint(fs)
        stored = storage.get_item(key)
        if args.resume:
            if not stored:
                fail("no previous upload of %s in %s" % (args.file, args.store), None, 4)
            log("resuming %s" % stored)
            resumed = True
        elif stored:
            # A fresh upload was asked for: forget the stored URL, otherwise tuspy's
            # uploader would silently resume it.
            storage.remove_item(key)

    uploader = None
    try:
        # With store_url=True the constructor looks the fingerprint up in the storage and,
        # if a URL is stored, sends HEAD to learn the offset (this is tuspy's resume).
        uploader = client.uploader(
            file_path=args.file,
            chunk_size=args.chunk_size,
            metadata=dict(args.metadata),
            retries=0,  # no automatic retries: the tests must see errors as they happen
            store_url=storage is not None,
            url_storage=storage,
            upload_checksum=args.checksum is not None,
        )
        if resumed:
            log("server offset %d of %d" % (uploader.offset, size))
        # This is Uploader.upload(stop_at=...) spelled out with tuspy's public upload_chunk(),
        # plus a guard: tuspy loops forever if a 2xx PATCH does not move the offset forward.
        stop_at = size if args.abort_after is None else min(args.abort_after, size)
        uploader.stop_at = stop_at  # upload_chunk() sends min(chunk_size, stop_at - offset)
        if not uploader.url:
            # POST even for a 0-byte file (the creation is the whole upload then).
            uploader.set_url(uploader.create_url())
            uploader.offset = 0
            log("created %s" % uploader.url)
        while uploader.offset < stop_at:
            before = uploader.offset
            uploader.upload_chunk()
            log("PATCH at %d -> %d" % (before, uploader.offset))
            if uploader.offset <= before:
                fail(
                    "server acknowledged PATCH at offset %d with Upload-Offset %d (no progress)"
                    % (before, uploader.offset),
                    uploader.request.status_code,
                    1,
                )
    except TusCommunicationError as e:
        status = e.status_code
        msg = str(e)
        if e.response_content:
            body = e.response_content
            if isinstance(body, bytes):
                body = body.decode("utf-8", "replace")
            msg = "%s: %s" % (msg, body[:500])
        fail(msg, status, 1)
    except Exception as e:  # e.g. a 2xx PATCH response without Upload-Offset
        status = None
        if uploader is not None and uploader.request is not None:
            status = uploader.request.status_code
        fail("%s: %s" % (type(e).__name__, e), status, 1)
    finally:
        if storage is not None:
            storage.close()

    emit(
        {
            "url": uploader.url,
            "offset": uploader.offset,
            "completed": uploader.offset == size,
            "resumed": resumed,
        },
        0,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
