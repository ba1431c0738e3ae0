#!/usr/bin/python3
"""sshd's AuthorizedKeysCommand in the tests and the sandbox: plays EC2 Instance Connect's part.

Usage: authorized_keys_command.py MOTO_URL INSTANCE_ID WINDOW_SECONDS OS_USER

Prints the public keys that moto's recording shows pushed with SendSSHPublicKey for this
instance and this OS user, whose request (X-Amz-Date) is at most WINDOW_SECONDS old: on EC2 a
pushed key works for 60 seconds. Prints nothing (and exits 0) when moto does not answer. One
line per key, as sshd reads authorized_keys; a key line with anything unusual is skipped.
"""

import base64
import datetime
import json
import sys
import urllib.request


def pushed_keys(recording, instance_id, os_user, window, now):
    for line in recording.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        headers = {k.lower(): v for k, v in (record.get("headers") or {}).items()}
        if not headers.get("x-amz-target", "").endswith(".SendSSHPublicKey"):
            continue
        body = record.get("body") or ""
        if record.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        try:
            params = json.loads(body)
            sent = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
        except (ValueError, KeyError):
            continue
        sent = sent.replace(tzinfo=datetime.timezone.utc)
        age = (now - sent).total_seconds()
        if params.get("InstanceId") != instance_id or params.get("InstanceOSUser") != os_user:
            continue
        if age > window or age < -5:
            continue
        key = str(params.get("SSHPublicKey", "")).strip()
        if key and "\n" not in key and "\r" not in key and key.split(" ")[0] in (
            "ssh-ed25519",
            "ssh-rsa",
        ):
            yield key


def main():
    if len(sys.argv) != 5:
        sys.stderr.write("usage: authorized_keys_command.py MOTO_URL INSTANCE_ID WINDOW OS_USER\n")
        return 2
    moto, instance_id, window, os_user = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    url = moto.rstrip("/") + "/moto-api/recorder/download-recording"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            recording = answer.read().decode("utf-8", "replace")
    except OSError as e:
        sys.stderr.write(f"cannot read moto's recording: {e}\n")
        return 0
    now = datetime.datetime.now(datetime.timezone.utc)
    for key in pushed_keys(recording, instance_id, os_user, window, now):
        print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
