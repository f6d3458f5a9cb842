#!/usr/bin/env python3
"""Lists the API tests that bring servers of their own, one name a line, for the passes of
scripts/test.sh that rerun the suite on other shared servers (to `--skip`):

    scripts/private-tests.py nats    tests that start a NATS of their own (PrivateNats): on
                                     Debian's 2.9 pass they would run as in the first pass
    scripts/private-tests.py both    tests that start a Redis and a NATS of their own: on the
                                     cluster pass they would run as in the first pass

Read from the test sources (tests/api/*.rs), so a new test is placed by what it starts.
"""
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRIVATE_REDIS = re.compile(r"LosableRedis::start|private_redis\(")
PRIVATE_NATS = re.compile(r"PrivateNats::start")
TEST = re.compile(r"#\[(?:tokio::)?test[^\]]*\]\s*\n\s*(?:async )?fn (\w+)")


def tests():
    """(module::name, body) of every test in tests/api."""
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "api", "*.rs"))):
        module = os.path.basename(path)[:-3]
        text = open(path).read()
        found = list(TEST.finditer(text))
        for i, match in enumerate(found):
            end = found[i + 1].start() if i + 1 < len(found) else len(text)
            # The body ends at the first closing brace in the first column.
            body = text[match.end():end].split("\n}\n")[0]
            yield f"{module}::{match.group(1)}", body


def main():
    kind = sys.argv[1] if len(sys.argv) > 1 else ""
    if kind not in ("nats", "both"):
        sys.exit(__doc__)
    for name, body in tests():
        nats = bool(PRIVATE_NATS.search(body))
        redis = bool(PRIVATE_REDIS.search(body))
        if nats and (kind == "nats" or redis):
            print(name)


if __name__ == "__main__":
    main()
